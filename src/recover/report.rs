//! Progress reports to the server, from a thread of their own so that a slow
//! or unreachable server never holds the recovery up: a stage change is sent
//! at once, restore progress every few seconds, and only the latest state
//! is sent. The final result is sent by the caller, synchronously.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::client::Client;
use crate::progress::Progress;
use crate::stage::Stage;

const EVERY: Duration = Duration::from_secs(3);

/// A report at least this often, even in a stage that says nothing new
/// (a long mkfs): each one renews the claim's lease on the server
/// (api::CLAIM_LEASE_SECS), which would otherwise lapse.
const HEARTBEAT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    /// `None` until the first stage is announced: nothing to report yet.
    stage: Option<Stage>,
    message: String,
    /// Bytes restored by the filesystems already done.
    base: u64,
    total: u64,
    progress: Option<Arc<Progress>>,
    dirty: bool,
    stop: bool,
    warned: bool,
}

struct Inner {
    client: Arc<Client>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Clone)]
pub(super) struct Reporter(Arc<Inner>);

impl Reporter {
    pub(super) fn start(client: Arc<Client>) -> Reporter {
        let inner = Arc::new(Inner {
            client,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let worker = inner.clone();
        std::thread::spawn(move || run(&worker));
        Reporter(inner)
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut st) = self.0.state.lock() {
            f(&mut st);
            st.dirty = true;
        }
        self.0.changed.notify_all();
    }

    pub(super) fn stage(&self, stage: Stage) {
        self.update(|st| {
            st.stage = Some(stage);
            st.message.clear();
            st.progress = None;
        });
    }

    /// A filesystem's restore starts: `base` of `total` bytes are done.
    pub(super) fn restoring(&self, from: &str, base: u64, total: u64, progress: Arc<Progress>) {
        self.update(|st| {
            st.message = from.to_string();
            st.base = base;
            st.total = total;
            st.progress = Some(progress);
        });
    }

    pub(super) fn restored(&self, total: u64) {
        self.update(|st| {
            st.message.clear();
            st.base = total;
            st.total = total;
            st.progress = None;
        });
    }

    /// Stop the progress reports and send the result.
    pub(super) fn result(&self, ok: bool, stage: Stage, message: &str) -> Result<()> {
        if let Ok(mut st) = self.0.state.lock() {
            st.stop = true;
        }
        self.0.changed.notify_all();
        self.0.client.report_result(ok, stage, message)
    }
}

fn run(inner: &Inner) {
    let mut last_sent = std::time::Instant::now();
    loop {
        let (stage, done, total, message) = {
            let Ok(guard) = inner.state.lock() else {
                return;
            };
            let Ok((mut st, _)) = inner
                .changed
                .wait_timeout_while(guard, EVERY, |st| !st.dirty && !st.stop)
            else {
                return;
            };
            if st.stop {
                return;
            }
            if !st.dirty && st.progress.is_none() && last_sent.elapsed() < HEARTBEAT {
                continue;
            }
            st.dirty = false;
            let done = st.base + st.progress.as_ref().map_or(0, |p| p.bytes());
            (st.stage, done, st.total, st.message.clone())
        };
        let Some(stage) = stage else {
            continue;
        };
        last_sent = std::time::Instant::now();
        if let Err(e) = inner.client.report_progress(stage, done, total, &message)
            && let Ok(mut st) = inner.state.lock()
            && !st.warned
        {
            st.warned = true;
            eprintln!("rewind: warning: progress report to the server failed: {e:#}");
        }
        // At most one report every EVERY while restoring.
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The recovery report's hardware part: the drivers of the captured disks
/// and NICs against those present now, and what was done about the
/// initramfs. Printed on the console (`rewind: drivers: ...`) and sent to
/// the server in the final result, which `rewind status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct HardwareReport {
    pub disks: Vec<DriverChange>,
    pub nics: Vec<DriverChange>,
    /// `regenerated with update-initramfs -u -k all: ...` or `kept: ...`.
    pub initramfs: String,
}

/// One disk or NIC: captured, and present now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DriverChange {
    /// `disk vda -> nvme0n1`, `NIC lan0 -> eth0`.
    pub what: String,
    pub captured: String,
    pub present: String,
}

impl DriverChange {
    pub(super) fn changed(&self) -> bool {
        self.captured != self.present
    }

