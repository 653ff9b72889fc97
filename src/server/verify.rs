//! Server-side verification against bit rot: every pack of every host is
//! read back and every chunk's hash checked (crate::repo::check), on a
//! schedule (`rewind serve --verify-every 24h`) and on demand
//! (`POST /v1/verify`, `rewind verify`). The result is kept in the host's
//! health record, so damage makes the host not recoverable, with the pack
//! named, until a verification finds it clean again.

use std::sync::Arc;
use std::time::Duration;

use super::Server;
use super::{files, health};
use crate::api::{AuditAction, VerifyResult};

/// Read back and check one host's repository (blocking; run it with the
/// host's lock shared: uploads may go on, prune may not).
pub fn verify_host(s: &Server, host: &str) -> VerifyResult {
    let dir = files::host_dir(&s.data, host);
    let checked =
        crate::repo::Repo::open(&dir).and_then(|repo| crate::repo::check::check(&repo, |_, _| {}));
    let mut result = VerifyResult {
        host: host.to_string(),
        ..VerifyResult::default()
    };
    match checked {
        Ok(r) => {
            result.packs = r.packs;
            result.chunks = r.blobs;
            result.snapshots = r.snapshots;
            result.damage = r.damage;
            result.affected = r.affected;
        }
        Err(e) => result.error = Some(format!("{}: {e:#}", dir.display())),
    }
    result.time = crate::time::now_utc();
    result
}

/// Verify hosts one after the other, keep each result, and audit the run.
pub async fn verify_hosts(s: &Arc<Server>, hosts: Vec<String>) -> Vec<VerifyResult> {
    let mut results = Vec::new();
    for host in hosts {
        let lock = s.host_lock(&host);
        let _shared = lock.read().await;
        let server = s.clone();
        let h = host.clone();
        let result = match tokio::task::spawn_blocking(move || {
            let result = verify_host(&server, &h);
            health::record_verify(&server.data, result.clone()).map(|()| result)
        })
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                log_line!("rewind: verification of {host}: {}", e.message());
                continue;
            }
            Err(e) => {
                log_line!("rewind: verification of {host}: {e}");
                continue;
            }
        };
        let detail = if result.is_clean() {
            format!("clean: {} packs, {} chunks", result.packs, result.chunks)
        } else {
            format!(
                "{} damaged: {}",
                result.damage.len() + result.affected.len(),
                result.damage.first().map_or("", String::as_str)
            )
        };
        if !result.is_clean() {
            log_line!("rewind: verification of {host}: {detail}");
        }
        super::audit::record(s, AuditAction::Verify, &host, &detail).await;
        results.push(result);
    }
    results
}

/// Verify every host every `every`, the first time one period after start.
pub async fn schedule(s: Arc<Server>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let hosts = s.hosts();
        let results = verify_hosts(&s, hosts).await;
        let damaged = results.iter().filter(|r| !r.is_clean()).count();
        log_line!(
            "rewind: scheduled verification: {} hosts, {damaged} with damage",
            results.len()
        );
    }
}
