//! The server's catalog: tokens and recovery requests (with their progress),
//! two small JSON files under DIR/catalog written atomically (temporary
//! file, fsync, rename, fsync of the directory). Hosts and snapshots are not
//! in it: they are the per-host repositories themselves, so the catalog can
//! never disagree with the data.
//!
//! A request's life is here, as methods that check their transition and
//! save: [`Catalog::arm`] (a new request, replacing an armed one),
//! [`Catalog::mint_recovery_token`] (arming, and each boot script),
//! [`Catalog::report_progress`] (armed or running → running),
//! [`Catalog::finish`] (→ succeeded or failed) and [`Catalog::cancel`]
//! (→ cancelled). The last three revoke nothing the next one needs: a
//! request that is over has no recovery token left.
//!
//! The server holds it in a [`CatalogCell`]: a change is made on a copy,
//! saved, and only then swapped in, so a failed save (a full disk) changes
//! nothing, in memory or on disk. Readers take the current version (an
//! `Arc`) under a lock held for a pointer copy, never across a write or an
//! fsync: token checks on the async threads never wait for the disk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::auth::{self, Scope, TokenRecord};
use crate::api::{
    ApiError, CLAIM_LEASE_SECS, Claim, DiskChoice, MAX_CHOSEN_DISKS, MachineIdentity,
    ProgressReport, RecoveryProgress, RecoveryRequest, RefusedClaim, RequestState, ResultReport,
};

/// How many refused claims a request keeps.
const REFUSED_KEPT: usize = 10;

/// What a claim came to. A refusal is an outcome, not an error, so that it
/// is saved with the request (the operator sees it) before it is answered.
#[derive(Debug)]
pub enum ClaimOutcome {
    /// The claim's recovery token (shown once) and the request.
    Granted {
        request: RecoveryRequest,
        token: String,
        renewed: bool,
    },
    /// Refused, with the answer to give (409) and the request as saved.
    Refused {
        request: RecoveryRequest,
        error: ApiError,
    },
}

/// Seconds since the epoch, now (the server's clock).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Seconds since the epoch of an RFC 3339 time the server wrote.
fn secs(t: &str) -> i64 {
    crate::time::parse_rfc3339(t).unwrap_or(0)
}

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    dir: PathBuf,
    pub tokens: Vec<TokenRecord>,
    pub requests: Vec<RecoveryRequest>,
}

const TOKENS: &str = "tokens.json";
const REQUESTS: &str = "requests.json";

impl Catalog {
    pub fn load(dir: &Path) -> Result<Catalog> {
        crate::util::fs::create_dir_durable(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Catalog {
            dir: dir.to_path_buf(),
            tokens: read_json(&dir.join(TOKENS))?,
            requests: read_json(&dir.join(REQUESTS))?,
        })
    }

    pub fn save_tokens(&self) -> Result<()> {
        write_json(&self.dir.join(TOKENS), &self.tokens)
    }

    pub fn save_requests(&self) -> Result<()> {
        write_json(&self.dir.join(REQUESTS), &self.requests)
    }

    pub fn has_admin(&self) -> bool {
        self.tokens.iter().any(|t| t.scope == Scope::Admin)
    }

    /// The request a host has armed or running, if any (an expired one
    /// included: see [`Catalog::live_request`]).
    pub fn active_request(&self, host: &str) -> Option<&RecoveryRequest> {
        self.requests
            .iter()
            .rev()
            .find(|r| r.host == host && r.state.is_active())
    }

    /// The request a host has running, or armed and not expired.
    pub fn live_request(&self, host: &str, now: i64) -> Option<&RecoveryRequest> {
        self.requests
            .iter()
            .rev()
            .find(|r| r.host == host && r.is_live(now))
    }

    /// The live requests that name this machine (by the ids the request
    /// allows, or as the machine that claimed it). A boot identifies only
    /// among these; `any_machine` never matches here.
    pub fn live_requests_naming(
        &self,
        machine: &MachineIdentity,
        now: i64,
    ) -> Vec<&RecoveryRequest> {
        self.requests
            .iter()
            .filter(|r| r.is_live(now) && r.names_machine(machine))
            .collect()
    }

