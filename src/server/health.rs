//! Whether each host is recoverable now, and why not. The server keeps,
//! per host, the last capture reports and the last verification in
//! DIR/health/<host>.json (written atomically); [`assess`] turns them, with
//! the host's snapshots and the age limits, into a [`HostHealth`]. One
//! judgement, in one place: the API, `rewind status --check` and
//! `/metrics` all show what it says.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::files;
use crate::api::{
    ApiError, CaptureOutcome, CaptureReport, HostHealth, Problem, ReceivedCapture, Severity,
    VerifyResult, human_age,
};

/// Capture reports kept per host.
const REPORTS_KEPT: usize = 50;
/// Problem lines listed per cause (a capture with 500 unreadable files).
const LINES_SHOWN: usize = 10;

pub use crate::api::DEFAULT_MAX_AGE;

/// What the server keeps of a host's operations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// Oldest first.
    #[serde(default)]
    pub captures: Vec<ReceivedCapture>,
    #[serde(default)]
    pub verify: Option<VerifyResult>,
}

/// How old the last good capture may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Older: WARNING.
    pub warn_secs: u64,
    /// Older: CRITICAL (not recoverable to a recent enough point).
    pub critical_secs: u64,
}

impl Limits {
    /// `max_age` warns; `critical_age` (default twice `max_age`) is critical.
    pub fn parse(max_age: Option<&str>, critical_age: Option<&str>) -> Result<Limits, ApiError> {
        let secs = |s: &str, what: &str| {
            crate::repo::prune::parse_duration(s)
                .map(|d| d.as_secs())
                .map_err(|e| ApiError::BadRequest(format!("{what} {s:?}: {e:#}")))
        };
        let warn_secs = secs(max_age.unwrap_or(DEFAULT_MAX_AGE), "max_age")?;
        let critical_secs = match critical_age {
            Some(c) => secs(c, "critical_age")?,
            None => warn_secs.saturating_mul(2),
        };
        if critical_secs < warn_secs {
            return Err(ApiError::BadRequest(
                "critical_age is shorter than max_age".into(),
            ));
        }
        Ok(Limits {
            warn_secs,
            critical_secs,
        })
    }
}

/// Serializes the read-modify-write of health files.
static WRITING: Mutex<()> = Mutex::new(());

fn record_path(data: &Path, host: &str) -> PathBuf {
    data.join("health").join(format!("{host}.json"))
}