    fn line(&self) -> String {
        if self.changed() {
            format!("{}: {} -> {}", self.what, self.captured, self.present)
        } else {
            format!("{}: {} (same)", self.what, self.captured)
        }
    }
}

/// A disk's drivers as the report names them: the disk's driver, the
/// controller's when another, and the transport (`sd via ahci, sata`).
pub(super) fn disk_drivers(
    driver: Option<&str>,
    controller: Option<&str>,
    transport: Option<&str>,
) -> String {
    let mut s = driver.unwrap_or("unknown driver").to_string();
    if let Some(c) = controller.filter(|c| Some(*c) != driver) {
        s.push_str(&format!(" via {c}"));
    }
    if let Some(t) = transport {
        s.push_str(&format!(", {t}"));
    }
    s
}

impl HardwareReport {
    /// Every disk and NIC, changed or not: the console's line.
    pub(super) fn drivers_line(&self) -> String {
        let all: Vec<String> = self
            .disks
            .iter()
            .chain(&self.nics)
            .map(DriverChange::line)
            .collect();
        if all.is_empty() {
            "drivers: no disk or NIC to compare".into()
        } else {
            format!("drivers: {}", all.join("; "))
        }
    }

    /// What changed and what was done: the part of the result the server
    /// keeps.
    pub(super) fn summary(&self) -> String {
        let changed: Vec<String> = self
            .disks
            .iter()
            .chain(&self.nics)
            .filter(|c| c.changed())
            .map(DriverChange::line)
            .collect();
        format!(
            "drivers changed: {}; initramfs {}",
            if changed.is_empty() {
                "none".to_string()
            } else {
                changed.join(", ")
            },
            self.initramfs
        )
    }
}

/// `RTO 3m12s per GiB (restore stage 2m05s per GiB)`: the recovery's
/// time, and its restore stage's, for each GiB restored. The figure to
/// plan a site's recovery with; the two differ by the fixed costs (the
/// fetch, the layout, the bootloader) that a bigger machine does not pay
/// again per GiB. `None` when nothing was restored (no rate to give).
pub(super) fn rto_per_gib(total: Duration, restore: Duration, bytes: u64) -> Option<String> {
    if bytes == 0 {
        return None;
    }
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let per = |d: Duration| super::human_duration(Duration::from_secs_f64(d.as_secs_f64() / gib));
    Some(format!(
        "RTO {} per GiB (restore stage {} per GiB)",
        per(total),
        per(restore)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(what: &str, captured: &str, present: &str) -> DriverChange {
        DriverChange {
            what: what.into(),
            captured: captured.into(),
            present: present.into(),
        }
    }

    #[test]
    fn the_report_names_changed_drivers_and_the_initramfs_decision() {
        assert_eq!(
            disk_drivers(Some("virtio_blk"), Some("virtio_blk"), Some("virtio")),
            "virtio_blk, virtio"
        );
        assert_eq!(
            disk_drivers(Some("sd"), Some("ahci"), Some("sata")),
            "sd via ahci, sata"
        );
        assert_eq!(disk_drivers(None, None, None), "unknown driver");
        let r = HardwareReport {
            disks: vec![change(
                "disk vda -> nvme0n1",
                "virtio_blk, virtio",
                "nvme, nvme",
            )],
            nics: vec![
                change("NIC lan0 -> eth0", "virtio_net", "e1000e"),
                change("NIC lan1 -> eth1", "e1000e", "e1000e"),
            ],
            initramfs: "regenerated with update-initramfs -u -k all: disk vda (virtio) is now \
                        nvme0n1 (nvme)"
                .into(),
        };
        assert_eq!(
            r.drivers_line(),
            "drivers: disk vda -> nvme0n1: virtio_blk, virtio -> nvme, nvme; NIC lan0 -> eth0: \
             virtio_net -> e1000e; NIC lan1 -> eth1: e1000e (same)"
        );
        assert_eq!(
            r.summary(),
            "drivers changed: disk vda -> nvme0n1: virtio_blk, virtio -> nvme, nvme, NIC lan0 -> \
             eth0: virtio_net -> e1000e; initramfs regenerated with update-initramfs -u -k all: \
             disk vda (virtio) is now nvme0n1 (nvme)"
        );
        let same = HardwareReport {
            disks: vec![change("disk vda -> vda", "virtio_blk", "virtio_blk")],
            nics: Vec::new(),
            initramfs: "kept as restored (initramfs-tools): same disk controllers, NIC drivers \
                        and firmware mode"
                .into(),
        };
        assert_eq!(
            same.summary(),
            "drivers changed: none; initramfs kept as restored (initramfs-tools): same disk \
             controllers, NIC drivers and firmware mode"
        );
    }

    #[test]
    fn rto_is_given_per_gib() {
        let gib = 1u64 << 30;
        let line =
            super::rto_per_gib(Duration::from_secs(90), Duration::from_secs(60), gib / 2).unwrap();
        assert_eq!(line, "RTO 3m00s per GiB (restore stage 2m00s per GiB)");
        let line =
            super::rto_per_gib(Duration::from_secs(10), Duration::from_secs(4), 4 * gib).unwrap();
        assert_eq!(line, "RTO 2.5s per GiB (restore stage 1.0s per GiB)");
        assert_eq!(
            super::rto_per_gib(Duration::from_secs(9), Duration::ZERO, 0),
            None
        );
    }
}