    /// Whether a recovery token may act now: its request is live and,
    /// for a claim's token, it is the claim's latest token and its lease
    /// has not lapsed. `Err` says why not (answered 401). Other helpers
    /// (key escrow) call this to ask "is this recovery token's request
    /// active".
    pub fn check_recovery_token(&self, rec: &auth::TokenRecord, now: i64) -> Result<(), String> {
        let Scope::Recovery { request, .. } = &rec.scope else {
            return Err("not a recovery token".into());
        };
        let Some(r) = self.request(request) else {
            return Err(format!("recovery request {request} is gone"));
        };
        if r.expired_at(now) {
            return Err(format!(
                "recovery request {request} expired at {} without starting: arm a new one",
                r.expires.as_deref().unwrap_or("?")
            ));
        }
        if !r.state.is_active() {
            return Err(format!(
                "recovery request {request} is over: its token no longer works"
            ));
        }
        if rec.claimed {
            let Some(c) = &r.claim else {
                return Err(format!("recovery request {request} has no claim"));
            };
            if c.token != rec.id {
                return Err(format!(
                    "this claim of {request} was replaced by a newer one (the machine claimed it again)"
                ));
            }
            if secs(&c.lease_until) <= now {
                return Err(format!(
                    "the claim of {request} lapsed at {} (no progress reported): claim it again",
                    c.lease_until
                ));
            }
        }
        Ok(())
    }

    pub fn request(&self, id: &str) -> Option<&RecoveryRequest> {
        self.requests.iter().find(|r| r.id == id)
    }

    pub fn request_mut(&mut self, id: &str) -> Option<&mut RecoveryRequest> {
        self.requests.iter_mut().find(|r| r.id == id)
    }

    /// Revoke the recovery tokens of a request.
    pub fn revoke_recovery_tokens(&mut self, request: &str) {
        self.tokens
            .retain(|t| !matches!(&t.scope, Scope::Recovery { request: r, .. } if r == request));
    }

    /// Whether a recovery token's request is still armed or running.
    pub fn is_active(&self, request: &str) -> bool {
        self.request(request).is_some_and(|r| r.state.is_active())
    }

    // ---- the request state machine ----

    /// Armed requests past their expiry become `cancelled` ("expired"),
    /// their tokens revoked; saved by the caller's change.
    pub fn expire_due(&mut self, now: i64) -> bool {
        let now_text = crate::time::format_utc(now);
        let mut expired = Vec::new();
        for r in self.requests.iter_mut().filter(|r| r.expired_at(now)) {
            r.state = RequestState::Cancelled;
            r.updated = now_text.clone();
            r.result = Some(format!(
                "expired at {} without starting",
                r.expires.as_deref().unwrap_or("?")
            ));
            expired.push(r.id.clone());
        }
        for id in &expired {
            self.revoke_recovery_tokens(id);
        }
        !expired.is_empty()
    }

    /// A machine claims a request: the first machine the request allows
    /// gets a recovery token bound to it (the claim); the same machine
    /// claiming again (a reboot) gets the claim renewed and a new token
    /// (the previous one stops); any other machine is refused, and the
    /// refusal kept on the request. A request that is over, or armed past
    /// its expiry, is never claimed.
    pub fn claim(
        &mut self,
        id: &str,
        machine: &MachineIdentity,
        now: i64,
    ) -> Result<ClaimOutcome, ApiError> {
        let now_text = crate::time::format_utc(now);
        let lease_until = crate::time::format_utc(now + CLAIM_LEASE_SECS as i64);
        let expired = self
            .request(id)
            .ok_or_else(|| ApiError::NotFound(format!("no request {id}")))?
            .expired_at(now);
        if expired {
            self.expire_due(now);
        }
        let r = self
            .request_mut(id)
            .ok_or_else(|| ApiError::NotFound(format!("no request {id}")))?;
        let refusal = if !r.state.is_active() {
            Some(match r.state {
                RequestState::Succeeded => format!(
                    "recovery request {id} of {} already succeeded: it never starts another recovery",
                    r.host
                ),
                _ if expired => format!(
                    "recovery request {id} of {} expired at {} without starting: arm a new one",
                    r.host,
                    r.expires.as_deref().unwrap_or("?")
                ),
                state => format!("recovery request {id} of {} is {state}", r.host),
            })
        } else {
            match &r.claim {
                Some(c) if !c.machine.same_machine(machine) => Some(format!(
                    "recovery request {id} of {} is claimed by another machine ({}); this one is {}",
                    r.host,
                    c.machine.describe(),
                    machine.describe()
                )),
                Some(_) => None,
                None if !r.allows_machine(machine) => Some(format!(
                    "this machine ({}) is not the one recovery request {id} of {} allows ({}): \
                     name it with `rewind request {} --machine uuid=...|serial=...|mac=...` \
                     or allow any machine with --any-machine",
                    machine.describe(),
                    r.host,
                    if r.machines.is_empty() {
                        "none named".to_string()
                    } else {
                        r.machines.join(", ")
                    },
                    r.host
                )),
                None => None,
            }
        };
        if let Some(reason) = refusal {
            r.refused_claims.push(RefusedClaim {
                time: now_text.clone(),
                machine: machine.clone(),
                reason: reason.clone(),
            });
            let extra = r.refused_claims.len().saturating_sub(REFUSED_KEPT);
            r.refused_claims.drain(..extra);
            r.updated = now_text;
            let request = r.clone();
            self.save_requests()?;
            if expired {
                self.save_tokens()?;
            }
            return Ok(ClaimOutcome::Refused {
                request,
                error: ApiError::Conflict(reason),
            });
        }
        let scope = Scope::Recovery {
            host: r.host.clone(),
            request: r.id.clone(),
        };
        let (token, mut rec) = auth::generate(scope, "claim");
        rec.claimed = true;
        let renewed = r.claim.is_some();
        let claim = match r.claim.take() {
            Some(c) => Claim {
                token: rec.id.clone(),
                renewed: now_text.clone(),
                lease_until,
                claims: c.claims + 1,
                ..c
            },
            None => Claim {
                machine: machine.clone(),
                token: rec.id.clone(),
                claimed: now_text.clone(),
                renewed: now_text.clone(),
                lease_until,
                claims: 1,
                disks: Vec::new(),
            },
        };
        r.claim = Some(claim);
        r.updated = now_text;
        let request = r.clone();
        // Only the latest claim token works; the request's own (printed)
        // token stays, for reading the request and claiming.
        self.tokens.retain(|t| {
            !(t.claimed && matches!(&t.scope, Scope::Recovery { request: q, .. } if q == id))
        });
        self.tokens.push(rec);
        self.save_requests()?;
        self.save_tokens()?;
        Ok(ClaimOutcome::Granted {
            request,
            token,
            renewed,
        })
    }

