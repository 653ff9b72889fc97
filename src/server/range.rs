//! The `Range` header of a download: `bytes=START-END` (END inclusive,
//! optional). Numbers come from the network: parsed, never trusted.

/// `bytes=START-END` of a file of `size` bytes; END past the end of the
/// file is clipped, as RFC 9110 says (clients read aligned windows of
/// packs). `None`: not satisfiable (416).
pub fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let last = size.checked_sub(1)?;
    let end: u64 = if b.trim().is_empty() {
        last
    } else {
        b.trim().parse::<u64>().ok()?.min(last)
    };
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges() {
        use super::parse_range;
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=90-100", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=100-200", 100), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
        assert_eq!(parse_range("bytes=5-4", 100), None);
        assert_eq!(parse_range("lines=1-2", 100), None);
    }
}
