//! `rewind forget`: which snapshots a retention policy keeps. A pure function
//! over (id, time) pairs; days, weeks (ISO, starting Monday) and months are
//! UTC, as snapshot times are. Each rule keeps the newest snapshot of each of
//! its N most recent periods that hold a snapshot; a snapshot is kept when any
//! rule keeps it. A policy that keeps nothing is refused by the callers.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::repo::Repo;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct Policy {
    /// Keep the N newest snapshots.
    #[arg(long = "keep-last", value_name = "N", default_value_t = 0)]
    #[serde(default)]
    pub last: u32,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long = "keep-daily", value_name = "N", default_value_t = 0)]
    #[serde(default)]
    pub daily: u32,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long = "keep-weekly", value_name = "N", default_value_t = 0)]
    #[serde(default)]
    pub weekly: u32,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long = "keep-monthly", value_name = "N", default_value_t = 0)]
    #[serde(default)]
    pub monthly: u32,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.last == 0 && self.daily == 0 && self.weekly == 0 && self.monthly == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub id: String,
    pub time: String,
    pub keep: bool,
    /// Which rules keep it (`last`, `daily`, `weekly`, `monthly`).
    pub reasons: Vec<String>,
}

fn period(rule: usize, secs: i64) -> i64 {
    let day = secs.div_euclid(86_400);
    match rule {
        0 => secs, // every snapshot is its own period
        1 => day,
        // 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays.
        2 => day - (day + 3).rem_euclid(7),
        _ => {
            let ym = crate::time::format_utc(secs);
            ym[..4].parse::<i64>().unwrap_or(0) * 12 + ym[5..7].parse::<i64>().unwrap_or(0)
        }
    }
}

/// Decide for each snapshot, newest first. `snaps` are (id, seconds since
/// the epoch) in any order.
pub fn decide(snaps: &[(String, i64)], policy: &Policy) -> Vec<Decision> {
    let mut sorted: Vec<&(String, i64)> = snaps.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let counts = [policy.last, policy.daily, policy.weekly, policy.monthly];
    let names = ["last", "daily", "weekly", "monthly"];
    let mut left = counts;
    let mut last_period: [Option<i64>; 4] = [None; 4];
    sorted
        .into_iter()
        .map(|(id, secs)| {
            let mut reasons = Vec::new();
            for rule in 0..4 {
                let p = period(rule, *secs);
                let new_period = rule == 0 || last_period[rule] != Some(p);
                if left[rule] > 0 && new_period {
                    left[rule] -= 1;
                    last_period[rule] = Some(p);
                    reasons.push(names[rule].to_string());
                }
            }
            Decision {
                id: id.clone(),
                time: crate::time::format_utc(*secs),
                keep: !reasons.is_empty(),
                reasons,
            }
        })
        .collect()
}

