//! A new host name: /etc/hostname, and the old name's entries in /etc/hosts
//! (Debian's `127.0.1.1 host.example.org host`, static addresses).

use std::path::Path;

use anyhow::Result;

use super::files::Workspace;
use super::text::split_eol;

/// Rename the restored system from `captured` (the manifest's host name; the
/// restored /etc/hostname's, when it differs, is renamed too) to `new`.
pub(super) fn rename(ws: &mut Workspace, captured: &str, new: &str) -> Result<()> {
    let hostname = Path::new("/etc/hostname");
    let mut old_names = vec![captured.to_string()];
    match ws.text(hostname)? {
        Some(text) => {
            let current = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or("");
            if !current.is_empty() && !current.eq_ignore_ascii_case(captured) {
                old_names.push(current.to_string());
            }
            if current != new {
                ws.set(
                    hostname,
                    format!("{new}\n"),
                    vec![format!("host name {current} -> {new}")],
                );
            }
        }
        None if ws.exists(Path::new("/etc")) => ws.set(
            hostname,
            format!("{new}\n"),
            vec![format!("host name {new}")],
        ),
        None => ws.warn(hostname, "no /etc: host name not written".to_string()),
    }

    let hosts = Path::new("/etc/hosts");
    let Some(text) = ws.text(hosts)? else {
        return Ok(());
    };
    let mut out = String::with_capacity(text.len());
    let mut whats = Vec::new();
    for line in text.split_inclusive('\n') {
        match hosts_line(line, &old_names, new) {
            Some(l) => {
                whats.push(format!(
                    "{} -> {}",
                    split_eol(line).0.trim(),
                    split_eol(&l).0.trim()
                ));
                out.push_str(&l);
            }
            None => out.push_str(line),
        }
    }
    if out != text {
        ws.set(hosts, out, whats);
    }
    Ok(())
}

/// One /etc/hosts line with the old names replaced, keeping spacing and
/// comments; `None` when it has none of them. Only the names of an address
/// line are looked at, whole words, ignoring case: `web1` becomes the new
/// name, its short form `web1` (of `web1.example.org`) the new short form,
/// and `web1.example.org` keeps its domain when the new name has none.
fn hosts_line(line: &str, old_names: &[String], new: &str) -> Option<String> {
    let (body, eol) = split_eol(line);
    let content = body.split('#').next().unwrap_or("");
    let mut words = content.split_whitespace();
    words.next()?.parse::<std::net::IpAddr>().ok()?;
    let short = |n: &str| n.split('.').next().unwrap_or(n).to_string();
    let new_short = short(new);
    let replace = |word: &str| -> Option<String> {
        for old in old_names {
            let old_short = short(old);
            if word.eq_ignore_ascii_case(old) {
                return Some(new.to_string());
            }
            if word.eq_ignore_ascii_case(&old_short) {
                return Some(new_short.clone());
            }
            if let Some((first, domain)) = word.split_once('.')
                && first.eq_ignore_ascii_case(&old_short)
            {
                return Some(if new.contains('.') {
                    new.to_string()
                } else {
                    format!("{new}.{domain}")
                });
            }
        }
        None
    };
    // Rebuild the names part word by word, keeping the separators.
    let start = content.len() - content.trim_start().len();
    let addr_end = start + content[start..].find(char::is_whitespace)?;
    let mut out = body[..addr_end].to_string();
    let mut rest = &content[addr_end..];
    let mut any = false;
    while !rest.is_empty() {
        let ws_len = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..ws_len]);
        rest = &rest[ws_len..];
        let wlen = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..wlen];
        match replace(word) {
            Some(r) if r != word => {
                out.push_str(&r);
                any = true;
            }
            _ => out.push_str(word),
        }
        rest = &rest[wlen..];
    }
    out.push_str(&body[content.len()..]);
    out.push_str(eol);
    any.then_some(out)
}
