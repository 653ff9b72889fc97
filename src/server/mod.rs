//! `rewind serve`: the recovery server. One rewind repository per host under
//! DIR/hosts/<host>/, a small catalog (tokens, recovery requests) under
//! DIR/catalog/, boot assets under DIR/boot/, an HTTP(S) API (docs/api.md)
//! on axum over tokio. Design notes: docs/server.md.

/// A line on the server's log (stderr). Unlike `eprintln!`, a log that
/// cannot be written (stderr redirected to a file on a full disk, a closed
/// pipe) is skipped instead of panicking the request that logs.
macro_rules! log_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod audit;
pub mod auth;
pub mod error;
pub mod extract;
pub mod files;
pub mod grub;
pub mod health;
pub mod index;
pub mod ipxe;
pub mod listen;
pub mod metrics;
pub mod range;
pub mod ratelimit;
pub mod routes;
pub mod state;
pub mod tftp;
pub mod tls;
pub mod verify;

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
    rewind serve --data /srv/rewind --listen 0.0.0.0:8443      TLS, a self-signed pair kept in DIR/tls\n  \
    rewind serve --data /srv/rewind --cert server.pem --key server.key\n  \
    rewind serve --data /tmp/lab --listen 127.0.0.1:0 --insecure-http     plain HTTP (a lab), any free port\n  \
    rewind serve --data /srv/rewind --boot-http 0.0.0.0:80     TLS API, and boot files for PXE over plain HTTP")]
pub struct ServeArgs {
    /// Where the server keeps everything (repositories, catalog, TLS pair, boot assets).
    #[arg(long, env = "REWIND_DATA", value_name = "DIR")]
    pub data: PathBuf,
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, default_value = "0.0.0.0:8443", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM). Without --cert/--key the server uses a
    /// self-signed pair of its own (see --tls-dir).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Where the self-signed pair is kept (key.pem, cert.pem; generated on
    /// first start, reused after). Default: DIR/tls. Delete cert.pem alone
    /// to renew the certificate with the same key: pins stay valid.
    #[arg(long, value_name = "DIR", conflicts_with = "cert")]
    pub tls_dir: Option<PathBuf>,
    /// Kept for old scripts: a self-signed pair is the default now.
    #[arg(long, hide = true)]
    pub tls_self_signed: bool,
    /// Serve plain HTTP: tokens and data cross the network in clear. For a
    /// lab; clients must say --insecure-http too.
    #[arg(long, conflicts_with_all = ["cert", "tls_dir", "tls_self_signed"])]
    pub insecure_http: bool,
    /// Names (DNS names or IP addresses) for the self-signed certificate;
    /// repeatable. Default: localhost, 127.0.0.1, ::1 and this host's name.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_names: Vec<String>,
    /// A pin to hand out besides this server's own (boot scripts, the
    /// image's pin file): the key of a server that is to replace this one
    /// (key rollover: media made now trust both). Repeatable.
    #[arg(long = "next-pin", value_name = "PIN")]
    pub next_pins: Vec<String>,
    /// Also serve the boot scripts and assets (and nothing else) over plain
    /// HTTP on ADDR, for firmware, iPXE and GRUB, which cannot pin a key:
    /// the API stays TLS. Only the boot token is accepted there.
    #[arg(long, value_name = "ADDR")]
    pub boot_http: Option<SocketAddr>,
    /// Serve TFTP on ADDR (UDP, usually port 69) for a UEFI network boot
    /// under Secure Boot: shim, Debian's signed netboot GRUB, its
    /// configuration, each machine's GRUB script, the kernel and the initrd
    /// (docs/boot.md). Its scripts send the image to --public-url, else to
    /// this address on the --listen port.
    #[arg(long, value_name = "ADDR")]
    pub boot_tftp: Option<SocketAddr>,
    /// The URL machines reach this server at, for boot scripts (default:
    /// from the request's Host header).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Replace the admin token with a new one (printed once).
    #[arg(long)]
    pub new_admin_token: bool,
    /// Read every pack of every host back and check every hash this often
    /// (90s, 30m, 6h, 2d; `0` never); `rewind verify` runs one now.
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub verify_every: String,
    /// Most bytes one host's repository may take (`500G`, `2T`, bytes
    /// without a suffix); an upload past it is refused with 507. Default:
    /// no quota.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub quota: Option<u64>,
    /// Uploads read at once (each may hold a 64 MiB pack in memory).
    #[arg(long, value_name = "N", default_value_t = crate::api::limits::DEFAULT_MAX_UPLOADS)]
    pub max_uploads: usize,
    /// Seconds a request body may stall before the request is dropped.
    #[arg(long, value_name = "SECS", default_value_t = crate::api::limits::BODY_IDLE_SECS)]
    pub body_timeout: u64,
    /// Connections served at once; more wait in the kernel's backlog.
    #[arg(long, value_name = "N", default_value_t = crate::api::limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Bytes of ranged reads (a restore's chunks) held in memory at once,
    /// across all requests (`256M`, `1G`); past it a read waits for the
    /// bytes of others to be sent. One range larger than it is still read,
    /// alone.
    #[arg(long, env = "REWIND_RANGE_BUFFER", value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
    pub range_buffer: u64,
    /// The master key escrowed LUKS keys are wrapped with: a file of 64 hex
    /// digits outside --data, readable only by the server's user (refused
    /// otherwise). Without it, keys cannot be escrowed or released. Losing
    /// it loses every escrowed key (docs/security.md).
    #[arg(long, env = "REWIND_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Create --key-file (mode 0600, random) if it does not exist; an
    /// existing file is never replaced.
    #[arg(long, requires = "key_file")]
    pub create_key_file: bool,
    /// Requests per second one token may make (twice that in a burst);
    /// past it the token is answered 429 with Retry-After while others
    /// are served. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = ratelimit::DEFAULT_PER_SECOND)]
    pub rate_limit: u32,
    /// Retention lock: no snapshot younger than DAYS may be forgotten or
    /// deleted, not even with an admin token, and packs are removed only
    /// by prune (a stolen admin token cannot erase recent history). 0: off.
    #[arg(long, value_name = "DAYS", default_value_t = 0)]
    pub retention_lock: u64,
    /// An id several hosts may list: `mac=...`, `uuid=...` or
    /// `serial=...` (repeatable). By default a snapshot is refused when the
    /// machine it describes has a MAC address, DMI UUID or serial that
    /// another host's latest snapshot lists; declare here one that is
    /// really shared (a VRRP or CARP MAC, a cloned VM's UUID) or a machine
    /// renamed whose old host's history is kept.
    #[arg(long = "shared-identity", value_name = "ID", value_parser = parse_shared_identity)]
    pub shared_identities: Vec<String>,
}

