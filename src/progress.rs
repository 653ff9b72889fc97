//! Progress of long work on stderr: bytes, rate and (when the total is
//! known) percentage and ETA. On a terminal the line is redrawn in place a
//! few times a second; otherwise (a serial console, a log) a line is printed
//! every few seconds, so that progress is visible wherever stderr goes.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::util::size::human_bytes;

pub struct Progress {
    label: String,
    total: Option<u64>,
    done: AtomicU64,
    items: AtomicU64,
    started: Instant,
    last: Mutex<Instant>,
    tty: bool,
    quiet: bool,
}

impl Progress {
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            label: label.into(),
            total,
            done: AtomicU64::new(0),
            items: AtomicU64::new(0),
            started: now,
            last: Mutex::new(now),
            tty: std::io::stderr().is_terminal(),
            quiet: false,
        }
    }

    /// A progress that prints nothing (library use, tests).
    pub fn quiet() -> Progress {
        Progress {
            quiet: true,
            ..Progress::new("", None)
        }
    }

    /// Count `bytes` more done, and one more item when `item`.
    pub fn add(&self, bytes: u64, item: bool) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        if item {
            self.items.fetch_add(1, Ordering::Relaxed);
        }
        let every = if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        };
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() >= every {
            *last = Instant::now();
            drop(last);
            self.print(false);
        }
    }

    pub fn bytes(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Print the final line.
    pub fn finish(&self) {
        self.print(true);
    }

    pub fn line(&self) -> String {
        let done = self.bytes();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let mut s = format!("{}: {}", self.label, human_bytes(done));
        if let Some(total) = self.total.filter(|&t| t > 0) {
            let pct = (done as f64 * 100.0 / total as f64).min(100.0);
            s.push_str(&format!(" of {} ({pct:.0}%)", human_bytes(total)));
            if rate > 0.0 && done < total {
                let eta = ((total - done) as f64 / rate) as u64;
                s.push_str(&format!(", ETA {}:{:02}", eta / 60, eta % 60));
            }
        }
        let items = self.items.load(Ordering::Relaxed);
        if items > 0 {
            s.push_str(&format!(", {items} files"));
        }
        s.push_str(&format!(", {}/s", human_bytes(rate as u64)));
        s
    }

    fn print(&self, last: bool) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(
                err,
                "\r\x1b[K{}{}",
                self.line(),
                if last { "\n" } else { "" }
            )
        } else {
            writeln!(err, "{}", self.line())
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_share_rate_and_eta() {
        let p = Progress {
            tty: false,
            ..Progress::new("restore /", Some(4 << 20))
        };
        p.add(1 << 20, true);
        let l = p.line();
        assert!(
            l.starts_with("restore /: 1.0 MiB of 4.0 MiB (25%), ETA "),
            "{l}"
        );
        assert!(l.contains("1 files") && l.ends_with("/s"), "{l}");
    }
}
