//! The API's calls (docs/api.md), typed with `crate::api`: what the
//! operator commands and the recovery image ask the server.

use anyhow::Result;

use super::{Client, Failure, accept, query_escape};
use crate::api::{AuditEvent, CaptureReport, HostHealth, VerifyRequest, VerifyResult};
use crate::api::{ClaimRequest, Claimed, MachineIdentity};
use crate::api::{
    CreatedRequest, CreatedToken, ForgetAnswer, ForgetRequest, Identified, NewRequest, NewToken,
    ProgressReport, PruneAnswer, PruneRequest, RecoveryRequest, ResultReport, Stats, TokenInfo,
    Versions, WhoAmI,
};
use crate::api::{EscrowKey, EscrowedKey, KeyInfo, ReleasedKey};
use crate::stage::Stage;

impl Client {
    /// The formats the server speaks (no token needed).
    pub fn versions(&self) -> Result<Versions> {
        self.get("/v1/version")
    }

    /// Who this token is and what it may do.
    pub fn whoami(&self) -> Result<WhoAmI> {
        self.get("/v1/whoami")
    }

    /// Which host has these MAC addresses, and its armed request if any
    /// (`ApiError::NotFound` when no host has them).
    pub fn identify(&self, macs: &[String]) -> Result<Identified> {
        self.get(&format!("/v1/identify?mac={}", macs.join(",")))
    }

    /// Which host this machine is (its MACs and DMI identity), and the
    /// live request that names it (`ApiError::Conflict` when more than one
    /// does).
    pub fn identify_machine(&self, machine: &MachineIdentity) -> Result<Identified> {
        let mut q = format!("/v1/identify?mac={}", machine.macs.join(","));
        if let Some(u) = &machine.system_uuid {
            q.push_str(&format!("&uuid={}", query_escape(u)));
        }
        if let Some(sn) = &machine.serial {
            q.push_str(&format!("&serial={}", query_escape(sn)));
        }
        self.get(&q)
    }

    /// Claim a recovery request for this machine: the token's own request
    /// (a recovery token), or `request` / `host`'s (a boot or admin
    /// token). The answer's token is bound to this machine.
    pub fn claim(&self, claim: &ClaimRequest) -> Result<Claimed> {
        self.post("/v1/claim", claim)
    }

    /// Recovery requests, oldest first: a host's, or all (admin).
    pub fn requests(&self, host: Option<&str>) -> Result<Vec<RecoveryRequest>> {
        match host {
            Some(h) => self.get(&format!("/v1/requests?host={}", query_escape(h))),
            None => self.get("/v1/requests"),
        }
    }

    /// Arm a recovery of `host` (admin).
    pub fn create_request(&self, host: &str, req: &NewRequest) -> Result<CreatedRequest> {
        self.post(&format!("/v1/hosts/{host}/requests"), req)
    }

    /// Cancel an armed or running request (admin).
    pub fn cancel_request(&self, id: &str) -> Result<RecoveryRequest> {
        self.delete(&format!("/v1/requests/{id}"))
    }

    /// The recovery token's own request.
    pub fn my_request(&self) -> Result<RecoveryRequest> {
        self.get("/v1/recovery")
    }

    /// Report a recovery's progress (recovery token).
    pub fn report_progress(
        &self,
        stage: Stage,
        bytes_done: u64,
        bytes_total: u64,
        message: &str,
    ) -> Result<()> {
        let report = ProgressReport {
            stage,
            bytes_done,
            bytes_total,
            message: message.to_string(),
        };
        self.post::<_, RecoveryRequest>("/v1/recovery/progress", &report)
            .map(|_| ())
    }

    /// Record the disks a recovery's plan chose on its claim (a claim's
    /// token), before its first write.
    pub fn record_disks(&self, disks: &[crate::api::DiskChoice]) -> Result<RecoveryRequest> {
        let body = crate::api::ChosenDisks {
            disks: disks.to_vec(),
        };
        self.post("/v1/recovery/disks", &body)
    }

    /// Report how a recovery ended (recovery token); the token stops working.
    pub fn report_result(&self, ok: bool, stage: Stage, message: &str) -> Result<()> {
        let report = ResultReport {
            ok,
            stage,
            message: message.to_string(),
        };
        self.post::<_, RecoveryRequest>("/v1/recovery/result", &report)
            .map(|_| ())
    }

