//! What the recovery image says on its console: one line at a time,
//! `rewind: ` first, flushed at once, so that PID 1, the recovery stages and
//! the boot loader stage interleave readably on a serial console.
//!
//! This module depends on nothing in the crate.

use std::io::Write;

/// A line on the console, `rewind: ` first, flushed at once (the recovery
/// stages and PID 1 speak the same way).
pub fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "rewind: {msg}");
    let _ = out.flush();
}

/// Seconds since boot, for the console.
pub fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse().ok()))
        .unwrap_or(0.0)
}
