//! Operator commands for operations: `status --check` (a Nagios/Icinga
//! plugin), the hosts' health in `status`, `verify` (the server reads its
//! packs back now) and `audit` (the audit log); and `--json` output, whose
//! shapes are the API's bodies (docs/api.md: a stable interface).

use std::time::Duration;

use anyhow::{Context, Result};

use super::{Client, ServerArgs};
use crate::api::{HostHealth, Severity, human_age};

/// Monitoring plugin exit codes.
pub const OK: i32 = 0;
pub const WARNING: i32 = 1;
pub const CRITICAL: i32 = 2;
pub const UNKNOWN: i32 = 3;

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    println!("{text}");
    Ok(())
}

/// Every host's health (or one host's), judged with these limits.
pub fn hosts_health(
    client: &Client,
    host: Option<&str>,
    max_age: &str,
    critical_age: Option<&str>,
) -> Result<Vec<HostHealth>> {
    match host {
        Some(h) => Ok(vec![client.host_health(h, Some(max_age), critical_age)?]),
        None => client.health(Some(max_age), critical_age),
    }
}

/// `rewind status --check`: prints one line, returns the exit code. The
/// server is given 10 seconds: a check must answer within its timeout.
pub fn check(
    server: &ServerArgs,
    host: Option<&str>,
    max_age: &str,
    critical_age: Option<&str>,
) -> i32 {
    let health = server.client().and_then(|mut c| {
        c.retry_for = Duration::from_secs(10);
        hosts_health(&c, host, max_age, critical_age)
    });
    let (code, line) = match health {
        Ok(hosts) => check_line(&hosts),
        Err(e) => (
            UNKNOWN,
            format!("REWIND UNKNOWN - {}", one_line(&format!("{e:#}"))),
        ),
    };
    println!("{line}");
    code
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The plugin's line and exit code: `REWIND STATE - summary; details |
/// perfdata`, each host with a problem named with its worst problem.
pub fn check_line(hosts: &[HostHealth]) -> (i32, String) {
    if hosts.is_empty() {
        return (
            UNKNOWN,
            "REWIND UNKNOWN - the server has no hosts (nothing to check)".into(),
        );
    }
    let count = |s: Severity| hosts.iter().filter(|h| h.severity() == Some(s)).count();
    let (critical, warning) = (count(Severity::Critical), count(Severity::Warning));
    let (code, state) = match (critical, warning) {
        (0, 0) => (OK, "OK"),
        (0, _) => (WARNING, "WARNING"),
        _ => (CRITICAL, "CRITICAL"),
    };
    let mut troubled: Vec<&HostHealth> = hosts.iter().filter(|h| h.severity().is_some()).collect();
    troubled.sort_by_key(|h| std::cmp::Reverse(h.severity()));
    let details: Vec<String> = troubled
        .iter()
        .map(|h| {
            let mut worst: Vec<_> = h.problems.iter().collect();
            worst.sort_by_key(|p| std::cmp::Reverse(p.severity));
            let more = match worst.len() {
                1 => String::new(),
                n => format!(" (+{} more)", n - 1),
            };
            format!("{}: {}{more}", h.host, one_line(&worst[0].message))
        })
        .collect();
    let summary = match (critical, warning) {
        (0, 0) => {
            let oldest = hosts.iter().filter_map(|h| h.last_good_age_secs).max();
            format!(
                "{} hosts recoverable, last good captures at most {} old",
                hosts.len(),
                oldest.map_or("?".into(), human_age)
            )
        }
        (0, w) => format!("{w} of {} hosts need attention", hosts.len()),
        (c, _) => format!("{c} of {} hosts not recoverable", hosts.len()),
    };
    let mut line = format!("REWIND {state} - {summary}");
    if !details.is_empty() {
        line.push_str(": ");
        line.push_str(&details.join("; "));
    }
    line.push_str(&format!(
        " | hosts={} recoverable={} warning={warning} critical={critical}",
        hosts.len(),
        hosts.iter().filter(|h| h.recoverable).count()
    ));
    (code, line)
}

/// The hosts' health as a table, problems below each host.
pub fn print_health(hosts: &[HostHealth]) {
    if hosts.is_empty() {
        return;
    }
    println!(
        "{:<24} {:<12} {:<22} {:<8} PROBLEMS",
        "HOST", "RECOVERABLE", "LAST GOOD CAPTURE", "AGE"
    );
    for h in hosts {
        println!(
            "{:<24} {:<12} {:<22} {:<8} {}",
            h.host,
            if h.recoverable { "yes" } else { "NO" },
            h.last_good.as_deref().unwrap_or("-"),
            h.last_good_age_secs.map_or("-".into(), human_age),
            h.problems.len()
        );
        for p in &h.problems {
            let tag = match p.severity {
                Severity::Critical => "CRITICAL",
                Severity::Warning => "WARNING",
            };
            println!("    {tag}: {}", p.message);
        }
    }
    println!();
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    rewind verify --server URL --token ADMIN              every host\n  \
    rewind verify --server URL --token ADMIN --host web1")]
pub struct VerifyArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Print JSON: the list `POST /v1/verify` answers (docs/api.md).
    #[arg(long)]
    pub json: bool,
}

/// `rewind verify`: the server reads every pack back now; fails when
/// damage is found.
pub fn verify_command(args: VerifyArgs) -> Result<()> {
    let mut client = args.server.client()?;
    // Reading every pack takes as long as it takes.
    client.retry_for = client.retry_for.max(Duration::from_secs(300));
    let results = client.verify(args.host.as_deref())?;
    if args.json {
        print_json(&results)?;
    } else {
        for r in &results {
            match &r.error {
                Some(e) => println!("{}: verification failed: {e}", r.host),
                None => println!(
                    "{}: {} packs, {} chunks, {} snapshots verified, {} damaged",
                    r.host,
                    r.packs,
                    r.chunks,
                    r.snapshots,
                    r.damage.len() + r.affected.len()
                ),
            }
            for d in &r.damage {
                println!("  damaged: {d}");
            }
            for a in &r.affected {
                println!("  affected: {a}");
            }
        }
    }
    let bad: Vec<&str> = results
        .iter()
        .filter(|r| !r.is_clean())
        .map(|r| r.host.as_str())
        .collect();
    anyhow::ensure!(
        bad.is_empty(),
        "damage or errors found on {} (listed above)",
        bad.join(", ")
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print JSON: the list `GET /v1/audit` answers (docs/api.md).
    #[arg(long)]
    pub json: bool,
}

/// `rewind audit`: the server's audit log, oldest first.
pub fn audit_command(args: AuditArgs) -> Result<()> {
    let events = args.server.client()?.audit()?;
    if args.json {
        return print_json(&events);
    }
    for e in &events {
        println!(
            "{}  {:<18} {:<24} {:<20} {}",
            e.time,
            e.action.as_str(),
            e.actor,
            e.target,
            e.detail
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Problem;

    fn host(name: &str, problems: &[(Severity, &str)]) -> HostHealth {
        HostHealth {
            host: name.into(),
            recoverable: !problems.iter().any(|p| p.0 == Severity::Critical),
            problems: problems
                .iter()
                .map(|(severity, m)| Problem {
                    severity: *severity,
                    message: m.to_string(),
                })
                .collect(),
            snapshots: 1,
            last_good: None,
            last_good_age_secs: Some(3600),
            last_capture: None,
            last_verify: None,
        }
    }

    #[test]
    fn check_lines_follow_the_plugin_conventions() {
        let (code, line) = check_line(&[host("a", &[]), host("b", &[])]);
        assert_eq!(code, OK);
        assert_eq!(
            line,
            "REWIND OK - 2 hosts recoverable, last good captures at most 1h 0m old | hosts=2 recoverable=2 warning=0 critical=0"
        );
        let (code, line) = check_line(&[
            host("a", &[(Severity::Warning, "no good capture for 1d 3h")]),
            host("b", &[]),
        ]);
        assert_eq!(code, WARNING);
        assert!(line.starts_with("REWIND WARNING - 1 of 2 hosts need attention: a: no good"));
        let (code, line) = check_line(&[
            host("a", &[(Severity::Warning, "old")]),
            host(
                "b",
                &[
                    (Severity::Warning, "failed"),
                    (Severity::Critical, "skipped\n/data"),
                ],
            ),
        ]);
        assert_eq!(code, CRITICAL);
        assert!(
            line.starts_with(
                "REWIND CRITICAL - 1 of 2 hosts not recoverable: b: skipped /data (+1 more); a: old |"
            ),
            "{line}"
        );
        assert_eq!(check_line(&[]).0, UNKNOWN);
    }
}
