//! Disks named by id in /etc/fstab and /etc/crypttab. A `/dev/disk/by-id/`
//! name holds the old disk's model and serial, which the new disk does not
//! have; UUID=, LABEL= and PARTUUID= names survive the restore (it recreates
//! them) and are left alone.

use std::path::Path;

use anyhow::Result;

use super::files::Workspace;
use super::text::split_eol;

const BY_ID: &str = "/dev/disk/by-id/";

/// Rewrite the device field of each line naming an old disk (or one of its
/// `-partN` partitions) by id: the first field in fstab, the second in
/// crypttab.
pub(super) fn rewrite(ws: &mut Workspace, disk_ids: &[(String, String)]) -> Result<()> {
    if disk_ids.is_empty() {
        return Ok(());
    }
    for (file, field) in [("/etc/fstab", 0), ("/etc/crypttab", 1)] {
        let path = Path::new(file);
        let Some(text) = ws.text(path)? else {
            continue;
        };
        let mut out = String::with_capacity(text.len());
        let mut whats = Vec::new();
        for line in text.split_inclusive('\n') {
            match rewrite_line(line, field, disk_ids) {
                Some((new, old_dev, new_dev)) => {
                    whats.push(format!("{old_dev} -> {new_dev}"));
                    out.push_str(&new);
                }
                None => out.push_str(line),
            }
        }
        if out != text {
            ws.set(path, out, whats);
        }
    }
    Ok(())
}

/// The line with field number `field` renamed, and the old and new device.
fn rewrite_line(
    line: &str,
    field: usize,
    disk_ids: &[(String, String)],
) -> Option<(String, String, String)> {
    let (body, _) = split_eol(line);
    if body.trim_start().starts_with('#') {
        return None;
    }
    // Byte range of the wanted whitespace-separated field.
    let mut start = None;
    let mut n = 0;
    let mut in_word = false;
    let mut range = None;
    for (i, c) in body.char_indices() {
        match (c.is_whitespace(), in_word) {
            (false, false) => {
                in_word = true;
                start = Some(i);
            }
            (true, true) => {
                in_word = false;
                if n == field {
                    range = Some(start?..i);
                    break;
                }
                n += 1;
            }
            _ => {}
        }
    }
    if range.is_none() && in_word && n == field {
        range = Some(start?..body.len());
    }
    let range = range?;
    let dev = &body[range.clone()];
    let id = dev.strip_prefix(BY_ID)?;
    let new_id = disk_ids.iter().find_map(|(old, new)| {
        if id == old {
            return Some(new.clone());
        }
        let part = id.strip_prefix(old.as_str())?.strip_prefix("-part")?;
        (!part.is_empty() && part.bytes().all(|c| c.is_ascii_digit()))
            .then(|| format!("{new}-part{part}"))
    })?;
    let new_dev = format!("{BY_ID}{new_id}");
    if new_dev == dev {
        return None;
    }
    let new = format!("{}{}{}", &line[..range.start], new_dev, &line[range.end..]);
    Some((new, dev.to_string(), new_dev))
}
