//! What the server keeps in memory about each host so that no request has
//! to walk the disk for it: the identity of its latest snapshot — MAC
//! addresses (for identify and boot scripts, which any booting machine may
//! ask for) and DMI system UUID and serial (for the check that no two hosts
//! claim one machine) — and the bytes its repository takes (for quotas).
//!
//! Both are built once at start and kept up to date where the data change:
//! a commit becomes its host's latest; forget, prune and removals
//! recompute their host. Readers never parse a manifest.
//!
//! Commits are checked here, one at a time across all hosts
//! ([`HostIndex::commit_guard`]): a snapshot's time may not be in the
//! future nor before its host's newest, and the machine it describes may
//! not be one another host's latest snapshot already claims (a host that
//! listed other machines' MACs or DMI ids would otherwise be recognised as
//! them when they boot for a recovery).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use crate::api::{ApiError, MachineIdentity};
use crate::manifest::Manifest;
use crate::server::files::SnapshotFile;

/// How far ahead of the server's clock a snapshot's time may be.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// What the index keeps of one host's newest snapshot.
#[derive(Debug, Clone, Default)]
struct Latest {
    /// Its place in the host's history ([`SnapshotFile::order`]) and id,
    /// to tell whether a commit is newer.
    key: ((i64, i128), String),
    /// Its commit time as recorded (or its own time), nanoseconds.
    committed: i128,
    macs: Vec<String>,
    /// `uuid=`, `serial=`, `mac=`: every id a request or a boot may
    /// recognise the machine by.
    ids: Vec<String>,
}

#[derive(Debug, Default)]
pub struct HostIndex {
    /// By host name (sorted: the first host that matches wins, as before).
    latest: Mutex<BTreeMap<String, Latest>>,
    /// Bytes under each host's directory; absent: not counted yet.
    usage: Mutex<HashMap<String, u64>>,
    /// Held across a snapshot's checks and its write, so that two hosts
    /// cannot both claim one machine, nor one host commit twice at once.
    commits: Mutex<()>,
}

fn macs_of(m: &Manifest) -> Vec<String> {
    m.network
        .interfaces
        .iter()
        .filter_map(|i| i.mac.as_ref())
        .map(|mac| mac.as_str().to_string())
        .collect()
}

/// Every id that recognises the machine a manifest describes: its DMI
/// system UUID and serial, and each of its MAC addresses (normalized as
/// requests and claims write them).
pub fn identities_of(m: &Manifest) -> Vec<String> {
    let machine = MachineIdentity::new(m.system.dmi.as_ref(), &macs_of(m));
    let mut ids = Vec::new();
    if let Some(u) = &machine.system_uuid {
        ids.push(format!("uuid={u}"));
    }
    if let Some(s) = &machine.serial {
        ids.push(format!("serial={s}"));
    }
    ids.extend(machine.macs.iter().map(|m| format!("mac={m}")));
    ids
}

fn latest_of(f: &SnapshotFile) -> Latest {
    Latest {
        key: (f.order(), f.manifest.snapshot.id.clone()),
        committed: f.committed_nanos(),
        macs: macs_of(&f.manifest),
        ids: identities_of(&f.manifest),
    }
}

/// The server's clock in nanoseconds since the epoch.
pub fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