/// `--shared-identity`: a machine id, a MAC written in full.
fn parse_shared_identity(s: &str) -> Result<String, String> {
    let id = crate::api::parse_machine_id(s)?;
    if let Some(mac) = id.strip_prefix("mac=")
        && mac.parse::<crate::util::mac::Mac>().is_err()
    {
        return Err(format!(
            "{s:?}: the MAC address is not six hex bytes (52:54:00:12:34:56)"
        ));
    }
    Ok(id)
}

/// `123`, `500M`, `2G`, `1T` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        Some((i, 'T' | 't')) => (&s[..i], 40),
        _ => (s, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("{s:?} is not a size (give bytes, or a number with K, M, G or T)"))
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
    /// The pins clients are told to trust, comma-separated (this server's
    /// public-key pin, then `--next-pin`s), when serving TLS: what boot
    /// scripts put on `rewind.pin=`.
    pub fingerprint: Option<String>,
    pub stats: Stats,
    pub latencies: metrics::Latencies,
    /// Each host's latest MACs and its bytes on disk.
    pub index: index::HostIndex,
    /// Most bytes per host (`--quota`).
    pub quota: Option<u64>,
    /// Uploads being read (`--max-uploads` permits).
    pub uploads: tokio::sync::Semaphore,
    /// Bytes ranged reads may hold (`--range-buffer`).
    pub(crate) range_budget: routes::RangeBudget,
    pub max_connections: usize,
    /// How long a body may stall (`--body-timeout`).
    pub body_timeout: std::time::Duration,
    /// The escrow master key (`--key-file`).
    pub master_key: Option<Arc<crate::escrow::MasterKey>>,
    /// Requests per second per token (`--rate-limit`).
    pub rate_limits: ratelimit::RateLimits,
    /// `--retention-lock DAYS`: no snapshot younger is forgotten or deleted.
    pub retention_lock_days: u64,
    /// `--shared-identity`: ids (`mac=`, `uuid=`, `serial=`, normalized)
    /// that several hosts' snapshots may list.
    pub shared_identities: Vec<String>,
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

    /// A host's snapshots changed (forget, a removal): read its latest
    /// identity and its size again.
    pub fn host_changed(&self, host: &str) {
        let dir = files::host_dir(&self.data, host);
        match files::snapshot_files(&dir) {
            Ok(snaps) => self.index.set_snapshots(host, &snaps),
            Err(e) => log_line!("rewind: warning: cannot read the snapshots of {host}: {e}"),
        }
        self.index.recount(host);
    }
}

