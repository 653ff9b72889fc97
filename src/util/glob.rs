//! fnmatch(3)-style glob matching without flags, over bytes: `*` (any run,
//! `/` included), `?` (one byte), `[...]` (ranges, `!`/`^` negation, a `]`
//! first is a member; an unclosed `[` is literal) and `\` escapes. One
//! matcher serves modules.alias, networkd/NetworkManager interface
//! patterns and `rewind find`.

/// Whether `text` matches `pattern` as a whole.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: pattern after it, text position.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if let Some(step) = match_one(&pattern[p..], text[t]) {
            p += step;
            t += 1;
            continue;
        }
        if pattern.get(p) == Some(&b'*') {
            p += 1;
            star = Some((p, t));
            continue;
        }
        match star {
            // Let the last `*` take one more byte and retry from there.
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// [`matches`] for text patterns and names.
pub fn matches_str(pattern: &str, text: &str) -> bool {
    matches(pattern.as_bytes(), text.as_bytes())
}

/// If the pattern's first element (not `*`) matches byte `c`, how many
/// pattern bytes it spans.
fn match_one(pattern: &[u8], c: u8) -> Option<usize> {
    match *pattern.first()? {
        b'*' => None,
        b'?' => Some(1),
        b'\\' if pattern.len() > 1 => (pattern[1] == c).then_some(2),
        b'[' => match class(&pattern[1..]) {
            Some((members, negated, len)) => (contains(members, c) != negated).then_some(len + 1),
            None => (c == b'[').then_some(1),
        },
        b => (b == c).then_some(1),
    }
}

/// The bracket expression after a `[`: its members, whether it is negated,
/// and its length up to and including the `]`. `None` when unclosed.
fn class(p: &[u8]) -> Option<(&[u8], bool, usize)> {
    let negated = matches!(p.first(), Some(b'!' | b'^'));
    let body = &p[usize::from(negated)..];
    // A ']' right after the opening bracket is a member, not the end.
    let close = body.iter().skip(1).position(|&c| c == b']')? + 1;
    Some((&body[..close], negated, usize::from(negated) + close + 1))
}

/// Whether `c` is one of `members` (single bytes and `a-z` ranges).
fn contains(members: &[u8], c: u8) -> bool {
    let mut i = 0;
    while i < members.len() {
        if i + 2 < members.len() && members[i + 1] == b'-' {
            if members[i] <= c && c <= members[i + 2] {
                return true;
            }
            i += 3;
        } else {
            if members[i] == c {
                return true;
            }
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        matches_str(p, t)
    }

    #[test]
    fn stars_and_questions() {
        assert!(m("*", ""));
        assert!(m("*.conf", "/etc/a.conf"));
        assert!(m("/etc/*", "/etc/ssh/sshd_config"), "* crosses /");
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("pci:v00008086d*sv*", "pci:v00008086d00001234sv0000"));
        assert!(m("**x", "abx"));
    }

    /// What `rewind find` relied on (from the catalog's tests).
    #[test]
    fn find_patterns() {
        assert!(matches(b"*.conf", b"resolv.conf"));
        assert!(matches(b"/etc/*", b"/etc/ssh/sshd_config"));
        assert!(matches(b"h?sts", b"hosts"));
        assert!(!matches(b"*.conf", b"resolv.conf.bak"));
        assert!(matches(b"*", b""));
    }

    /// What interface matching relied on (from probe::net's tests).
    #[test]
    fn interface_patterns() {
        assert!(m("en*", "enp0s3"));
        assert!(m("eth?", "eth0") && !m("eth?", "eth10"));
        assert!(m("eth[0-2]", "eth1") && !m("eth[0-2]", "eth3"));
        assert!(m("eth[!0]", "eth1") && !m("eth[!0]", "eth0"));
        assert!(m("*", "") && m("a\\*", "a*") && !m("a\\*", "ab"));
        assert!(m("x[", "x["));
    }

    /// What module loading relied on (from kmod's tests).
    #[test]
    fn modules_alias_patterns() {
        assert!(matches(
            b"pci:v00001AF4d00001000sv*sd*bc*sc*i*",
            b"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
        ));
        assert!(!matches(
            b"pci:v00001AF4d00001001sv*",
            b"pci:v00001AF4d00001000sv00001AF4"
        ));
        assert!(matches(b"virtio:d00000001v*", b"virtio:d00000001v00001AF4"));
        assert!(matches(b"a?c", b"abc"));
        assert!(!matches(b"a?c", b"ac"));
        assert!(matches(b"*", b""));
        assert!(matches(b"x[0-9]y", b"x5y"));
        assert!(!matches(b"x[!0-9]y", b"x5y"));
        assert!(matches(b"x[^a]y", b"xby"));
        assert!(matches(
            b"usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*",
            b"usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"
        ));
        assert!(matches(b"acpi*:PNP0A08:*", b"acpi:PNP0A08:PNP0A03:"));
        assert!(matches(b"a*b*c", b"aXXbYYbZc"));
        assert!(!matches(b"a*b*c", b"aXXbYYbZ"));
        assert!(matches(b"[]]", b"]"));
    }

    #[test]
    fn classes() {
        assert!(m("eth[0-9]", "eth3"));
        assert!(!m("eth[0-9]", "ethx"));
        assert!(m("eth[!0-9]", "ethx"));
        assert!(m("eth[^0-9]", "ethx"));
        assert!(m("[]a]", "]"));
        assert!(m("en[ops]*", "enp1s0"));
        assert!(!m("en[ops]*", "enx1"));
        assert!(m("a[b", "a[b"), "an unclosed [ is literal");
        assert!(!m("x[ab]", "x"));
    }

    #[test]
    fn escapes() {
        assert!(m(r"a\*", "a*"));
        assert!(!m(r"a\*", "ab"));
        assert!(m(r"\[x]", "[x]"));
    }

    #[test]
    fn backtracking_is_linear_enough() {
        let text = "a".repeat(2000);
        assert!(!m("*a*a*a*a*a*b", &text));
    }
}
