//! What the server keeps in memory about each host so that no request has
//! to walk the disk for it: the MAC addresses of its latest snapshot (for
//! identify and boot scripts, which any booting machine may ask for) and
//! the bytes its repository takes (for quotas).
//!
//! Both are built once at start and kept up to date where the data change:
//! a commit adds its manifest's MACs when it is the newest; forget, prune
//! and removals recompute their host. Readers never parse a manifest.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use crate::manifest::Manifest;

/// How far ahead of the server's clock a snapshot's time may be.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// The MACs of one host's newest snapshot.
#[derive(Debug, Clone, Default)]
struct Latest {
    /// (time, id) of the snapshot, to tell whether a commit is newer.
    key: (String, String),
    macs: Vec<String>,
}

#[derive(Debug, Default)]
pub struct HostIndex {
    /// By host name (sorted: the first host that matches wins, as before).
    latest: Mutex<BTreeMap<String, Latest>>,
    /// Bytes under each host's directory; absent: not counted yet.
    usage: Mutex<HashMap<String, u64>>,
}

fn key_of(m: &Manifest) -> (String, String) {
    (m.snapshot.time.to_string(), m.snapshot.id.clone())
}

fn macs_of(m: &Manifest) -> Vec<String> {
    m.network
        .interfaces
        .iter()
        .filter_map(|i| i.mac.as_ref())
        .map(|mac| mac.as_str().to_string())
        .collect()
}

impl HostIndex {
    /// A host's snapshots (oldest first) changed as a whole: forget, a
    /// removal, or the server's start.
    pub fn set_snapshots(&self, host: &str, snapshots: &[Manifest]) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        match snapshots.last() {
            Some(m) => {
                latest.insert(
                    host.to_string(),
                    Latest {
                        key: key_of(m),
                        macs: macs_of(m),
                    },
                );
            }
            None => {
                latest.remove(host);
            }
        }
    }

    /// A snapshot was committed: it is the host's latest if it is newer.
    pub fn committed(&self, host: &str, m: &Manifest) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let entry = latest.entry(host.to_string()).or_default();
        if key_of(m) >= entry.key {
            *entry = Latest {
                key: key_of(m),
                macs: macs_of(m),
            };
        }
    }

    /// Whether a new snapshot of `host` may be committed at `now` (seconds)
    /// as far as its time goes: not in the future (beyond
    /// [`CLOCK_SKEW_SECS`]), and not before the host's newest snapshot, so
    /// that a host cannot date a snapshot to win `latest` or `--at`, nor
    /// push real snapshots out of keep-N retention.
    pub fn check_commit_time(
        &self,
        host: &str,
        m: &Manifest,
        now: i64,
    ) -> Result<(), crate::api::ApiError> {
        let id = &m.snapshot.id;
        let t = m.snapshot.time.unix();
        if t > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(crate::api::ApiError::BadRequest(format!(
                "snapshot {id} refused: its time {} is {} s ahead of the server's clock \
                 (is the host's clock right?)",
                m.snapshot.time,
                t - now
            )));
        }
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(newest) = latest.get(host)
            && !newest.key.0.is_empty()
            && crate::time::parse_rfc3339(&newest.key.0).is_some_and(|n| t < n)
        {
            return Err(crate::api::ApiError::Conflict(format!(
                "snapshot {id} refused: its time {} is before {host}'s newest snapshot \
                 ({}, {}): snapshots are committed in time order",
                m.snapshot.time, newest.key.1, newest.key.0
            )));
        }
        Ok(())
    }

    /// The first host (by name) whose latest snapshot has one of `macs`
    /// (normalized), among `only` when given.
    pub fn host_by_mac(&self, macs: &[String], only: Option<&str>) -> Option<String> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest
            .iter()
            .filter(|(h, _)| only.is_none_or(|o| o == h.as_str()))
            .find(|(_, l)| l.macs.iter().any(|m| macs.contains(m)))
            .map(|(h, _)| h.clone())
    }

    /// Bytes a host's repository takes, counted from `dir` the first time.
    pub fn usage(&self, host: &str, dir: &Path) -> u64 {
        if let Some(n) = self
            .usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
        {
            return *n;
        }
        let n = crate::util::fs::dir_bytes(dir);
        self.usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string(), n);
        n
    }

    /// `bytes` more are stored for a host.
    pub fn add_usage(&self, host: &str, bytes: u64) {
        if let Some(n) = self
            .usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(host)
        {
            *n = n.saturating_add(bytes);
        }
    }

    /// A host's files were removed (forget, prune, delete): count again.
    pub fn recount(&self, host: &str) {
        self.usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;

    #[test]
    fn the_newest_commit_names_the_macs() {
        let idx = HostIndex::default();
        let old = sample();
        let mac = macs_of(&old)[0].clone();
        idx.committed("web1", &old);
        assert_eq!(
            idx.host_by_mac(std::slice::from_ref(&mac), None).as_deref(),
            Some("web1")
        );
        assert_eq!(
            idx.host_by_mac(std::slice::from_ref(&mac), Some("web2")),
            None
        );
        // An older commit does not replace the newest one's MACs.
        let mut older = old.clone();
        older.snapshot.id = "0-older".into();
        older.snapshot.time = "2000-01-01T00:00:00Z".parse().unwrap();
        older.network.interfaces.clear();
        idx.committed("web1", &older);
        assert_eq!(
            idx.host_by_mac(std::slice::from_ref(&mac), None).as_deref(),
            Some("web1")
        );
        // Forget left only the older one.
        idx.set_snapshots("web1", &[older]);
        assert_eq!(idx.host_by_mac(&[mac], None), None);
    }

    #[test]
    fn usage_is_counted_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 100]).unwrap();
        let idx = HostIndex::default();
        assert_eq!(idx.usage("h", dir.path()), 100);
        std::fs::write(dir.path().join("b"), [0u8; 50]).unwrap();
        assert_eq!(idx.usage("h", dir.path()), 100, "cached");
        idx.add_usage("h", 50);
        assert_eq!(idx.usage("h", dir.path()), 150);
        idx.recount("h");
        assert_eq!(idx.usage("h", dir.path()), 150);
    }
}
