//! Talking to the recovery server: who this token is, which host this
//! machine is and whether a recovery of it is armed, the manifest, the
//! repository.
//!
//! Tokens the image may be given (docs/boot.md):
//! - a request's recovery token (what `rewind request` prints): it names
//!   the host and the request, and may only read the request and claim it;
//! - a boot or admin token (baked into a site's ISO, or put on the kernel
//!   command line by the server's iPXE script): the host and its request
//!   are found by this machine's identity (MACs, DMI);
//! - a host token: found by MAC, reads the data, but cannot report progress.
//!
//! Before anything is read for a recovery, the image claims the request
//! with this machine's identity (its DMI and MACs, `POST /v1/claim`): the
//! server binds the request to the first machine it allows and answers a
//! recovery token for this machine only, working while progress arrives.
//! Another machine's claim is refused; this machine claiming again (a
//! reboot) renews the claim.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};

use crate::api::{ApiError, ClaimRequest, MachineIdentity, RecoveryRequest, TokenKind};
use crate::client::{Client, HttpBackend, api_error};
use crate::init::cmdline::Settings;
use crate::manifest::{self, Manifest};
use crate::repo::Repo;

/// A recovery request, as the image reads it from the server.
pub(super) type RequestInfo = RecoveryRequest;

/// Which machine this is, and its armed request if any.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub host: String,
    pub request: Option<RequestInfo>,
}

pub(super) struct Session {
    client: Arc<Client>,
    server: String,
    trust: crate::client::Trust,
    retry: std::time::Duration,
    /// The token's kind: recovery, boot, admin or host.
    pub kind: TokenKind,
    /// MAC addresses of this machine's network interfaces.
    pub macs: Vec<String>,
    /// This machine as a claim presents it: DMI and MACs.
    pub machine: MachineIdentity,
    /// The claim's data client (its token bound to this machine), once
    /// the request is claimed.
    recovery: Mutex<Option<Arc<Client>>>,
    /// The request claimed, to claim it again when the claim lapsed.
    claimed: Mutex<Option<String>>,
    /// The disks an earlier run of the claimed request, on this machine,
    /// recorded on its claim (the claim's answer).
    chosen_before: Mutex<Vec<crate::api::DiskChoice>>,
}

