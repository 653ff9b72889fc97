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
use serde::Deserialize;

use crate::client::{Client, Failure, HttpBackend};
use crate::init::cmdline::Settings;
use crate::manifest::{self, Manifest};
use crate::repo::Repo;

/// The parts of a recovery request the image uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestInfo {
    pub id: String,
    pub host: String,
    pub state: String,
    pub snapshot: String,
    pub snapshot_time: String,
    /// The operator's overrides (`rewind request --hostname --address`).
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// Which machine this is, and its armed request if any.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub request: Option<RequestInfo>,
}

pub struct Session {
    client: Arc<Client>,
    server: String,
    token: String,
    pin: Option<String>,
    ca: Option<std::path::PathBuf>,
    retry: std::time::Duration,
    /// The token's kind: recovery, boot, admin or host.
    pub kind: String,
    /// MAC addresses of this machine's network interfaces.
    pub macs: Vec<String>,
    /// A recovery token fetched for an armed request (boot and admin tokens).
    recovery: Mutex<Option<Arc<Client>>>,
}

fn is_not_found(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("404 Not Found")
}

impl Session {
    pub fn open(s: &Settings, ca: Option<&std::path::Path>) -> Result<Session> {
        let server = s.server.clone().context(
            "no recovery server: give rewind.server=URL on the kernel command line (docs/boot.md)",
        )?;
        let token = s.token.clone().context(
            "no token: give rewind.token=TOKEN on the kernel command line (docs/boot.md)",
        )?;
        let mut client = Client::new(&server, &token, s.pin.as_deref(), ca)?;
        client.retry_for = s.retry;
        let client = Arc::new(client);
        let who = client
            .get_json("/v1/whoami")
            .context("cannot learn from the server what this token may do")?;
        let kind = who["scope"]["kind"].as_str().unwrap_or("").to_string();
        let mut macs: Vec<String> = crate::netcfg::interfaces(std::path::Path::new("/sys"))
            .iter()
            .map(|i| i.mac_text())
            .collect();
        macs.dedup();
        Ok(Session {
            client,
            server,
            token,
            pin: s.pin.clone(),
            ca: ca.map(std::path::Path::to_path_buf),
            retry: s.retry,
            kind,
            macs,
            recovery: Mutex::new(None),
        })
    }

    pub fn base(&self) -> &str {
        &self.client.base
    }

    /// Which host this is and its armed request.
    pub fn find_target(&self, s: &Settings) -> Result<Target> {
        if self.kind == "recovery" {
            let req = self.my_request()?;
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
            Ok(v) => {
                let host = v["host"].as_str().unwrap_or("").to_string();
                if let Some(h) = s.host.as_deref().filter(|h| *h != host) {
                    bail!(
                        "rewind.host={h}, but the server knows this machine's MAC addresses as {host}"
                    );
                }
                let request = match &v["request"] {
                    serde_json::Value::Null => None,
                    r => Some(
                        serde_json::from_value(r.clone())
                            .context("the server's request is not understood")?,
                    ),
                };
                Ok(Target { host, request })
            }
            Err(e) if is_not_found(&e) => {
                if let (Some(h), "admin") = (s.host.as_deref(), self.kind.as_str()) {
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
        let list = self.client.get_json(&format!("/v1/requests?host={host}"))?;
        let request = list
            .as_array()
            .into_iter()
            .flatten()
            .rfind(|r| matches!(r["state"].as_str(), Some("armed" | "running")))
            .map(|r| serde_json::from_value(r.clone()))
            .transpose()
            .context("the server's request is not understood")?;
        Ok(Target {
            host: host.to_string(),
            request,
        })
    }

    fn my_request(&self) -> Result<RequestInfo> {
        let v = self.client.get_json("/v1/recovery")?;
        serde_json::from_value(v).context("the server's request is not understood")
    }

    /// Whether the token may read the host's manifests before a request is armed.
    pub fn can_read_manifests(&self) -> bool {
        matches!(self.kind.as_str(), "recovery" | "admin" | "host")
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
    pub fn manifest_for(&self, s: &Settings, t: &Target) -> Result<Manifest> {
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
    pub fn recovery_client(&self, req: &RequestInfo) -> Result<Option<Arc<Client>>> {
        let token = match self.kind.as_str() {
            "recovery" => self.token.clone(),
            "boot" | "admin" => self.fetch_recovery_token(req)?,
            _ => return Ok(None),
        };
        let mut c = Client::new(
            &self.server,
            &token,
            self.pin.as_deref(),
            self.ca.as_deref(),
        )?;
        c.retry_for = std::time::Duration::from_secs(20);
        let c = Arc::new(c);
        if self.kind != "recovery" {
            let mut data = Client::new(
                &self.server,
                &token,
                self.pin.as_deref(),
                self.ca.as_deref(),
            )?;
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
        let url = self.client.url(&format!(
            "/boot/ipxe?mac={}&token={}",
            self.macs.join(","),
            crate::client::query_escape(&self.token)
        ));
        let script = self.client.retrying("boot script", |http| {
            let resp = http.get(&url).send()?;
            let status = resp.status();
            if status.is_server_error() {
                return Err(Failure::Retry(status.to_string()));
            }
            if !status.is_success() {
                return Err(Failure::Fatal(anyhow::anyhow!(
                    "{status}: {}",
                    resp.text().unwrap_or_default().trim()
                )));
            }
            Ok(resp.text()?)
        })?;
        token_from_script(&script).with_context(|| {
            format!(
                "the server gave no recovery token for request {} (its boot script: {})",
                req.id,
                script.lines().nth(1).unwrap_or("").trim()
            )
        })
    }

    /// Just before the first write: is the request still armed (or running)?
    pub fn still_armed(&self, t: &Target) -> Result<()> {
        let Some(want) = &t.request else {
            bail!("no recovery request is armed");
        };
        let now = match self.kind.as_str() {
            "recovery" => Some(self.my_request()?),
            _ => {
                self.find_target(&Settings {
                    host: Some(t.host.clone()),
                    ..Settings::default()
                })?
                .request
            }
        };
        match now {
            Some(r) if r.id == want.id && matches!(r.state.as_str(), "armed" | "running") => Ok(()),
            Some(r) => bail!(
                "the recovery request {} is {} now, not {}",
                r.id,
                r.state,
                want.id
            ),
            None => bail!("the recovery request {} was cancelled", want.id),
        }
    }

    /// The host's repository on the server.
    pub fn repository(&self, host: &str) -> Result<Repo> {
        let backend = HttpBackend::new(self.data_client(), host);
        Repo::open_backend(Arc::new(backend))
    }
}

/// `rewind.token=...` from an iPXE script's kernel line.
pub fn token_from_script(script: &str) -> Option<String> {
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
