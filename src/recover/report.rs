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