impl Session {
    pub(super) fn open(s: &Settings, ca: Option<&std::path::Path>) -> Result<Session> {
        let server = s.server.clone().context(
            "no recovery server: give rewind.server=URL on the kernel command line (docs/boot.md)",
        )?;
        let token = s.token.clone().context(
            "no token: give rewind.token=TOKEN on the kernel command line (docs/boot.md)",
        )?;
        let mut client = Client::new(&server, &token, &s.trust(ca))?;
        client.retry_for = s.retry;
        let client = Arc::new(client);
        let kind = client
            .whoami()
            .context("cannot learn from the server what this token may do")?
            .scope
            .kind();
        let mut macs: Vec<String> = crate::netcfg::interfaces(std::path::Path::new("/sys"))
            .iter()
            .map(|i| i.mac_text())
            .collect();
        macs.dedup();
        let dmi = crate::probe::system::read_dmi(std::path::Path::new("/sys"));
        let machine = MachineIdentity::new(dmi.as_ref(), &macs);
        Ok(Session {
            client,
            server,
            trust: s.trust(ca),
            retry: s.retry,
            kind,
            macs,
            machine,
            recovery: Mutex::new(None),
            claimed: Mutex::new(None),
            chosen_before: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn base(&self) -> &str {
        &self.client.base
    }

    /// Which host this is and its armed request.
    pub(super) fn find_target(&self, s: &Settings) -> Result<Target> {
        if self.kind == TokenKind::Recovery {
            let req = self.client.my_request()?;
            if let Some(h) = s.host.as_deref().filter(|h| *h != req.host) {
                bail!(
                    "rewind.host={h}, but the token is for the recovery of {}",
                    req.host
                );
            }
            return Ok(Target {
                host: req.host.clone(),
                request: Some(req),
            });
        }
        if self.macs.is_empty() && s.host.is_none() {
            bail!("no network interface to identify this machine by: give rewind.host=HOST");
        }
        let identified = if self.kind == TokenKind::Host {
            self.client.identify(&self.macs)
        } else {
            self.client.identify_machine(&self.machine)
        };
        match identified {
            Ok(found) => {
                let host = found.host;
                if let Some(h) = s.host.as_deref().filter(|h| *h != host) {
                    bail!(
                        "rewind.host={h}, but the server knows this machine's MAC addresses as {host}"
                    );
                }
                Ok(Target {
                    host,
                    request: found.request,
                })
            }
            Err(e) if matches!(api_error(&e), Some(ApiError::NotFound(_))) => {
                if let (Some(h), TokenKind::Admin) = (s.host.as_deref(), self.kind) {
                    return self.admin_target(h);
                }
                bail!(
                    "the server knows no host with this machine's identity ({}): on new \
                     hardware, name it in the request (`rewind request HOST --machine ...`), or \
                     boot with the recovery token `rewind request HOST` prints",
                    self.machine.describe()
                )
            }
            Err(e) if matches!(api_error(&e), Some(ApiError::Conflict(_))) => Err(e.context(
                "the server refuses to pick a recovery for this machine: nothing was written",
            )),
            Err(e) => Err(e),
        }
    }

    fn admin_target(&self, host: &str) -> Result<Target> {
        let request = self
            .client
            .requests(Some(host))?
            .into_iter()
            .rfind(|r| r.state.is_active());
        Ok(Target {
            host: host.to_string(),
            request,
        })
    }

    /// Whether the token may read the host's manifests before a request
    /// is claimed (a recovery token must claim first).
    pub(super) fn can_read_manifests(&self) -> bool {
        matches!(self.kind, TokenKind::Admin | TokenKind::Host)
    }

    /// The client that reads data: the recovery token's when there is one.
    fn data_client(&self) -> Arc<Client> {
        self.recovery
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| self.client.clone())
    }

    /// The manifest to recover: the request's snapshot, else `rewind.at`, else the latest.
    pub(super) fn manifest_for(&self, s: &Settings, t: &Target) -> Result<Manifest> {
        let at = match &t.request {
            Some(r) => r.snapshot_time.clone(),
            None => s.at.clone().unwrap_or_else(|| "latest".into()),
        };
        let client = self.data_client();
        let (id, xml) = client.manifest_at(&t.host, &at)?;
        let m = manifest::from_xml(&xml)
            .with_context(|| format!("the manifest of snapshot {id} is not valid"))?;
        if let Some(r) = &t.request
            && m.snapshot.id != r.snapshot
        {
            // Two snapshots in the same second: take the one asked for by id.
            let repo = self.repository(&t.host)?;
            return repo.find_snapshot(&r.snapshot, Some(&t.host));
        }
        Ok(m)
    }

    /// A client for reports, with the claim's recovery token, retrying
    /// only briefly (reports must not hold the recovery up); claiming the
    /// request for this machine first. `None` for a host token, which
    /// cannot claim.
    pub(super) fn recovery_client(&self, req: &RequestInfo) -> Result<Option<Arc<Client>>> {
        if matches!(self.kind, TokenKind::Host | TokenKind::Monitor) {
            return Ok(None);
        }
        let token = self.claim(&req.id)?;
        let mut c = Client::new(&self.server, &token, &self.trust)?;
        c.retry_for = std::time::Duration::from_secs(20);
        c.renew = Some(self.renewal(&req.id));
        let mut data = Client::new(&self.server, &token, &self.trust)?;
        data.retry_for = self.retry;
        // A restore outlives any outage shorter than its request: the data
        // client waits for the server until the request expires (the claim's
        // lease may lapse meanwhile: it claims again, as the same machine).
        data.retry_until = req
            .expires
            .as_deref()
            .and_then(crate::time::parse_rfc3339)
            .and_then(|t| u64::try_from(t).ok())
            .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
            .filter(|until| *until > std::time::SystemTime::now() + self.retry);
        if let Some(until) = data.retry_until {
            let secs = until
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
                .as_secs();
            crate::console::say(&format!(
                "an unreachable server is waited for until the request expires ({}, in {} min)",
                req.expires.as_deref().unwrap_or("?"),
                secs / 60
            ));
        }
        data.renew = Some(self.renewal(&req.id));
        if let Ok(mut r) = self.recovery.lock() {
            *r = Some(Arc::new(data));
        }
        Ok(Some(Arc::new(c)))
    }

    /// Claiming again, for a client whose claim lapsed (401): the same
    /// machine renews its own claim; another machine's claim stays refused.
    fn renewal(&self, id: &str) -> crate::client::Renew {
        let client = self.client.clone();
        let claim = ClaimRequest {
            request: (self.kind != TokenKind::Recovery).then(|| id.to_string()),
            host: None,
            machine: self.machine.clone(),
        };
        Box::new(move || client.claim(&claim).map(|c| c.token))
    }

    /// Claim request `id` for this machine: the token bound to it.
    fn claim(&self, id: &str) -> Result<String> {
        let claim = ClaimRequest {
            request: (self.kind != TokenKind::Recovery).then(|| id.to_string()),
            host: None,
            machine: self.machine.clone(),
        };
        let claimed = self.client.claim(&claim).with_context(|| {
            format!(
                "the server did not let this machine ({}) claim recovery request {id}",
                self.machine.describe()
            )
        })?;
        if let Some(c) = &claimed.request.claim
            && c.claims > 1
        {
            crate::console::say(&format!(
                "this machine claimed request {id} before ({} claims): the claim is renewed",
                c.claims
            ));
        }
        if let Ok(mut last) = self.claimed.lock() {
            *last = Some(id.to_string());
        }
        if let (Some(c), Ok(mut chosen)) = (&claimed.request.claim, self.chosen_before.lock()) {
            chosen.clone_from(&c.disks);
        }
        Ok(claimed.token)
    }

    /// A new client for reports after the claim lapsed (the server's
    /// answer 401): this machine claims its request again.
    pub(super) fn claim_again(&self) -> Result<Arc<Client>> {
        let id = self
            .claimed
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .context("no request was claimed")?;
        let token = self.claim(&id)?;
        let mut c = Client::new(&self.server, &token, &self.trust)?;
        c.retry_for = std::time::Duration::from_secs(20);
        Ok(Arc::new(c))
    }

    /// The disks an interrupted run of the claimed request chose on this
    /// machine, as the server's claim record says (empty before a claim,
    /// and on a first run).
    pub(super) fn chosen_before(&self) -> Vec<crate::api::DiskChoice> {
        self.chosen_before
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Record on the claim the disks the plan chose, before the first
    /// write: the claim's client (this machine's token). `Ok(false)` when
    /// there is no claim (a host token cannot claim).
    pub(super) fn record_disks(&self, disks: &[crate::api::DiskChoice]) -> Result<bool> {
        let Some(claimed) = self.recovery.lock().ok().and_then(|r| r.clone()) else {
            return Ok(false);
        };
        claimed.record_disks(disks)?;
        Ok(true)
    }

    /// Just before the first write: is the request still armed (or running)?
    pub(super) fn still_armed(&self, t: &Target) -> Result<()> {
        let Some(want) = &t.request else {
            bail!("no recovery request is armed");
        };
        let claimed = self.recovery.lock().ok().and_then(|r| r.clone());
        let now = match (self.kind, claimed) {
            (TokenKind::Recovery, _) => Some(self.client.my_request()?),
            (_, Some(claimed)) => Some(claimed.my_request()?),
            _ => {
                self.find_target(&Settings {
                    host: Some(t.host.clone()),
                    ..Settings::default()
                })?
                .request
            }
        };
        match now {
            Some(r) if r.id == want.id && r.state.is_active() => Ok(()),
            Some(r) => bail!(
                "the recovery request {} is {} now, not {}",
                r.id,
                r.state,
                want.id
            ),
            None => bail!("the recovery request {} was cancelled", want.id),
        }
    }

    /// An escrowed LUKS key of the host, with the recovery token (the
    /// server releases it only while the request is armed or running).
    pub(super) fn escrowed_key(&self, host: &str, key_id: &str) -> Result<crate::api::ReleasedKey> {
        self.data_client().escrowed_key(host, key_id)
    }

    /// The host's repository on the server.
    pub(super) fn repository(&self, host: &str) -> Result<Repo> {
        let backend = HttpBackend::new(self.data_client(), host);
        Repo::open_backend(Arc::new(backend))
    }
}