    /// The iPXE script the server makes for these MAC addresses, with this
    /// client's token as the boot token (`?token=`, as iPXE sends it).
    pub fn boot_script(&self, macs: &[String]) -> Result<String> {
        let url = self.url(&format!(
            "/boot/ipxe?mac={}&token={}",
            macs.join(","),
            query_escape(&self.token())
        ));
        self.retrying("boot script", |http| {
            let resp = accept(http.get(&url).send()?, &[])?;
            resp.text().map_err(Failure::from)
        })
    }

    pub fn create_token(&self, req: &NewToken) -> Result<CreatedToken> {
        self.post("/v1/tokens", req)
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        self.get("/v1/tokens")
    }

    pub fn revoke_token(&self, id: &str) -> Result<()> {
        self.delete(&format!("/v1/tokens/{id}"))
    }

    pub fn forget(&self, req: &ForgetRequest) -> Result<ForgetAnswer> {
        self.post("/v1/forget", req)
    }

    pub fn prune(&self, req: &PruneRequest) -> Result<PruneAnswer> {
        self.post("/v1/prune", req)
    }

    pub fn stats(&self) -> Result<Stats> {
        self.get("/v1/stats")
    }

    /// Report how a capture went (the host's token).
    pub fn report_capture(&self, host: &str, report: &CaptureReport) -> Result<()> {
        self.post(&format!("/v1/hosts/{host}/captures"), report)
    }

    /// Every host's health, judged with these age limits (`26h`, `2d`;
    /// `None`: the server's defaults).
    pub fn health(
        &self,
        max_age: Option<&str>,
        critical_age: Option<&str>,
    ) -> Result<Vec<HostHealth>> {
        self.get(&format!("/v1/health{}", age_query(max_age, critical_age)))
    }

    /// One host's health.
    pub fn host_health(
        &self,
        host: &str,
        max_age: Option<&str>,
        critical_age: Option<&str>,
    ) -> Result<HostHealth> {
        self.get(&format!(
            "/v1/hosts/{host}/health{}",
            age_query(max_age, critical_age)
        ))
    }

    /// Verify one host's packs on the server now, or every host's (admin).
    pub fn verify(&self, host: Option<&str>) -> Result<Vec<VerifyResult>> {
        self.post(
            "/v1/verify",
            &VerifyRequest {
                host: host.map(str::to_string),
            },
        )
    }

    /// The audit log, oldest first (admin).
    pub fn audit(&self) -> Result<Vec<AuditEvent>> {
        self.get("/v1/audit")
    }

    /// Escrow a LUKS volume's key with the server (the host's token).
    pub fn escrow_key(&self, host: &str, key: &EscrowKey) -> Result<EscrowedKey> {
        self.send(
            reqwest::Method::PUT,
            &format!("/v1/hosts/{host}/keys"),
            Some(key),
        )
    }

    /// The keys escrowed for a host, without the keys.
    pub fn escrowed_keys(&self, host: &str) -> Result<Vec<KeyInfo>> {
        self.get(&format!("/v1/hosts/{host}/keys"))
    }

    /// An escrowed key (a recovery token of the host's armed request, or admin).
    pub fn escrowed_key(&self, host: &str, key_id: &str) -> Result<ReleasedKey> {
        self.get(&format!("/v1/hosts/{host}/keys/{key_id}"))
    }

    /// `/metrics`, as text.
    pub fn metrics(&self) -> Result<String> {
        let url = self.url("/metrics");
        self.retrying("metrics", |http| {
            let resp = accept(self.auth(http.get(&url)).send()?, &[])?;
            resp.text().map_err(Failure::from)
        })
    }
}

fn age_query(max_age: Option<&str>, critical_age: Option<&str>) -> String {
    let mut q = Vec::new();
    if let Some(a) = max_age {
        q.push(format!("max_age={}", query_escape(a)));
    }
    if let Some(a) = critical_age {
        q.push(format!("critical_age={}", query_escape(a)));
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// The server as the capture's [`crate::escrow::source::KeyVault`].
pub struct ServerVault {
    pub client: std::sync::Arc<Client>,
    pub host: String,
}

impl std::fmt::Debug for ServerVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerVault({} for {})", self.client.base, self.host)
    }
}

impl crate::escrow::source::KeyVault for ServerVault {
    fn escrow(&self, key: &EscrowKey) -> Result<EscrowedKey> {
        self.client.escrow_key(&self.host, key)
    }

    fn escrowed(&self) -> Result<Vec<KeyInfo>> {
        self.client.escrowed_keys(&self.host)
    }
}