    /// Arm a new request (state `armed`): refused while the host has one
    /// running; an armed one is replaced (cancelled, its token revoked).
    pub fn arm(&mut self, req: RecoveryRequest) -> Result<RecoveryRequest, ApiError> {
        let host = &req.host;
        if let Some(running) = self
            .requests
            .iter()
            .find(|r| &r.host == host && r.state == RequestState::Running)
        {
            return Err(ApiError::Conflict(format!(
                "recovery {} of {host} is running; cancel it first",
                running.id
            )));
        }
        let replaced: Vec<String> = self
            .requests
            .iter_mut()
            .filter(|r| &r.host == host && r.state == RequestState::Armed)
            .map(|r| {
                r.state = RequestState::Cancelled;
                r.updated = req.created.clone();
                r.result = Some("replaced by a newer request".into());
                r.id.clone()
            })
            .collect();
        for id in replaced {
            self.revoke_recovery_tokens(&id);
        }
        let req = RecoveryRequest {
            state: RequestState::Armed,
            ..req
        };
        self.requests.push(req.clone());
        self.save_requests()?;
        Ok(req)
    }

    /// A recovery token for a request, replacing any earlier one.
    pub fn mint_recovery_token(&mut self, id: &str) -> Result<String, ApiError> {
        let req = self
            .request(id)
            .ok_or_else(|| ApiError::NotFound(format!("no request {id}")))?;
        let scope = Scope::Recovery {
            host: req.host.clone(),
            request: req.id.clone(),
        };
        self.revoke_recovery_tokens(id);
        let (token, rec) = auth::generate(scope, "recovery");
        self.tokens.push(rec);
        self.save_tokens()?;
        Ok(token)
    }

    /// The image reports progress: the request is `running`, with the
    /// report and its rate (bytes per second since the stage started).
    pub fn report_progress(
        &mut self,
        id: &str,
        p: ProgressReport,
        now: &str,
    ) -> Result<RecoveryRequest, ApiError> {
        let r = self.active_mut(id)?;
        let now_secs = crate::time::parse_rfc3339(now).unwrap_or(0);
        let stage_started = match &r.progress {
            Some(prev) if prev.stage == p.stage => prev.stage_started.clone(),
            _ => now.to_string(),
        };
        let elapsed = now_secs - crate::time::parse_rfc3339(&stage_started).unwrap_or(now_secs);
        r.progress = Some(RecoveryProgress {
            rate: if elapsed > 0 {
                p.bytes_done as f64 / elapsed as f64
            } else {
                0.0
            },
            stage: p.stage,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            message: p.message,
            stage_started,
            time: now.to_string(),
        });
        r.state = RequestState::Running;
        r.updated = now.to_string();
        if let Some(c) = &mut r.claim {
            c.renewed = now.to_string();
            c.lease_until = crate::time::format_utc(now_secs + CLAIM_LEASE_SECS as i64);
        }
        let r = r.clone();
        self.save_requests()?;
        Ok(r)
    }

