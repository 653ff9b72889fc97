//! The recovery image's clock. A machine whose CMOS battery is dead boots
//! in 2000 or 2001: TLS verified against a CA (`--ca`) then fails
//! (certificate not yet valid), and the recreated filesystems and the
//! restored system get timestamps from that year. So, once the network is
//! up and before anything else talks to the server, the image sets its
//! clock from the server's answer (the `Date` header of `GET /v1/version`,
//! which every answer carries). Over a pinned connection this needs no
//! date check (the pin is the identity, dates are never looked at), so a
//! wrong clock cannot stop it; with `--ca` alone a clock years off fails
//! the handshake, and the console says to give a pin.
//!
//! After the restore, the hardware clock is written the way the restored
//! system keeps it: its `/etc/adjtime` says UTC or LOCAL (util-linux's
//! default is UTC when the file or the line is missing); local time is the
//! restored system's `/etc/localtime`, applied by busybox `hwclock` with
//! `TZ` pointing at that file.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};

use crate::console::say;
use crate::init::cmdline::Settings;

/// A difference under this is left alone (the server's answer is rounded
/// to the second and took a moment to arrive).
const TOLERANCE_SECS: i64 = 2;

/// Seconds since the epoch of an HTTP date (`Mon, 30 Nov 2026 15:14:41
/// GMT`, RFC 9110's IMF-fixdate, the only form servers send).
pub fn parse_http_date(text: &str) -> Option<i64> {
    let (_, rest) = text.trim().split_once(", ")?;
    let mut words = rest.split(' ');
    let day: u32 = words.next()?.parse().ok()?;
    let month = match words.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u32 = words.next()?.parse().ok()?;
    let time = words.next()?;
    if words.next()? != "GMT" || words.next().is_some() || time.len() != 8 {
        return None;
    }
    crate::time::parse_rfc3339(&format!("{year:04}-{month:02}-{day:02}T{time}Z"))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The server's time, from the `Date` header of its version answer (no
/// token needed), over the connection the recovery will use.
pub fn server_time(settings: &Settings, ca: Option<&Path>) -> Result<i64> {
    let server = settings
        .server
        .as_deref()
        .context("no rewind.server= on the kernel command line")?;
    let mut client = crate::client::Client::new(server, "", &settings.trust(ca))?;
    client.retry_for = settings.retry;
    let url = client.url("/v1/version");
    client.retrying("the server's time", |http| {
        let resp = http.get(&url).send()?;
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        date.as_deref().and_then(parse_http_date).ok_or_else(|| {
            crate::client::Failure::Fatal(anyhow!(
                "the server's answer has no usable Date header ({date:?})"
            ))
        })
    })
}

/// Set the system clock from the server when it is off; says what it did.
/// Never fails the recovery: without the server's time it goes on with
/// the clock it has, and says so.
pub fn set_from_server(settings: &Settings, ca: Option<&Path>) {
    if settings.server.is_none() {
        return;
    }
    let server = match server_time(settings, ca) {
        Ok(t) => t,
        Err(e) => {
            say(&format!(
                "warning: cannot read the time from the server, the clock stays at {}: {e:#}{}",
                crate::time::format_utc(now_secs()),
                if settings.pins.is_empty() && ca.is_some() {
                    " (with a CA alone the certificate's dates need a right clock: give rewind.pin=)"
                } else {
                    ""
                }
            ));
            return;
        }
    };
    let local = now_secs();
    if (server - local).abs() <= TOLERANCE_SECS {
        say(&format!(
            "clock: {} (the server agrees)",
            crate::time::format_utc(local)
        ));
        return;
    }
    match set_system_clock(server) {
        Ok(()) => say(&format!(
            "clock set from the server: {} -> {}",
            crate::time::format_utc(local),
            crate::time::format_utc(server)
        )),
        Err(e) => say(&format!("warning: cannot set the clock: {e:#}")),
    }
}

fn set_system_clock(secs: i64) -> Result<()> {
    use nix::time::{ClockId, clock_settime};
    clock_settime(
        ClockId::CLOCK_REALTIME,
        nix::sys::time::TimeSpec::new(secs, 0),
    )
    .context("clock_settime(CLOCK_REALTIME)")
}

/// How a system keeps its hardware clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcMode {
    Utc,
    Local,
}

/// The mode `/etc/adjtime` states (its third line), UTC when the file or
/// the line is missing, as util-linux's hwclock assumes.
pub fn rtc_mode(adjtime: Option<&str>) -> RtcMode {
    match adjtime.and_then(|t| t.lines().nth(2)).map(str::trim) {
        Some("LOCAL") => RtcMode::Local,
        _ => RtcMode::Utc,
    }
}

/// Write the hardware clock from the system clock the way the restored
/// system at `root` keeps it; says what it did. A machine without an RTC
/// (or without hwclock in the image) is told on the console, not failed.
pub fn write_hardware_clock(root: &Path) {
    match write_rtc(root) {
        Ok(text) => say(&text),
        Err(e) => say(&format!(
            "warning: the hardware clock was not written: {e:#}"
        )),
    }
}

fn write_rtc(root: &Path) -> Result<String> {
    let rtc = ["/dev/rtc0", "/dev/rtc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("no /dev/rtc0")?;
    let adjtime = crate::netconf::root::read_optional(root, Path::new("/etc/adjtime"))
        .ok()
        .flatten();
    let mode = rtc_mode(adjtime.as_deref());
    let mut cmd = std::process::Command::new("hwclock");
    cmd.args(["-w", "-f", rtc]);
    let what = match mode {
        RtcMode::Utc => {
            cmd.arg("-u").env("TZ", "UTC0");
            "UTC".to_string()
        }
        RtcMode::Local => {
            // The restored system's zone (a symlink into its zoneinfo,
            // followed inside the root), read by the image's libc.
            let resolved =
                crate::netconf::root::try_resolve_in_root(root, Path::new("/etc/localtime"))
                    .unwrap_or_else(|_| root.join("etc/localtime"));
            cmd.arg("-l").env("TZ", format!(":{}", resolved.display()));
            format!("local time ({})", resolved.display())
        }
    };
    let out = cmd
        .output()
        .with_context(|| format!("cannot run hwclock -w -f {rtc}"))?;
    if !out.status.success() {
        bail!(
            "hwclock -w -f {rtc}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // Read it back as the restored system will.
    let mut read = std::process::Command::new("hwclock");
    read.args(["-r", "-f", rtc]);
    match mode {
        RtcMode::Utc => read.arg("-u").env("TZ", "UTC0"),
        RtcMode::Local => read.arg("-l"),
    };
    let back = read
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Ok(format!(
        "hardware clock written in {what}, as the restored /etc/adjtime says: {back}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Mon, 30 Nov 2026 15:14:41 GMT"),
            crate::time::parse_rfc3339("2026-11-30T15:14:41Z")
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 CET"), None);
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(""), None);
    }

    #[test]
    fn adjtime_says_utc_or_local() {
        assert_eq!(rtc_mode(None), RtcMode::Utc);
        assert_eq!(rtc_mode(Some("0.0 0 0.0\n0\nLOCAL\n")), RtcMode::Local);
        assert_eq!(rtc_mode(Some("0.0 0 0.0\n0\nUTC\n")), RtcMode::Utc);
        assert_eq!(rtc_mode(Some("0.0 0 0.0\n")), RtcMode::Utc);
    }
}
