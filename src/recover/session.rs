//! Talking to the recovery server: who this token is, which host this
//! machine is and whether a recovery of it is armed, the manifest, the
//! repository.
//!
//! Tokens the image may be given (docs/boot.md):
//! - a recovery token (what the server's iPXE script puts on the kernel
//!   command line, and what `rewind request` prints): it names the host and
//!   the request; everything works with it;
//! - a boot or admin token (baked into a site's ISO): the host is found by
//!   this machine's MAC addresses, the request by asking the server; once
//!   one is armed, a recovery token is fetched the way iPXE gets it;
//! - a host token: found by MAC, reads the data, but cannot report progress.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};

use crate::api::{ApiError, RecoveryRequest, TokenKind};
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
    token: String,
    trust: crate::client::Trust,
    retry: std::time::Duration,
    /// The token's kind: recovery, boot, admin or host.
    pub kind: TokenKind,
    /// MAC addresses of this machine's network interfaces.
    pub macs: Vec<String>,
    /// A recovery token fetched for an armed request (boot and admin tokens).
    recovery: Mutex<Option<Arc<Client>>>,
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
        Ok(Session {
            client,
            server,
            token,
            trust: s.trust(ca),
            retry: s.retry,
            kind,
            macs,
            recovery: Mutex::new(None),
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
        match self.client.identify(&self.macs) {
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
                    "the server knows no host with this machine's MAC addresses ({}): on new \
                     hardware, boot with rewind.host=HOST and the recovery token `rewind request \
                     HOST` prints",
                    self.macs.join(", ")
                )
            }
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

    /// Whether the token may read the host's manifests before a request is armed.
    pub(super) fn can_read_manifests(&self) -> bool {
        matches!(
            self.kind,
            TokenKind::Recovery | TokenKind::Admin | TokenKind::Host
        )
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

    /// A client for reports, with the request's recovery token, retrying
    /// only briefly (reports must not hold the recovery up). `None` for a
    /// host token, which cannot get one.
    pub(super) fn recovery_client(&self, req: &RequestInfo) -> Result<Option<Arc<Client>>> {
        let token = match self.kind {
            TokenKind::Recovery => self.token.clone(),
            TokenKind::Boot | TokenKind::Admin => self.fetch_recovery_token(req)?,
            TokenKind::Host | TokenKind::Monitor => return Ok(None),
        };
        let mut c = Client::new(&self.server, &token, &self.trust)?;
        c.retry_for = std::time::Duration::from_secs(20);
        let c = Arc::new(c);
        if self.kind != TokenKind::Recovery {
            let mut data = Client::new(&self.server, &token, &self.trust)?;
            data.retry_for = self.retry;
            if let Ok(mut r) = self.recovery.lock() {
                *r = Some(Arc::new(data));
            }
        }
        Ok(Some(c))
    }

    /// The recovery token of the armed request, as iPXE gets it: the boot
    /// script the server makes for this machine's MAC addresses.
    fn fetch_recovery_token(&self, req: &RequestInfo) -> Result<String> {
        let script = self.client.boot_script(&self.macs)?;
        token_from_script(&script).with_context(|| {
            format!(
                "the server gave no recovery token for request {} (its boot script: {})",
                req.id,
                script.lines().nth(1).unwrap_or("").trim()
            )
        })
    }

    /// Just before the first write: is the request still armed (or running)?
    pub(super) fn still_armed(&self, t: &Target) -> Result<()> {
        let Some(want) = &t.request else {
            bail!("no recovery request is armed");
        };
        let now = match self.kind {
            TokenKind::Recovery => Some(self.client.my_request()?),
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

/// `rewind.token=...` from an iPXE script's kernel line.
pub(super) fn token_from_script(script: &str) -> Option<String> {
    script
        .lines()
        .filter(|l| l.trim_start().starts_with("kernel"))
        .flat_map(str::split_whitespace)
        .find_map(|w| w.strip_prefix("rewind.token="))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_ipxe_script() {
        let s = "#!ipxe\necho rewind: recovering web1\nkernel --name vmlinuz http://s/boot/vmlinuz?token=B initrd=initrd.img rewind.server=http://s rewind.token=rwd_1_2 rewind.host=web1\ninitrd http://s/boot/initrd.img\nboot\n";
        assert_eq!(token_from_script(s).as_deref(), Some("rwd_1_2"));
        assert_eq!(token_from_script("#!ipxe\necho no\nexit\n"), None);
    }
}