    /// The claimed machine records the disks its plan chose, before its
    /// first write (a claim's token: the caller checks). They replace what
    /// an earlier run recorded; the claim's lease is renewed. The record is
    /// the claim's: only this machine's later claims of this request see
    /// it, and a request that is over, or a new request, has none in use.
    pub fn record_disks(
        &mut self,
        id: &str,
        disks: Vec<DiskChoice>,
        now: &str,
    ) -> Result<RecoveryRequest, ApiError> {
        if disks.len() > MAX_CHOSEN_DISKS {
            return Err(ApiError::BadRequest(format!(
                "{} disks: at most {MAX_CHOSEN_DISKS} are recorded",
                disks.len()
            )));
        }
        for d in &disks {
            let fields = [
                Some(&d.captured),
                d.serial.as_ref(),
                d.wwn.as_ref(),
                d.hw_path.as_ref(),
                d.table_id.as_ref(),
            ];
            let known = d.serial.is_some()
                || d.wwn.is_some()
                || (d.hw_path.is_some() && d.table_id.is_some());
            if d.captured.is_empty() || fields.iter().flatten().any(|f| f.len() > 256) || !known {
                return Err(ApiError::BadRequest(format!(
                    "disk record {d:?}: a captured disk's name and the present disk's serial or \
                     WWN, or its hardware path and partition table id (each at most 256 bytes), \
                     are needed"
                )));
            }
        }
        let now_secs = crate::time::parse_rfc3339(now).unwrap_or(0);
        let r = self.active_mut(id)?;
        let Some(c) = r.claim.as_mut() else {
            return Err(ApiError::Conflict(format!(
                "request {id} is not claimed: claim it (POST /v1/claim) before recording disks"
            )));
        };
        c.disks = disks;
        c.renewed = now.to_string();
        c.lease_until = crate::time::format_utc(now_secs + CLAIM_LEASE_SECS as i64);
        r.updated = now.to_string();
        let r = r.clone();
        self.save_requests()?;
        Ok(r)
    }

    /// The image reports how the recovery ended: `succeeded` or `failed`,
    /// `stage: message` as the result; its token ends here (one recovery
    /// per request).
    pub fn finish(
        &mut self,
        id: &str,
        rep: ResultReport,
        now: &str,
    ) -> Result<RecoveryRequest, ApiError> {
        let r = self.active_mut(id)?;
        r.state = if rep.ok {
            RequestState::Succeeded
        } else {
            RequestState::Failed
        };
        r.updated = now.to_string();
        r.result = Some(format!("{}: {}", rep.stage, rep.message));
        let r = r.clone();
        self.revoke_recovery_tokens(id);
        self.save_requests()?;
        self.save_tokens()?;
        Ok(r)
    }

    /// An operator cancels an armed or running request; its token ends.
    pub fn cancel(&mut self, id: &str, now: &str) -> Result<RecoveryRequest, ApiError> {
        let r = self
            .request_mut(id)
            .ok_or_else(|| ApiError::NotFound(format!("no request {id}")))?;
        if !r.state.is_active() {
            return Err(ApiError::Conflict(format!(
                "request {id} is already {}",
                r.state
            )));
        }
        r.state = RequestState::Cancelled;
        r.updated = now.to_string();
        r.result = Some("cancelled by an operator".into());
        let r = r.clone();
        self.revoke_recovery_tokens(id);
        self.save_requests()?;
        self.save_tokens()?;
        Ok(r)
    }

    /// A request the image may still report on.
    fn active_mut(&mut self, id: &str) -> Result<&mut RecoveryRequest, ApiError> {
        let r = self
            .request_mut(id)
            .ok_or_else(|| ApiError::NotFound("no such request".into()))?;
        if !r.state.is_active() {
            return Err(ApiError::Conflict(format!("request {id} is {}", r.state)));
        }
        Ok(r)
    }
}

/// The server's catalog: the saved version readers see, and the lock that
/// orders changes.
#[derive(Debug)]
pub struct CatalogCell {
    current: Mutex<Arc<Catalog>>,
    /// Held by one change at a time, across its save (blocking threads only).
    changing: Mutex<()>,
}

