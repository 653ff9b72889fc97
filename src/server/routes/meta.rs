//! About the server: the versions it speaks, its counters.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;

use super::Shared;
use crate::api::{Stats, Versions};
use crate::server::extract::Admin;

/// No token needed: a client learns whether it can talk to this server
/// before it has one that works (only version numbers are told).
pub(super) async fn version() -> axum::Json<Versions> {
    axum::Json(Versions::this_build())
}

pub(super) async fn stats(State(s): State<Shared>, _: Admin) -> axum::Json<Stats> {
    let st = &s.stats;
    axum::Json(Stats {
        pack_bytes_received: st.pack_bytes_received.load(Relaxed),
        packs_received: st.packs_received.load(Relaxed),
        packs_stored: st.packs_stored.load(Relaxed),
        bytes_sent: st.bytes_sent.load(Relaxed),
        snapshots_committed: st.snapshots_committed.load(Relaxed),
    })
}