pub fn load(data: &Path, host: &str) -> Result<HealthRecord, ApiError> {
    let path = record_path(data, host);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Internal(format!("{} is damaged: {e} (remove it)", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HealthRecord::default()),
        Err(e) => Err(ApiError::Internal(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn update(data: &Path, host: &str, change: impl FnOnce(&mut HealthRecord)) -> Result<(), ApiError> {
    let _writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let mut rec = load(data, host)?;
    change(&mut rec);
    let path = record_path(data, host);
    let bytes = serde_json::to_vec_pretty(&rec).map_err(|e| ApiError::Internal(format!("{e}")))?;
    crate::util::fs::write_atomic(&path, &bytes)
        .map_err(|e| ApiError::Internal(format!("cannot write {}: {e}", path.display())))
}

pub fn record_capture(data: &Path, host: &str, report: CaptureReport) -> Result<(), ApiError> {
    let received = ReceivedCapture {
        received: crate::time::now_utc(),
        report,
    };
    update(data, host, |rec| {
        rec.captures.push(received);
        let extra = rec.captures.len().saturating_sub(REPORTS_KEPT);
        rec.captures.drain(..extra);
    })
}

pub fn record_verify(data: &Path, result: VerifyResult) -> Result<(), ApiError> {
    let host = result.host.clone();
    update(data, &host, |rec| rec.verify = Some(result))
}

/// A host's health now, from its repository and its record.
pub fn host_health(data: &Path, host: &str, limits: Limits) -> Result<HostHealth, ApiError> {
    // Each snapshot at its effective time (never later than its commit on
    // this server), so a host dating its snapshots ahead looks no fresher.
    let snaps = files::snapshot_files(&files::host_dir(data, host))?;
    let snapshots: Vec<(String, i64)> = snaps
        .iter()
        .map(|f| (f.manifest.snapshot.id.clone(), f.effective_secs()))
        .collect();
    let now = crate::time::parse_rfc3339(&crate::time::now_utc()).unwrap_or(0);
    Ok(assess(host, &snapshots, &load(data, host)?, now, limits))
}

/// Lines, at most [`LINES_SHOWN`] of them, each as a problem.
fn problems_of(out: &mut Vec<Problem>, severity: Severity, prefix: &str, lines: &[String]) {
    for l in lines.iter().take(LINES_SHOWN) {
        out.push(Problem {
            severity,
            message: format!("{prefix}: {l}"),
        });
    }
    if lines.len() > LINES_SHOWN {
        out.push(Problem {
            severity,
            message: format!("{prefix}: and {} more", lines.len() - LINES_SHOWN),
        });
    }
}

/// The judgement. `snapshots` are (id, time) oldest first; `now` and the
/// times are seconds since the epoch.
pub fn assess(
    host: &str,
    snapshots: &[(String, i64)],
    rec: &HealthRecord,
    now: i64,
    limits: Limits,
) -> HostHealth {
    let mut problems = Vec::new();
    let critical = |message: String| Problem {
        severity: Severity::Critical,
        message,
    };
    let warning = |message: String| Problem {
        severity: Severity::Warning,
        message,
    };
    let last_capture = rec.captures.last().cloned();
    if let Some(c) = &last_capture {
        let r = &c.report;
        match r.outcome {
            CaptureOutcome::Success => {}
            CaptureOutcome::Partial => {
                let prefix = format!("last capture ({}) is partial", r.started);
                if r.warnings.is_empty() {
                    problems.push(critical(prefix));
                } else {
                    problems_of(&mut problems, Severity::Critical, &prefix, &r.warnings);
                }
            }
            CaptureOutcome::Failed => problems.push(warning(format!(
                "last capture ({}) failed: {}",
                r.started,
                r.error.as_deref().unwrap_or("no reason given")
            ))),
        }
    }
    // A snapshot is good unless a report says it is partial.
    let partial: Vec<&str> = rec
        .captures
        .iter()
        .filter(|c| c.report.outcome == CaptureOutcome::Partial)
        .filter_map(|c| c.report.snapshot.as_deref())
        .collect();
    let last_good = snapshots
        .iter()
        .rev()
        .find(|(id, _)| !partial.contains(&id.as_str()));
    let age = last_good.map(|(_, t)| now.saturating_sub(*t).max(0) as u64);
    match (snapshots.is_empty(), age) {
        (true, _) => problems.push(critical(
            "no snapshot: no capture has been committed".into(),
        )),
        (false, None) => problems.push(critical(
            "no good snapshot: every capture kept was partial".into(),
        )),
        (false, Some(age)) if age > limits.critical_secs => problems.push(critical(format!(
            "no good capture for {} (critical after {})",
            human_age(age),
            human_age(limits.critical_secs)
        ))),
        (false, Some(age)) if age > limits.warn_secs => problems.push(warning(format!(
            "no good capture for {} (limit {})",
            human_age(age),
            human_age(limits.warn_secs)
        ))),
        _ => {}
    }
    if let Some(v) = &rec.verify {
        let prefix = format!("verification ({}) found damage", v.time);
        problems_of(&mut problems, Severity::Critical, &prefix, &v.damage);
        if v.damage.is_empty() {
            problems_of(&mut problems, Severity::Critical, &prefix, &v.affected);
        }
        if let Some(e) = &v.error {
            problems.push(warning(format!("verification ({}) failed: {e}", v.time)));
        }
    }
    HostHealth {
        host: host.to_string(),
        recoverable: !problems.iter().any(|p| p.severity == Severity::Critical),
        problems,
        snapshots: snapshots.len(),
        last_good: last_good.map(|(_, t)| crate::time::format_utc(*t)),
        last_good_age_secs: age,
        last_capture,
        last_verify: rec.verify.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const NOW: i64 = 1_800_000_000;

    fn limits() -> Limits {
        Limits::parse(Some("26h"), None).unwrap()
    }

    fn report(outcome: CaptureOutcome, snapshot: Option<&str>) -> ReceivedCapture {
        ReceivedCapture {
            received: crate::time::format_utc(NOW),
            report: CaptureReport {
                outcome,
                snapshot: snapshot.map(str::to_string),
                started: crate::time::format_utc(NOW - 60),
                duration_secs: 12.5,
                bytes: 1000,
                bytes_stored: 100,
                warnings: match outcome {
                    CaptureOutcome::Partial => vec!["no data for /dev/vg0/data (xfs)".into()],
                    _ => vec![],
                },
                error: (outcome == CaptureOutcome::Failed).then(|| "disk gone".into()),
            },
        }
    }

    fn snaps(ages_hours: &[i64]) -> Vec<(String, i64)> {
        ages_hours
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("s{i}"), NOW - a * HOUR))
            .collect()
    }

    #[test]
    fn a_fresh_good_capture_is_recoverable() {
        let rec = HealthRecord {
            captures: vec![report(CaptureOutcome::Success, Some("s1"))],
            verify: None,
        };
        let h = assess("web1", &snaps(&[30, 1]), &rec, NOW, limits());
        assert!(h.recoverable, "{h:?}");
        assert!(h.problems.is_empty());
        assert_eq!(h.last_good_age_secs, Some(3600));
        assert_eq!(h.severity(), None);
        // No report at all (a capture to a directory, an older client): the
        // snapshot counts.
        let h = assess(
            "web1",
            &snaps(&[1]),
            &HealthRecord::default(),
            NOW,
            limits(),
        );
        assert!(h.recoverable);
    }

    #[test]
    fn a_partial_capture_is_not_recoverable_with_the_reason() {
        let rec = HealthRecord {
            captures: vec![report(CaptureOutcome::Partial, Some("s1"))],
            verify: None,
        };
        let h = assess("web1", &snaps(&[30, 1]), &rec, NOW, limits());
        assert!(!h.recoverable);
        assert!(
            h.problems[0].message.contains("no data for /dev/vg0/data"),
            "{:?}",
            h.problems
        );
        assert_eq!(h.severity(), Some(Severity::Critical));
        // The last good one is the one before.
        assert_eq!(h.last_good_age_secs, Some(30 * 3600));
    }

    #[test]
    fn age_warns_then_is_critical() {
        let h = assess("a", &snaps(&[27]), &HealthRecord::default(), NOW, limits());
        assert!(h.recoverable);
        assert_eq!(h.severity(), Some(Severity::Warning));
        assert!(h.problems[0].message.contains("no good capture for 1d 3h"));
        let h = assess("a", &snaps(&[53]), &HealthRecord::default(), NOW, limits());
        assert!(!h.recoverable);
        assert_eq!(h.severity(), Some(Severity::Critical));
        let h = assess("a", &[], &HealthRecord::default(), NOW, limits());
        assert!(!h.recoverable);
        assert!(h.problems[0].message.starts_with("no snapshot"));
    }

    #[test]
    fn a_failed_capture_warns_and_damage_is_critical() {
        let mut rec = HealthRecord {
            captures: vec![
                report(CaptureOutcome::Success, Some("s0")),
                report(CaptureOutcome::Failed, None),
            ],
            verify: None,
        };
        let h = assess("a", &snaps(&[2]), &rec, NOW, limits());
        assert!(h.recoverable);
        assert_eq!(h.severity(), Some(Severity::Warning));
        assert!(h.problems[0].message.contains("failed: disk gone"));
        rec.verify = Some(VerifyResult {
            host: "a".into(),
            time: "2027-01-15T08:00:00Z".into(),
            damage: vec!["packs/ab/abcd.pack: content does not match its name".into()],
            ..VerifyResult::default()
        });
        let h = assess("a", &snaps(&[2]), &rec, NOW, limits());
        assert!(!h.recoverable);
        assert!(h.problems.iter().any(|p| p.message.contains("abcd.pack")));
    }

    #[test]
    fn limits_parse() {
        assert_eq!(
            Limits::parse(None, None).unwrap(),
            Limits {
                warn_secs: 26 * 3600,
                critical_secs: 52 * 3600
            }
        );
        assert!(Limits::parse(Some("2h"), Some("1h")).is_err());
        assert!(Limits::parse(Some("soon"), None).is_err());
        assert_eq!(human_age(90061), "1d 1h");
        assert_eq!(human_age(3700), "1h 1m");
    }

    #[test]
    fn reports_are_kept_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..REPORTS_KEPT + 3 {
            record_capture(
                dir.path(),
                "web1",
                report(CaptureOutcome::Success, None).report,
            )
            .unwrap();
        }
        assert_eq!(
            load(dir.path(), "web1").unwrap().captures.len(),
            REPORTS_KEPT
        );
        assert_eq!(load(dir.path(), "other").unwrap(), HealthRecord::default());
    }
}
