//! Line-level text helpers shared by the rewriters: every edit replaces a
//! token inside one line, so the rest of a file stays byte for byte.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// A line without its end (`\n`, `\r\n` or nothing), and the end.
pub(super) fn split_eol(line: &str) -> (&str, &str) {
    let body = line.trim_end_matches(['\n', '\r']);
    (body, &line[body.len()..])
}

/// `line` with the byte range `r` replaced by `new`.
pub(super) fn splice(line: &str, r: std::ops::Range<usize>, new: &str) -> String {
    format!("{}{}{}", &line[..r.start], new, &line[r.end..])
}

fn is_mac_at(b: &[u8], i: usize) -> bool {
    if i + 17 > b.len() {
        return false;
    }
    let sep = b[i + 2];
    if sep != b':' && sep != b'-' {
        return false;
    }
    (0..6).all(|k| b[i + 3 * k].is_ascii_hexdigit() && b[i + 3 * k + 1].is_ascii_hexdigit())
        && (0..5).all(|k| b[i + 3 * k + 2] == sep)
}

/// Every MAC address (`aa:bb:cc:dd:ee:ff` or with dashes, any case) in
/// `text` that `map` has a new value for (keys lowercase colon form), with
/// the new one written in the old one's case and separator. Returns the new
/// text and each `(old, new)` replaced, and the (lowercase) MACs seen.
pub(super) fn replace_macs(
    text: &str,
    map: &BTreeMap<String, String>,
) -> (String, Vec<(String, String)>, Vec<String>) {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut done = Vec::new();
    let mut seen = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b':' || c == b'-';
    while i < b.len() {
        if (i == 0 || !word(b[i - 1])) && is_mac_at(b, i) && (i + 17 == b.len() || !word(b[i + 17]))
        {
            let token = &text[i..i + 17];
            let key = token.to_ascii_lowercase().replace('-', ":");
            if let Some(new) = map.get(&key) {
                let mut new = new.replace(':', &token[2..3]);
                if token.bytes().any(|c| c.is_ascii_uppercase()) {
                    new = new.to_ascii_uppercase();
                }
                out.push_str(&text[copied..i]);
                out.push_str(&new);
                copied = i + 17;
                done.push((key.clone(), map[&key].clone()));
            }
            seen.push(key);
            i += 17;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    (out, done, seen)
}

/// Every IP address in `text`, with its `/prefix` when it has one, passed to
/// `f`; where `f` gives a replacement, it replaces the address and prefix.
/// `None` when nothing was replaced.
pub(super) fn replace_ips(
    text: &str,
    mut f: impl FnMut(IpAddr, Option<u8>) -> Option<String>,
) -> Option<String> {
    let b = text.as_bytes();
    let ipc = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'.';
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    let mut any = false;
    while i < b.len() {
        if !ipc(b[i]) || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < b.len() && ipc(b[end]) {
            end += 1;
        }
        // A netplan key (`- 2001:db8::1:`) ends in the mapping's colon.
        let mut ip_end = end;
        let mut ip = text[i..ip_end].parse::<IpAddr>().ok();
        if ip.is_none() && text[i..end].ends_with(':') {
            ip_end = end - 1;
            ip = text[i..ip_end].parse().ok();
        }
        let word_after = end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_');
        let Some(ip) = ip.filter(|_| !word_after) else {
            i = end;
            continue;
        };
        let mut tok_end = ip_end;
        let mut prefix = None;
        if ip_end == end && b.get(end) == Some(&b'/') {
            let digits = text[end + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len() - end - 1);
            if digits > 0 {
                prefix = text[end + 1..end + 1 + digits].parse().ok();
                tok_end = end + 1 + digits;
            }
        }
        if let Some(new) = f(ip, prefix) {
            out.push_str(&text[copied..i]);
            out.push_str(&new);
            copied = tok_end;
            any = true;
        }
        i = tok_end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    any.then_some(out)
}

/// Whether `ip` is in the network `net/prefix`.
pub(super) fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// A YAML line's shape, enough to follow netplan's block structure.
pub(super) struct YamlLine<'a> {
    /// Column of the key (after any `- `).
    pub(super) col: usize,
    /// Whether the line starts a sequence item.
    pub(super) item: bool,
    pub(super) key: Option<&'a str>,
    /// Byte range of the value after `key:` (or of the scalar of a `- x` item).
    pub(super) value: std::ops::Range<usize>,
}

/// Parse one netplan line; `None` for blank and comment lines.
pub(super) fn yaml_line(line: &str) -> Option<YamlLine<'_>> {
    let (body, _) = split_eol(line);
    let body = strip_yaml_comment(body).trim_end();
    let indent = body.len() - body.trim_start().len();
    let mut rest = &body[indent..];
    if rest.trim().is_empty() {
        return None;
    }
    let mut col = indent;
    let mut item = false;
    if rest == "-" || rest.starts_with("- ") {
        item = true;
        let after = rest[1..].trim_start();
        col = body.len() - after.len();
        rest = after;
    }
    let end = body.trim_end().len();
    match key_colon(rest) {
        Some(k) => {
            let key = rest[..k].trim().trim_matches(|c| c == '"' || c == '\'');
            let vstart = col + k + 1;
            let lead = body[vstart..].len() - body[vstart..].trim_start().len();
            Some(YamlLine {
                col,
                item,
                key: Some(key),
                value: (vstart + lead).min(end)..end,
            })
        }
        None => Some(YamlLine {
            col,
            item,
            key: None,
            value: col.min(end)..end,
        }),
    }
}

/// Cut a `#` comment: at line start or after whitespace, outside quotes.
fn strip_yaml_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// The byte index of a mapping colon in `text` (followed by a space or the
/// end, outside quotes and brackets).
fn key_colon(text: &str) -> Option<usize> {
    if text.starts_with('[') || text.starts_with('{') {
        return None;
    }
    let b = text.as_bytes();
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, ':') if i + 1 == b.len() || b[i + 1] == b' ' => return Some(i),
            _ => {}
        }
    }
    None
}

/// For each line of a YAML text, the keys of the block mappings it sits in
/// (outermost first, its own key last), so that `network/ethernets/lan0/
/// match/macaddress` can be recognised without re-serialising anything.
/// Also the index of the line starting the sequence item each line is in.
pub(super) fn yaml_paths(lines: &[&str]) -> Vec<(Vec<String>, Option<usize>)> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    // (column of the `-`, line index) of open sequence items.
    let mut items: Vec<(usize, usize)> = Vec::new();
    let mut out = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        let Some(y) = yaml_line(line) else {
            out.push((
                stack.iter().map(|(_, k)| k.clone()).collect(),
                items.last().map(|i| i.1),
            ));
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let dash_col = if y.item { indent } else { y.col };
        while stack.last().is_some_and(|(c, _)| *c >= y.col) {
            stack.pop();
        }
        if y.item {
            // A `- ` at a column closes items at the same or deeper column and
            // keys deeper than it.
            while items.last().is_some_and(|(c, _)| *c >= dash_col) {
                items.pop();
            }
            while stack.last().is_some_and(|(c, _)| *c > dash_col) {
                stack.pop();
            }
            items.push((dash_col, n));
        } else {
            while items.last().is_some_and(|(c, _)| *c >= y.col) {
                items.pop();
            }
        }
        if let Some(k) = y.key {
            stack.push((y.col, k.to_string()));
        }
        out.push((
            stack.iter().map(|(_, k)| k.clone()).collect(),
            items.last().map(|i| i.1),
        ));
    }
    out
}