impl HostIndex {
    /// A host's snapshots (oldest first) changed as a whole: forget, a
    /// removal, or the server's start.
    pub fn set_snapshots(&self, host: &str, snapshots: &[SnapshotFile]) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        match snapshots.last() {
            Some(f) => {
                latest.insert(host.to_string(), latest_of(f));
            }
            None => {
                latest.remove(host);
            }
        }
    }

    /// A snapshot was committed: it is the host's latest if it is newer.
    pub fn committed(&self, host: &str, f: &SnapshotFile) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let entry = latest.entry(host.to_string()).or_default();
        let new = latest_of(f);
        if new.key >= entry.key {
            *entry = new;
        }
    }

    /// Held while a snapshot is checked ([`HostIndex::check_commit`]),
    /// written and indexed ([`HostIndex::committed`]).
    pub fn commit_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.commits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a new snapshot of `host` may be committed at `now`
    /// (nanoseconds); returns the commit time to record for it.
    ///
    /// Its time: not in the future (beyond [`CLOCK_SKEW_SECS`]), and not
    /// before the host's newest snapshot (its effective time: see
    /// [`SnapshotFile::effective_secs`]), so that a host cannot date a
    /// snapshot to win `latest` or `--at`, nor push real snapshots out of
    /// keep-N retention. The commit time recorded is the server's clock,
    /// kept after the host's newest commit, so the host's history is in
    /// commit order even if the clock steps back.
    ///
    /// Its machine: no DMI UUID, serial or MAC address of it may be one
    /// that another host's latest snapshot lists, unless the operator
    /// declared that id shared (`serve --shared-identity`, in `shared`).
    pub fn check_commit(
        &self,
        host: &str,
        m: &Manifest,
        now: i128,
        shared: &[String],
    ) -> Result<i128, ApiError> {
        let id = &m.snapshot.id;
        let t = m.snapshot.time.unix();
        let now_secs = i64::try_from(now.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
        if t > now_secs.saturating_add(CLOCK_SKEW_SECS) {
            return Err(ApiError::BadRequest(format!(
                "snapshot {id} refused: its time {} is {} s ahead of the server's clock \
                 (is the host's clock right?)",
                m.snapshot.time,
                t - now_secs
            )));
        }
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let newest = latest.get(host).filter(|n| !n.key.1.is_empty());
        if let Some(newest) = newest
            && t < newest.key.0.0
        {
            return Err(ApiError::Conflict(format!(
                "snapshot {id} refused: its time {} is before {host}'s newest snapshot \
                 ({}, {}): snapshots are committed in time order",
                m.snapshot.time,
                newest.key.1,
                crate::time::format_utc(newest.key.0.0)
            )));
        }
        let ids = identities_of(m);
        for (other, l) in latest.iter().filter(|(h, _)| h.as_str() != host) {
            if let Some(claimed) = ids
                .iter()
                .find(|i| l.ids.contains(i) && !shared.contains(i))
            {
                let (kind, value) = claimed.split_once('=').unwrap_or(("id", claimed));
                let kind = match kind {
                    "uuid" => "DMI system UUID",
                    "serial" => "DMI serial number",
                    "mac" => "MAC address",
                    _ => kind,
                };
                return Err(ApiError::Conflict(format!(
                    "snapshot {id} of {host} refused: the machine it describes has {kind} \
                     {value}, which host {other}'s latest snapshot ({sid}) already lists, and \
                     one machine may be one host only (a recovery's boot and claim recognise \
                     the machine by it). If this machine was {other} (renamed, or its hardware \
                     reused), an admin removes {other}'s snapshots that list it (`DELETE \
                     /v1/hosts/{other}/files/snapshots/{sid}.xml`) or keeps them and declares \
                     the id shared: `rewind serve --shared-identity {claimed}` (so too for an \
                     id several machines really share: a VRRP or CARP MAC, a cloned VM's \
                     UUID). Otherwise {host} names another machine: check that host",
                    sid = l.key.1
                )));
            }
        }
        let after = newest.map_or(i128::MIN, |n| n.committed.saturating_add(1));
        Ok(now.max(after))
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

    /// A snapshot without a commit record (as before they were kept).
    fn file(manifest: Manifest) -> SnapshotFile {
        SnapshotFile {
            manifest,
            committed: None,
        }
    }

    const SEC: i128 = 1_000_000_000;

    /// A host's manifest claiming a machine another host's latest lists is
    /// refused, naming the host, the id and what to do; an id the operator
    /// declared shared passes; the host's own next snapshot passes.
    #[test]
    fn one_machine_is_one_host() {
        let idx = HostIndex::default();
        let web1 = sample();
        let now = i128::from(web1.snapshot.time.unix()) * SEC;
        let c = idx.check_commit("web1", &web1, now, &[]).unwrap();
        assert_eq!(c, now);
        idx.committed(
            "web1",
            &SnapshotFile {
                manifest: web1.clone(),
                committed: Some(c),
            },
        );
        let ids = identities_of(&web1);
        assert!(ids.iter().any(|i| i.starts_with("uuid=")), "{ids:?}");
        assert!(ids.iter().any(|i| i.starts_with("mac=")), "{ids:?}");

        // Another host listing web1's MAC alone, its serial alone, its UUID
        // alone (in another case): each refused.
        let mut evil = web1.clone();
        evil.snapshot.host = "evil".into();
        evil.snapshot.id = "e1".into();
        let mut mac_only = evil.clone();
        mac_only.system.dmi = None;
        let mut serial_only = evil.clone();
        serial_only.network.interfaces.clear();
        if let Some(d) = serial_only.system.dmi.as_mut() {
            d.system_uuid = None;
        }
        let mut uuid_upper = evil.clone();
        uuid_upper.network.interfaces.clear();
        if let Some(d) = uuid_upper.system.dmi.as_mut() {
            d.serial = None;
            d.system_uuid = d.system_uuid.as_ref().map(|u| u.to_ascii_uppercase());
        }
        for (m, kind) in [
            (&mac_only, "MAC address"),
            (&serial_only, "DMI serial number"),
            (&uuid_upper, "DMI system UUID"),
        ] {
            let e = idx.check_commit("evil", m, now, &[]).unwrap_err();
            assert_eq!(e.status(), 409);
            let msg = e.message();
            assert!(msg.contains(kind) && msg.contains("host web1"), "{msg}");
            assert!(msg.contains("--shared-identity"), "{msg}");
        }
        // Declared shared: every id of the MAC-only manifest.
        let shared = identities_of(&mac_only);
        idx.check_commit("evil", &mac_only, now, &shared).unwrap();
        // web1's own next snapshot is web1's business.
        let mut next = web1.clone();
        next.snapshot.id = "s2".into();
        let c2 = idx.check_commit("web1", &next, now, &[]).unwrap();
        assert_eq!(c2, now + 1, "commit times increase within a host");
    }

    /// A snapshot dated ahead of the server's clock (within the allowed
    /// skew) stands at its commit time: a later commit of the host, dated
    /// honestly, is accepted and is the newer one.
    #[test]
    fn a_future_date_does_not_outrank_a_later_commit() {
        let idx = HostIndex::default();
        let mut future = sample();
        let now_secs = future.snapshot.time.unix();
        future.snapshot.time = crate::time::format_utc(now_secs + 240).parse().unwrap();
        let c1 = idx
            .check_commit("web1", &future, i128::from(now_secs) * SEC, &[])
            .unwrap();
        let f1 = SnapshotFile {
            manifest: future,
            committed: Some(c1),
        };
        assert_eq!(f1.effective_secs(), now_secs);
        idx.committed("web1", &f1);
        let mut real = sample();
        real.snapshot.id = "s-real".into();
        real.snapshot.time = crate::time::format_utc(now_secs + 1).parse().unwrap();
        let c2 = idx
            .check_commit("web1", &real, i128::from(now_secs + 1) * SEC, &[])
            .unwrap();
        let f2 = SnapshotFile {
            manifest: real.clone(),
            committed: Some(c2),
        };
        assert!(f2.order() > f1.order());
        // Before the newest's effective time: refused.
        let mut back = sample();
        back.snapshot.id = "s-back".into();
        back.snapshot.time = crate::time::format_utc(now_secs - 1).parse().unwrap();
        idx.committed("web1", &f2);
        let e = idx
            .check_commit("web1", &back, i128::from(now_secs + 2) * SEC, &[])
            .unwrap_err();
        assert_eq!(e.status(), 409, "{}", e.message());
    }

    #[test]
    fn the_newest_commit_names_the_macs() {
        let idx = HostIndex::default();
        let old = sample();
        let mac = macs_of(&old)[0].clone();
        idx.committed("web1", &file(old.clone()));
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
        idx.committed("web1", &file(older.clone()));
        assert_eq!(
            idx.host_by_mac(std::slice::from_ref(&mac), None).as_deref(),
            Some("web1")
        );
        // Forget left only the older one.
        idx.set_snapshots("web1", &[file(older)]);
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