impl CatalogCell {
    pub fn new(catalog: Catalog) -> CatalogCell {
        CatalogCell {
            current: Mutex::new(Arc::new(catalog)),
            changing: Mutex::new(()),
        }
    }

    /// The current (saved) catalog.
    pub fn read(&self) -> Arc<Catalog> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Change a copy with `f` (which saves what it changes); on success the
    /// copy becomes the current catalog, on failure nothing changed. Blocks
    /// on the disk: call it on the blocking pool.
    pub fn change<T, E>(&self, f: impl FnOnce(&mut Catalog) -> Result<T, E>) -> Result<T, E> {
        let _one_at_a_time = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut copy = Catalog::clone(&self.read());
        let out = f(&mut copy)?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(copy);
        Ok(out)
    }
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    crate::util::fs::write_atomic(path, &bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Stage;

    const T0: &str = "2026-11-25T14:00:00Z";
    const T1: &str = "2026-11-25T14:00:10Z";

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::load(dir.path()).unwrap();
        (dir, cat)
    }

    fn request(id: &str, host: &str) -> RecoveryRequest {
        RecoveryRequest {
            id: id.into(),
            host: host.into(),
            at: "latest".into(),
            snapshot: "s1".into(),
            snapshot_time: "2026-11-24T06:00:00Z".into(),
            created: T0.into(),
            updated: T0.into(),
            ..RecoveryRequest::default()
        }
    }

    fn progress(stage: &str, done: u64) -> ProgressReport {
        ProgressReport {
            stage: stage.parse().unwrap(),
            bytes_done: done,
            bytes_total: 1000,
            message: String::new(),
        }
    }

    fn recovery_tokens(cat: &Catalog, id: &str) -> usize {
        cat.tokens
            .iter()
            .filter(|t| matches!(&t.scope, Scope::Recovery { request, .. } if request == id))
            .count()
    }

    #[test]
    fn arm_replaces_an_armed_request_and_is_saved() {
        let (dir, mut cat) = catalog();
        cat.arm(request("r1", "web1")).unwrap();
        cat.mint_recovery_token("r1").unwrap();
        cat.arm(request("o1", "other")).unwrap();
        let r2 = cat.arm(request("r2", "web1")).unwrap();
        assert_eq!(r2.state, RequestState::Armed);
        let r1 = cat.request("r1").unwrap();
        assert_eq!(r1.state, RequestState::Cancelled);
        assert_eq!(r1.result.as_deref(), Some("replaced by a newer request"));
        assert_eq!(recovery_tokens(&cat, "r1"), 0, "its token is revoked");
        assert_eq!(cat.active_request("web1").unwrap().id, "r2");
        assert_eq!(cat.active_request("other").unwrap().id, "o1");
        let again = Catalog::load(dir.path()).unwrap();
        assert_eq!(again.requests, cat.requests);
    }

    #[test]
    fn arm_is_refused_while_one_runs() {
        let (_dir, mut cat) = catalog();
        cat.arm(request("r1", "web1")).unwrap();
        cat.report_progress("r1", progress("fetch", 0), T0).unwrap();
        let e = cat.arm(request("r2", "web1")).unwrap_err();
        assert!(matches!(e, ApiError::Conflict(_)), "{e}");
        assert!(cat.request("r2").is_none());
        assert_eq!(cat.request("r1").unwrap().state, RequestState::Running);
    }

    #[test]
    fn minting_replaces_the_earlier_token() {
        let (_dir, mut cat) = catalog();
        cat.arm(request("r1", "web1")).unwrap();
        let a = cat.mint_recovery_token("r1").unwrap();
        let b = cat.mint_recovery_token("r1").unwrap();
        assert_eq!(recovery_tokens(&cat, "r1"), 1);
        assert!(auth::verify(&cat.tokens, &a).is_none());
        assert!(auth::verify(&cat.tokens, &b).is_some());
        assert!(matches!(
            cat.mint_recovery_token("nope"),
            Err(ApiError::NotFound(_))
        ));
    }

    #[test]
    fn progress_runs_the_request_and_computes_the_rate() {
        let (_dir, mut cat) = catalog();
        cat.arm(request("r1", "web1")).unwrap();
        let r = cat
            .report_progress("r1", progress("restore", 0), T0)
            .unwrap();
        assert_eq!(r.state, RequestState::Running);
        let r = cat
            .report_progress("r1", progress("restore", 500), T1)
            .unwrap();
        let p = r.progress.unwrap();
        assert_eq!((p.stage_started.as_str(), p.time.as_str()), (T0, T1));
        assert_eq!(p.rate, 50.0, "500 bytes in 10 s");
        assert_eq!(r.updated, T1);
        // A new stage starts its own clock.
        let r = cat
            .report_progress("r1", progress("configure", 0), T1)
            .unwrap();
        assert_eq!(r.progress.unwrap().stage_started, T1);
    }

