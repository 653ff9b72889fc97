//! Tokens: scopes, and the bodies of `/v1/tokens` and `/v1/whoami`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a token may do. In JSON, `{"kind": "host", "host": "web1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scope {
    /// Everything.
    Admin,
    /// Read and write one host's repository; read its snapshots.
    Host { host: String },
    /// Read one host's repository and report on one recovery request; valid
    /// only while that request is armed or running.
    Recovery { host: String, request: String },
    /// Fetch boot scripts and boot assets, identify hosts by MAC address.
    Boot,
    /// Read every host's health and the server's metrics; nothing else
    /// (for Nagios/Icinga checks and Prometheus).
    Monitor,
}

/// The kind of a scope, without its host or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Admin,
    Host,
    Recovery,
    Boot,
    Monitor,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Admin => "admin",
            TokenKind::Host => "host",
            TokenKind::Recovery => "recovery",
            TokenKind::Boot => "boot",
            TokenKind::Monitor => "monitor",
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Scope {
    pub fn kind(&self) -> TokenKind {
        match self {
            Scope::Admin => TokenKind::Admin,
            Scope::Host { .. } => TokenKind::Host,
            Scope::Recovery { .. } => TokenKind::Recovery,
            Scope::Boot => TokenKind::Boot,
            Scope::Monitor => TokenKind::Monitor,
        }
    }

    /// For messages: `host web1`, `recovery of web1 (req-...)`.
    pub fn describe(&self) -> String {
        match self {
            Scope::Admin => "admin".into(),
            Scope::Host { host } => format!("host {host}"),
            Scope::Recovery { host, request } => format!("recovery of {host} ({request})"),
            Scope::Boot => "boot".into(),
            Scope::Monitor => "monitor".into(),
        }
    }
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub id: String,
    pub scope: Scope,
}

/// `POST /v1/tokens`: `{"host": "web1", "note": ""}`, `{"boot": true, "note": ""}`
/// or `{"monitor": true, "note": ""}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub boot: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub monitor: bool,
    #[serde(default)]
    pub note: String,
}

/// The answer to `POST /v1/tokens`: the token, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub id: String,
    pub token: String,
}

/// An item of `GET /v1/tokens` (no secret, no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub scope: Scope,
    pub created: String,
    pub note: String,
}
