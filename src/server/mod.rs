//! `rewind serve`: the recovery server. One rewind repository per host under
//! DIR/hosts/<host>/, a small catalog (tokens, recovery requests) under
//! DIR/catalog/, boot assets under DIR/boot/, an HTTP(S) API (docs/api.md)
//! on axum over tokio. Design notes: docs/server.md.

pub mod auth;
pub mod error;
pub mod extract;
pub mod files;
pub mod ipxe;
pub mod listen;
pub mod routes;
pub mod state;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};

use auth::Scope;
use state::{Catalog, CatalogCell};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    rewind serve --data /srv/rewind --tls-self-signed --listen 0.0.0.0:8443\n  \
    rewind serve --data /srv/rewind --cert server.pem --key server.key\n  \
    rewind serve --data /tmp/lab --listen 127.0.0.1:0     plain HTTP, any free port")]
pub struct ServeArgs {
    /// Where the server keeps everything (repositories, catalog, TLS pair, boot assets).
    #[arg(long, env = "REWIND_DATA", value_name = "DIR")]
    pub data: PathBuf,
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, default_value = "0.0.0.0:8443", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "key",
        conflicts_with = "tls_self_signed"
    )]
    pub cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Serve TLS with a self-signed pair kept in DIR/tls (generated on first
    /// use); clients pin its SHA-256, which is printed at start.
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Names (DNS names or IP addresses) for the self-signed certificate;
    /// repeatable. Default: localhost, 127.0.0.1, ::1 and this host's name.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_names: Vec<String>,
    /// The URL machines reach this server at, for boot scripts (default:
    /// from the request's Host header).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Replace the admin token with a new one (printed once).
    #[arg(long)]
    pub new_admin_token: bool,
}

#[derive(Default)]
pub struct Stats {
    /// Bytes of pack uploads received (accepted or not).
    pub pack_bytes_received: AtomicU64,
    pub packs_received: AtomicU64,
    /// Packs that were new (not already stored).
    pub packs_stored: AtomicU64,
    /// Bytes of repository files sent.
    pub bytes_sent: AtomicU64,
    pub snapshots_committed: AtomicU64,
}

pub struct Server {
    pub data: PathBuf,
    pub catalog: CatalogCell,
    /// Per host: uploads and commits share it, forget and prune take it alone.
    locks: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    pub public_url: Option<String>,
    /// SHA-256 of the certificate, hex, when serving TLS.
    pub fingerprint: Option<String>,
    pub stats: Stats,
}

impl Server {
    pub fn host_lock(&self, host: &str) -> Arc<tokio::sync::RwLock<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(host.to_string())
            .or_default()
            .clone()
    }

    /// The current catalog (a snapshot: changes go through
    /// [`CatalogCell::change`]).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read()
    }

    /// Hosts with a repository, sorted.
    pub fn hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.data.join("hosts"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("config").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|h| files::valid_host(h))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

pub fn serve_command(args: ServeArgs) -> Result<()> {
    let data = args.data.clone();
    for sub in ["hosts", "boot", "catalog"] {
        std::fs::create_dir_all(data.join(sub))
            .with_context(|| format!("cannot create {}", data.join(sub).display()))?;
    }
    let mut catalog = Catalog::load(&data.join("catalog"))?;
    if !catalog.has_admin() || args.new_admin_token {
        catalog.tokens.retain(|t| t.scope != Scope::Admin);
        let (token, record) = auth::generate(Scope::Admin, "created at server start");
        catalog.tokens.push(record);
        catalog.save_tokens()?;
        println!("rewind: admin token (printed once, keep it safe): {token}");
    }

    let tls = match (&args.cert, &args.key, args.tls_self_signed) {
        (Some(cert), Some(key), _) => Some(tls::load_pem(cert, key)?),
        (None, None, true) => Some(tls::self_signed(&data.join("tls"), &args.tls_names)?),
        (None, None, false) => None,
        _ => bail!("give both --cert and --key"),
    };
    let fingerprint = tls
        .as_ref()
        .map(|(certs, _)| crate::api::fingerprint(&certs[0]));
    if let Some(fp) = &fingerprint {
        println!("rewind: certificate sha256 fingerprint (for --pin): {fp}");
    } else {
        eprintln!(
            "rewind: warning: serving plain HTTP: tokens and data cross the network in clear (use --tls-self-signed or --cert/--key)"
        );
    }
    for host in std::fs::read_dir(data.join("hosts"))?.flatten() {
        let n = files::repair_indexes(&host.path())
            .with_context(|| format!("cannot check {}", host.path().display()))?;
        if n > 0 {
            eprintln!(
                "rewind: {}: indexed {n} packs whose index was missing",
                host.path().display()
            );
        }
    }
    let server = Arc::new(Server {
        data,
        catalog: CatalogCell::new(catalog),
        locks: Mutex::new(HashMap::new()),
        public_url: args.public_url.map(|u| u.trim_end_matches('/').to_string()),
        fingerprint,
        stats: Stats::default(),
    });
    let tls_config = tls
        .map(|(certs, key)| tls::server_config(certs, key))
        .transpose()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rewind-server")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(listen::run(server, args.listen, tls_config))
}