pub fn serve_command(args: ServeArgs) -> Result<()> {
    let data = args.data.clone();
    let verify_every = crate::repo::prune::parse_duration(&args.verify_every)
        .with_context(|| format!("--verify-every {:?}", args.verify_every))?;
    for sub in ["hosts", "boot", "catalog"] {
        crate::util::fs::create_dir_durable(&data.join(sub))
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

    let master_key = args
        .key_file
        .as_deref()
        .map(|f| crate::escrow::MasterKey::load(f, &data, args.create_key_file))
        .transpose()?
        .map(Arc::new);
    if let Some(k) = &master_key {
        println!("rewind: escrow master key {}", k.fingerprint);
    }
    let tls = match (&args.cert, &args.key) {
        _ if args.insecure_http => None,
        (Some(cert), Some(key)) => Some(tls::load_pem(cert, key)?),
        (None, None) => {
            let dir = args.tls_dir.clone().unwrap_or_else(|| data.join("tls"));
            Some(tls::self_signed(&dir, &args.tls_names)?)
        }
        _ => bail!("give both --cert and --key"),
    };
    let fingerprint = match &tls {
        Some((certs, _)) => {
            let own = tls::public_key_pin(&certs[0])?;
            println!("rewind: public-key pin (for --pin): {own}");
            let next = crate::api::parse_pins(&args.next_pins)
                .map_err(|e| anyhow::anyhow!("--next-pin: {e}"))?;
            let mut all = vec![own.to_string()];
            all.extend(next.iter().filter(|p| **p != own).map(|p| p.to_string()));
            Some(all.join(","))
        }
        None => {
            log_line!(
                "rewind: warning: serving plain HTTP (--insecure-http): tokens and data cross the network in clear"
            );
            None
        }
    };
    for host in std::fs::read_dir(data.join("hosts"))?.flatten() {
        let n = files::repair_indexes(&host.path())
            .with_context(|| format!("cannot check {}", host.path().display()))?;
        if n > 0 {
            log_line!(
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
        latencies: metrics::Latencies::default(),
        index: index::HostIndex::default(),
        quota: args.quota,
        uploads: tokio::sync::Semaphore::new(args.max_uploads.max(1)),
        range_budget: routes::RangeBudget::new(args.range_buffer),
        max_connections: args.max_connections.max(1),
        body_timeout: std::time::Duration::from_secs(args.body_timeout.max(1)),
        master_key,
        rate_limits: ratelimit::RateLimits::new(args.rate_limit),
        retention_lock_days: args.retention_lock,
        shared_identities: args.shared_identities,
    });
    // Each host's latest identity: the one time the server reads every
    // manifest.
    for host in server.hosts() {
        match files::snapshot_files(&files::host_dir(&server.data, &host)) {
            Ok(snaps) => server.index.set_snapshots(&host, &snaps),
            Err(e) => log_line!("rewind: warning: cannot read the snapshots of {host}: {e}"),
        }
    }
    let tls_config = tls
        .map(|(certs, key)| tls::server_config(certs, key))
        .transpose()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rewind-server")
        .build()
        .context("cannot start the async runtime")?;
    if !verify_every.is_zero() {
        runtime.spawn(verify::schedule(server.clone(), verify_every));
    }
    runtime.block_on(listen::run(
        server,
        args.listen,
        tls_config,
        args.boot_http,
        args.boot_tftp,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_identities_are_checked_and_normalized() {
        use super::parse_shared_identity as p;
        assert_eq!(p("mac=00:00:5E:00:01:33").unwrap(), "mac=00:00:5e:00:01:33");
        assert_eq!(
            p("uuid=4C4C4544-0042-3510-8051-B7C04F4E4A31").unwrap(),
            "uuid=4c4c4544-0042-3510-8051-b7c04f4e4a31"
        );
        assert_eq!(p("serial=CZ1234567").unwrap(), "serial=CZ1234567");
        for bad in ["mac=nope", "uuid=nope", "52:54:00:12:34:56", "name=x"] {
            assert!(p(bad).unwrap_err().contains(bad), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        use super::parse_size;
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err(), "overflow");
        assert!(parse_size("-1").is_err());
    }
}