/// Apply a policy to every host of a repository (each host separately);
/// returns the decisions by host. Snapshot files are removed unless
/// `dry_run`; their data goes at the next prune.
pub fn forget(
    repo: &Repo,
    policy: &Policy,
    host: Option<&str>,
    dry_run: bool,
) -> Result<BTreeMap<String, Vec<Decision>>> {
    if policy.is_empty() {
        bail!(
            "give at least one --keep-last/--keep-daily/--keep-weekly/--keep-monthly: an empty policy would forget every snapshot"
        );
    }
    let mut by_host: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for m in repo.snapshots()? {
        if host.is_some_and(|h| h != m.snapshot.host) {
            continue;
        }
        let secs = m.snapshot.time.unix();
        by_host
            .entry(m.snapshot.host.clone())
            .or_default()
            .push((m.snapshot.id.clone(), secs));
    }
    let mut out = BTreeMap::new();
    for (h, snaps) in by_host {
        let decisions = decide(&snaps, policy);
        if !dry_run {
            for d in decisions.iter().filter(|d| !d.keep) {
                repo.backend.remove(&format!("snapshots/{}.xml", d.id))?;
            }
        }
        out.insert(h, decisions);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        crate::time::parse_rfc3339(s).unwrap()
    }

    fn kept(snaps: &[(&str, &str)], policy: Policy) -> Vec<String> {
        let snaps: Vec<(String, i64)> = snaps.iter().map(|(i, s)| (i.to_string(), t(s))).collect();
        decide(&snaps, &policy)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id)
            .collect()
    }

    // Two snapshots a day (06:00 and 18:00) from Mon 2026-01-05 to Sun 2026-03-01.
    fn fixture() -> Vec<(String, String)> {
        let start = t("2026-01-05T06:00:00Z");
        (0..56 * 2)
            .map(|i| {
                let secs = start + (i / 2) * 86_400 + (i % 2) * 12 * 3600;
                let time = crate::time::format_utc(secs);
                (time.clone(), time)
            })
            .collect()
    }

    fn fixture_kept(policy: Policy) -> Vec<String> {
        let f = fixture();
        let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        kept(&refs, policy)
    }

    #[test]
    fn keep_last() {
        let k = fixture_kept(Policy {
            last: 3,
            ..Policy::default()
        });
        assert_eq!(
            k,
            [
                "2026-03-01T18:00:00Z",
                "2026-03-01T06:00:00Z",
                "2026-02-28T18:00:00Z"
            ]
        );
    }

    #[test]
    fn keep_daily_takes_the_newest_of_each_day() {
        let k = fixture_kept(Policy {
            daily: 3,
            ..Policy::default()
        });
        assert_eq!(
            k,
            [
                "2026-03-01T18:00:00Z",
                "2026-02-28T18:00:00Z",
                "2026-02-27T18:00:00Z"
            ]
        );
    }

    #[test]
    fn keep_weekly_uses_iso_weeks() {
        // Weeks start on Monday: the newest of each is its Sunday evening.
        let k = fixture_kept(Policy {
            weekly: 3,
            ..Policy::default()
        });
        assert_eq!(
            k,
            [
                "2026-03-01T18:00:00Z",
                "2026-02-22T18:00:00Z",
                "2026-02-15T18:00:00Z"
            ]
        );
    }

    #[test]
    fn keep_monthly() {
        let k = fixture_kept(Policy {
            monthly: 5,
            ..Policy::default()
        });
        assert_eq!(
            k,
            [
                "2026-03-01T18:00:00Z",
                "2026-02-28T18:00:00Z",
                "2026-01-31T18:00:00Z"
            ]
        );
    }

    #[test]
    fn rules_combine_and_periods_without_snapshots_do_not_count() {
        let snaps = [
            ("a", "2025-12-31T23:59:59Z"),
            ("b", "2026-01-01T00:00:00Z"),
            ("c", "2026-01-20T10:00:00Z"),
            ("d", "2026-01-20T11:00:00Z"),
        ];
        // Two daily: d (Jan 20) and b (Jan 1): the empty days between do not count.
        assert_eq!(
            kept(
                &snaps,
                Policy {
                    daily: 2,
                    ..Policy::default()
                }
            ),
            ["d", "b"]
        );
        // last 1 + monthly 2: d (by both: the newest of January) and a (December).
        assert_eq!(
            kept(
                &snaps,
                Policy {
                    last: 1,
                    monthly: 2,
                    ..Policy::default()
                }
            ),
            ["d", "a"]
        );
        let d = decide(
            &[("x".into(), t("2026-01-01T00:00:00Z"))],
            &Policy {
                last: 1,
                daily: 1,
                ..Policy::default()
            },
        );
        assert_eq!(d[0].reasons, ["last", "daily"]);
        assert!(Policy::default().is_empty());
    }

    #[test]
    fn weeks_start_on_monday() {
        // Sun 2026-01-04 and Mon 2026-01-05 are in different ISO weeks;
        // Mon 2026-01-05 and Sun 2026-01-11 in the same one.
        assert_ne!(
            period(2, t("2026-01-04T12:00:00Z")),
            period(2, t("2026-01-05T12:00:00Z"))
        );
        assert_eq!(
            period(2, t("2026-01-05T00:00:00Z")),
            period(2, t("2026-01-11T23:59:59Z"))
        );
    }
}