    #[test]
    fn finish_ends_the_request_and_its_token() {
        let (_dir, mut cat) = catalog();
        cat.arm(request("r1", "web1")).unwrap();
        cat.mint_recovery_token("r1").unwrap();
        let fail = ResultReport {
            ok: false,
            stage: Stage::Format,
            message: "mkfs failed".into(),
        };
        let r = cat.finish("r1", fail, T1).unwrap();
        assert_eq!(r.state, RequestState::Failed);
        assert_eq!(r.result.as_deref(), Some("format: mkfs failed"));
        assert_eq!(recovery_tokens(&cat, "r1"), 0);
        assert!(!cat.is_active("r1"));
        // Over: no more reports.
        assert!(matches!(
            cat.report_progress("r1", progress("restore", 1), T1),
            Err(ApiError::Conflict(_))
        ));
        cat.arm(request("r2", "web1")).unwrap();
        let ok = ResultReport {
            ok: true,
            stage: Stage::Finish,
            message: "recovered".into(),
        };
        let r = cat.finish("r2", ok, T1).unwrap();
        assert_eq!(r.state, RequestState::Succeeded);
        assert_eq!(r.result.as_deref(), Some("finish: recovered"));
    }

    /// A save that fails (here: requests.json cannot be replaced, as on a
    /// full disk) leaves the catalog as it was, in memory and on disk: a
    /// cancelled request does not come back armed after a restart.
    #[test]
    fn a_failed_save_changes_nothing() {
        let (dir, mut cat) = catalog();
        cat.arm(request("r1", "web1")).unwrap();
        let token = cat.mint_recovery_token("r1").unwrap();
        let cell = CatalogCell::new(cat);
        let path = dir.path().join(REQUESTS);
        let saved = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap(); // a rename over it fails
        let e = cell.change(|c| c.cancel("r1", T1)).unwrap_err();
        assert!(matches!(e, ApiError::Internal(_)), "{e}");
        let now = cell.read();
        assert_eq!(now.request("r1").unwrap().state, RequestState::Armed);
        assert!(auth::verify(&now.tokens, &token).is_some(), "token kept");
        // What a restart reads agrees with memory.
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, saved).unwrap();
        let again = Catalog::load(dir.path()).unwrap();
        assert_eq!(again.requests, now.requests);
        // And a change that succeeds is seen by readers.
        cell.change(|c| c.cancel("r1", T1)).unwrap();
        assert_eq!(
            cell.read().request("r1").unwrap().state,
            RequestState::Cancelled
        );
        assert!(auth::verify(&cell.read().tokens, &token).is_none());
    }

    fn machine(uuid: Option<&str>, mac: &str) -> MachineIdentity {
        let dmi = crate::manifest::Dmi {
            system_uuid: uuid.map(str::to_string),
            ..Default::default()
        };
        MachineIdentity::new(Some(&dmi), &[mac.to_string()])
    }

    const UUID_A: &str = "4c4c4544-0042-3510-8051-b7c04f4e4a31";
    const UUID_B: &str = "11111111-2222-3333-4444-555555555555";

    fn claimed_token(out: ClaimOutcome) -> String {
        match out {
            ClaimOutcome::Granted { token, .. } => token,
            ClaimOutcome::Refused { error, .. } => panic!("refused: {error}"),
        }
    }

    fn refused(out: ClaimOutcome) -> String {
        match out {
            ClaimOutcome::Refused { error, .. } => error.to_string(),
            ClaimOutcome::Granted { .. } => panic!("granted"),
        }
    }

    /// The claim's token: one machine, its latest token only, a lease
    /// renewed by progress and lapsing without it.
    #[test]
    fn a_claim_binds_one_machine_and_its_lease_lapses_without_progress() {
        let (_dir, mut cat) = catalog();
        let t0 = secs(T0);
        let mut r = request("r1", "web1");
        r.machines = vec![format!("uuid={UUID_A}")];
        r.expires = Some(crate::time::format_utc(t0 + 3600));
        cat.arm(r).unwrap();
        let printed = cat.mint_recovery_token("r1").unwrap();
        let a = machine(Some(UUID_A), "52:54:00:00:00:0a");
        let first = claimed_token(cat.claim("r1", &a, t0).unwrap());
        let rec = |cat: &Catalog, t: &str| {
            auth::verify(&cat.tokens, t)
                .unwrap_or_else(|| panic!("{t} not in {:?}", cat.tokens))
                .clone()
        };
        assert!(cat.check_recovery_token(&rec(&cat, &first), t0).is_ok());
        assert!(rec(&cat, &first).claimed && !rec(&cat, &printed).claimed);
        // Another machine, even with the same MAC and no DMI: refused, kept.
        let b = machine(None, "52:54:00:00:00:0a");
        let why = refused(cat.claim("r1", &b, t0 + 1).unwrap());
        assert!(why.contains("claimed by another machine"), "{why}");
        let why = refused(
            cat.claim("r1", &machine(Some(UUID_B), "52:54:00:00:00:0b"), t0 + 2)
                .unwrap(),
        );
        assert!(why.contains("claimed by another machine"), "{why}");
        assert_eq!(cat.request("r1").unwrap().refused_claims.len(), 2);
        assert!(
            cat.check_recovery_token(&rec(&cat, &first), t0 + 3).is_ok(),
            "not disturbed"
        );
        // Progress renews the lease; without it the token lapses.
        let at = |s: i64| crate::time::format_utc(s);
        cat.report_progress("r1", progress("restore", 1), &at(t0 + 600))
            .unwrap();
        let lease = CLAIM_LEASE_SECS as i64;
        assert!(
            cat.check_recovery_token(&rec(&cat, &first), t0 + lease + 10)
                .is_ok()
        );
        let e = cat
            .check_recovery_token(&rec(&cat, &first), t0 + 600 + lease)
            .unwrap_err();
        assert!(e.contains("lapsed"), "{e}");
        // The same machine claims again (a reboot): renewed, the old token ends.
        let old = rec(&cat, &first);
        let again = claimed_token(cat.claim("r1", &a, t0 + 2000).unwrap());
        assert!(auth::verify(&cat.tokens, &first).is_none(), "revoked");
        let e = cat.check_recovery_token(&old, t0 + 2000).unwrap_err();
        assert!(e.contains("replaced"), "{e}");
        assert!(
            cat.check_recovery_token(&rec(&cat, &again), t0 + 2000)
                .is_ok()
        );
        let r = cat.request("r1").unwrap();
        assert_eq!(
            (r.state, r.claim.as_ref().unwrap().claims),
            (RequestState::Running, 2)
        );
        // Over: never claimed again.
        let ok = ResultReport {
            ok: true,
            stage: Stage::Finish,
            message: String::new(),
        };
        cat.finish("r1", ok, &at(t0 + 2100)).unwrap();
        let why = refused(cat.claim("r1", &a, t0 + 2200).unwrap());
        assert!(why.contains("already succeeded"), "{why}");
    }

    /// Issue 15 point 4, a run cut before its restore started: the claim
    /// remembers the disks its machine's plan chose; the same machine's
    /// next claim of the same request is answered with them, and nothing
    /// else sees them: not another machine, not a new request, not the
    /// request's printed token (the route needs a claim's), not a request
    /// that is over.
    #[test]
    fn a_claim_remembers_the_disks_its_machine_chose() {
        let (dir, mut cat) = catalog();
        let t0 = secs(T0);
        let at = |s: i64| crate::time::format_utc(s);
        let mut r = request("r1", "web1");
        r.machines = vec![format!("uuid={UUID_A}")];
        cat.arm(r).unwrap();
        let chosen = vec![
            DiskChoice {
                captured: "vda".into(),
                serial: Some("S3Z9NB0K123456".into()),
                wwn: None,
                size: 20 << 30,

                ..Default::default()
            },
            DiskChoice {
                captured: "vdb".into(),
                serial: None,
                wwn: Some("naa.5000c500a1b2c3d4".into()),
                size: 40 << 30,

                ..Default::default()
            },
        ];
        // Not claimed yet: nothing to record on.
        let e = cat.record_disks("r1", chosen.clone(), &at(t0)).unwrap_err();
        assert!(matches!(e, ApiError::Conflict(_)), "{e}");
        let a = machine(Some(UUID_A), "52:54:00:00:00:0a");
        let Ok(ClaimOutcome::Granted {
            request: answered, ..
        }) = cat.claim("r1", &a, t0)
        else {
            panic!("not granted")
        };
        assert!(
            answered.claim.unwrap().disks.is_empty(),
            "a first run has none"
        );
        let r = cat.record_disks("r1", chosen.clone(), &at(t0 + 5)).unwrap();
        let c = r.claim.unwrap();
        assert_eq!(c.disks, chosen);
        assert_eq!(
            c.lease_until,
            at(t0 + 5 + CLAIM_LEASE_SECS as i64),
            "renewed"
        );
        // A record the plan could not know a disk again by: refused.
        let unknowable = vec![DiskChoice {
            captured: "vdc".into(),
            size: 1,
            ..DiskChoice::default()
        }];
        let e = cat.record_disks("r1", unknowable, &at(t0 + 6)).unwrap_err();
        assert!(matches!(e, ApiError::BadRequest(_)), "{e}");
        let too_many = vec![chosen[0].clone(); MAX_CHOSEN_DISKS + 1];
        assert!(cat.record_disks("r1", too_many, &at(t0 + 6)).is_err());

        // The machine is reset while formatting and boots again: its claim
        // is renewed and answered with the disks, also after a restart.
        let mut cat = Catalog::load(dir.path()).unwrap();
        let Ok(ClaimOutcome::Granted {
            request: answered,
            renewed,
            ..
        }) = cat.claim("r1", &a, t0 + 300)
        else {
            panic!("not granted")
        };
        assert!(renewed);
        assert_eq!(answered.claim.unwrap().disks, chosen);
        // Another machine is refused, and its refusal carries nothing.
        let b = machine(Some(UUID_B), "52:54:00:00:00:0b");
        let Ok(ClaimOutcome::Refused { error, .. }) = cat.claim("r1", &b, t0 + 301) else {
            panic!("granted to another machine")
        };
        assert!(!error.to_string().contains("S3Z9NB0K123456"), "{error}");

        // Over: nothing more is recorded, and a new request of the host
        // starts with no disks of the old one.
        let ok = ResultReport {
            ok: false,
            stage: Stage::Format,
            message: "cut".into(),
        };
        cat.finish("r1", ok, &at(t0 + 400)).unwrap();
        let e = cat
            .record_disks("r1", chosen.clone(), &at(t0 + 401))
            .unwrap_err();
        assert!(matches!(e, ApiError::Conflict(_)), "{e}");
        let mut r2 = request("r2", "web1");
        r2.machines = vec![format!("uuid={UUID_A}")];
        cat.arm(r2).unwrap();
        let Ok(ClaimOutcome::Granted {
            request: answered,
            renewed,
            ..
        }) = cat.claim("r2", &a, t0 + 500)
        else {
            panic!("not granted")
        };
        assert!(!renewed);
        assert!(
            answered.claim.unwrap().disks.is_empty(),
            "another request's disks"
        );
    }

    #[test]
    fn an_expired_request_never_starts() {
        let (_dir, mut cat) = catalog();
        let t0 = secs(T0);
        let mut r = request("r1", "web1");
        r.any_machine = true;
        r.expires = Some(crate::time::format_utc(t0 + 60));
        cat.arm(r).unwrap();
        let printed = cat.mint_recovery_token("r1").unwrap();
        let rec = auth::verify(&cat.tokens, &printed).unwrap().clone();
        assert!(cat.check_recovery_token(&rec, t0 + 59).is_ok());
        assert!(cat.live_request("web1", t0 + 59).is_some());
        assert!(cat.check_recovery_token(&rec, t0 + 60).is_err());
        assert!(cat.live_request("web1", t0 + 60).is_none());
        let why = refused(
            cat.claim("r1", &machine(None, "52:54:00:00:00:0a"), t0 + 61)
                .unwrap(),
        );
        assert!(why.contains("expired"), "{why}");
        let r = cat.request("r1").unwrap();
        assert_eq!(r.state, RequestState::Cancelled);
        assert!(r.result.as_deref().unwrap().starts_with("expired at"));
        assert_eq!(recovery_tokens(&cat, "r1"), 0);
    }

    #[test]
    fn cancel_only_what_is_active() {
        let (_dir, mut cat) = catalog();
        cat.arm(request("r1", "web1")).unwrap();
        cat.mint_recovery_token("r1").unwrap();
        let r = cat.cancel("r1", T1).unwrap();
        assert_eq!(r.state, RequestState::Cancelled);
        assert_eq!(r.result.as_deref(), Some("cancelled by an operator"));
        assert_eq!(recovery_tokens(&cat, "r1"), 0);
        match cat.cancel("r1", T1) {
            Err(ApiError::Conflict(m)) => assert_eq!(m, "request r1 is already cancelled"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(cat.cancel("nope", T1), Err(ApiError::NotFound(_))));
    }
}
