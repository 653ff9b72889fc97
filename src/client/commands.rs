//! Operator commands against a server (`request`, `status`, `token`) and
//! retention (`forget`, `prune`) against a server or a local repository.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Subcommand;

use super::{RepoArg, ServerArgs};
use crate::api::{
    DEFAULT_GRACE, ForgetRequest, NewRequest, NewToken, PruneRequest, RecoveryRequest,
    RequestState, Scope,
};
use crate::repo::forget::{self, Policy};
use crate::repo::prune;
use crate::util::size::human_bytes;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    rewind request web1 --at 2026-11-25T06:00:00Z   arm a recovery of web1 to that time\n  \
    rewind request web1                             ... to its latest snapshot\n  \
    rewind request web1 --machine mac=52:54:00:aa:bb:cc   recover onto replacement hardware\n  \
    rewind request web1 --disk vda=/dev/sdb --overwrite   onto /dev/sdb, although it is not blank\n  \
    rewind request web1 --expires 2h                ... startable for two hours only\n  \
    rewind request web1 --cancel                    disarm it")]
pub struct RequestArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The host to recover.
    pub host: String,
    /// The point in time: the newest snapshot taken at or before it is
    /// restored (RFC 3339, or `latest`).
    #[arg(long, default_value = "latest", value_name = "TIME")]
    pub at: String,
    /// Another host name for the recovered machine (recovery to another site).
    #[arg(long, value_name = "NAME", conflicts_with = "cancel")]
    pub hostname: Option<String>,
    /// A new static address for a captured interface: IFACE:CIDR[:GATEWAY]
    /// (repeatable), rewritten in the restored network configuration.
    #[arg(
        long = "address",
        value_name = "IFACE:CIDR[:GW]",
        conflicts_with = "cancel"
    )]
    pub addresses: Vec<String>,
    /// The recovery may shrink the filesystems onto a disk smaller than
    /// the captured one when their data fits (as `rewind.shrink=1`).
    #[arg(long, conflicts_with = "cancel")]
    pub shrink: bool,
    /// Which present disk takes a captured one: CAPTURED=PRESENT
    /// (repeatable; as `rewind.disk=`, which it replaces: an image signed
    /// for iPXE takes disk settings from the request only).
    #[arg(long = "disk", value_name = "CAPTURED=PRESENT", value_parser = check_disk_mapping, conflicts_with = "cancel")]
    pub disks: Vec<String>,
    /// Any disk that is not blank may be chosen, not only blank ones and
    /// those matched by serial or WWN (as `rewind.overwrite=any`).
    #[arg(long, conflicts_with = "cancel")]
    pub overwrite: bool,
    /// How long the request stays startable: a machine that has not
    /// claimed it by then never recovers from it (90s, 30m, 24h, 2d;
    /// default 24h).
    #[arg(long, value_name = "DURATION", conflicts_with = "cancel")]
    pub expires: Option<String>,
    /// The machine that may claim the recovery, when it is not the
    /// captured one (replacement hardware): uuid=SYSTEM-UUID, serial=SERIAL
    /// or mac=MAC (repeatable; any one matching is enough). By default the
    /// captured machine's DMI identity, else its MAC addresses.
    #[arg(long = "machine", value_name = "uuid=..|serial=..|mac=..", value_parser = crate::api::parse_machine_id, conflicts_with_all = ["cancel", "any_machine"])]
    pub machines: Vec<String>,
    /// Let any machine claim the recovery (the first to claim it gets it).
    #[arg(long, conflicts_with = "cancel")]
    pub any_machine: bool,
    /// Cancel the host's armed or running request instead.
    #[arg(long, conflicts_with = "at")]
    pub cancel: bool,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only this host's requests.
    #[arg(long)]
    pub host: Option<String>,
    /// Also show finished requests older than the last of each host.
    #[arg(long)]
    pub all: bool,
    /// Check the hosts' health as a Nagios/Icinga plugin: one line, and
    /// exit 0 OK, 1 WARNING, 2 CRITICAL (a host not recoverable), 3 UNKNOWN.
    #[arg(long)]
    pub check: bool,
    /// Warn when a host's last good capture is older than this (90s, 30m, 26h, 2d).
    #[arg(long, value_name = "DURATION", default_value = crate::api::DEFAULT_MAX_AGE)]
    pub max_age: String,
    /// Critical when it is older than this (default: twice --max-age).
    #[arg(long, value_name = "DURATION")]
    pub critical_age: Option<String>,
    /// Print JSON: `{"hosts": [...], "requests": [...]}` (docs/api.md).
    #[arg(long, conflicts_with = "check")]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token: for a host (reads and writes only that host's
    /// repository) or, with --boot, for boot scripts. Printed once.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// The host the token is for.
        #[arg(required_unless_present_any = ["boot", "monitor"])]
        host: Option<String>,
        /// A boot token: fetches iPXE scripts and boot assets, identifies
        /// hosts by MAC address.
        #[arg(long, conflicts_with_all = ["host", "monitor"])]
        boot: bool,
        /// A monitor token: reads every host's health and /metrics, nothing
        /// else (for `status --check` and Prometheus).
        #[arg(long, conflicts_with = "host")]
        monitor: bool,
        /// A note kept with the token.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List tokens (ids and scopes; secrets are not kept).
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Print JSON: the list of `GET /v1/tokens` (docs/api.md).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
    },
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    rewind forget --repo /srv/r --keep-daily 7 --keep-weekly 4 --keep-monthly 12\n  \
    rewind forget --server URL --token ADMIN --keep-last 10 --host web1 --dry-run")]
pub struct ForgetArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub policy: Policy,
    /// Show what would be forgotten, forget nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep every snapshot younger than DAYS, whatever the policy says.
    #[arg(long, value_name = "DAYS")]
    pub min_age: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Leave packs younger than this alone (a capture still running may be
    /// about to reference them): 90s, 30m, 6h, 2d.
    #[arg(long, default_value = DEFAULT_GRACE)]
    pub grace: String,
    /// Show what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn request_command(args: RequestArgs) -> Result<()> {
    let client = args.server.client()?;
    if args.cancel {
        let active: Vec<RecoveryRequest> = client
            .requests(Some(&args.host))?
            .into_iter()
            .filter(|r| r.state.is_active())
            .collect();
        if active.is_empty() {
            bail!("{} has no armed or running recovery request", args.host);
        }
        for r in active {
            client.cancel_request(&r.id)?;
            println!("cancelled {} ({} of {})", r.id, r.state, args.host);
        }
        return Ok(());
    }
    let answer = client.create_request(
        &args.host,
        &NewRequest {
            at: args.at,
            hostname: args.hostname,
            addresses: args.addresses,
            shrink: args.shrink,
            disks: args.disks,
            overwrite: args.overwrite,
            expires: args.expires,
            machines: args.machines,
            any_machine: args.any_machine,
        },
    )?;
    let r = &answer.request;
    println!(
        "armed {} : recover {} to snapshot {} (taken {})",
        r.id, args.host, r.snapshot, r.snapshot_time
    );
    if let Some(h) = &r.hostname {
        println!("  the recovered machine is named {h}");
    }
    for a in &r.addresses {
        println!("  address {a}");
    }
    if r.shrink {
        println!("  a smaller disk may take the layout shrunk when the data fits");
    }
    for d in &r.disks {
        println!("  disk {d}");
    }
    if r.overwrite {
        println!("  any disk may be overwritten, blank or not");
    }
    if r.any_machine {
        println!("  any machine may claim it (the first one to claim it gets it)");
    } else {
        println!(
            "  only this machine may claim it: {}",
            r.machines.join(" or ")
        );
    }
    if let Some(e) = &r.expires {
        println!("  startable until {e}");
    }
    println!("recovery token (this request only): {}", answer.token);
    println!(
        "netboot: chain {}/boot/ipxe?mac=${{net0/mac}}&token=BOOT_TOKEN   (rewind token create --boot)",
        client.base
    );
    Ok(())
}

fn describe_progress(r: &RecoveryRequest) -> String {
    let Some(p) = &r.progress else {
        return String::new();
    };
    let (done, total) = (p.bytes_done, p.bytes_total);
    let mut s = p.stage.to_string();
    if total > 0 {
        s.push_str(&format!(
            " {} / {} ({}%)",
            human_bytes(done),
            human_bytes(total),
            done * 100 / total
        ));
    } else if done > 0 {
        s.push_str(&format!(" {}", human_bytes(done)));
    }
    if p.rate > 0.0 {
        s.push_str(&format!(" at {}/s", human_bytes(p.rate as u64)));
    }
    if !p.message.is_empty() {
        s.push_str(&format!(" - {}", p.message));
    }
    s
}

pub fn status_command(args: StatusArgs) -> Result<()> {
    if args.check {
        let code = super::ops::check(
            &args.server,
            args.host.as_deref(),
            &args.max_age,
            args.critical_age.as_deref(),
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    let client = args.server.client()?;
    let all = client.requests(args.host.as_deref())?;
    // A host with requests but no repository any more has no health.
    let health = match super::ops::hosts_health(
        &client,
        args.host.as_deref(),
        &args.max_age,
        args.critical_age.as_deref(),
    ) {
        Err(e)
            if matches!(
                super::api_error(&e),
                Some(crate::api::ApiError::NotFound(_))
            ) =>
        {
            Vec::new()
        }
        other => other?,
    };
    // By default: every active request, and the last finished one of each host.
    let shown: Vec<&RecoveryRequest> = all
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            args.all
                || r.state.is_active()
                || !all[i + 1..].iter().any(|later| later.host == r.host)
        })
        .map(|(_, r)| r)
        .collect();
    if args.json {
        return super::ops::print_json(&serde_json::json!({
            "hosts": health,
            "requests": shown,
        }));
    }
    super::ops::print_health(&health);
    if shown.is_empty() {
        println!("no recovery requests");
        return Ok(());
    }
    println!(
        "{:<16} {:<16} {:<10} {:<22} DETAILS",
        "REQUEST", "HOST", "STATE", "SNAPSHOT TIME"
    );
    for r in shown {
        let details = match r.state {
            RequestState::Running => describe_progress(r),
            RequestState::Armed => format!(
                "since {}{}",
                r.created,
                r.expires
                    .as_deref()
                    .map_or(String::new(), |e| format!(", until {e}"))
            ),
            _ => format!("{} ({})", r.result.as_deref().unwrap_or(""), r.updated),
        };
        println!(
            "{:<16} {:<16} {:<10} {:<22} {details}",
            r.id,
            r.host,
            r.state.as_str(),
            r.snapshot_time
        );
        if let Some(c) = &r.claim {
            println!(
                "{:<16} claimed by {} at {} (claims: {}, lease until {})",
                "",
                c.machine.describe(),
                c.claimed,
                c.claims,
                c.lease_until
            );
        }
        for refused in &r.refused_claims {
            println!(
                "{:<16} REFUSED claim at {}: {}",
                "", refused.time, refused.reason
            );
        }
    }
    Ok(())
}

pub fn token_command(cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create {
            server,
            host,
            boot,
            monitor,
            note,
        } => {
            let client = server.client()?;
            let req = match host {
                Some(h) if !boot && !monitor => NewToken {
                    host: Some(h),
                    note,
                    ..NewToken::default()
                },
                _ => NewToken {
                    boot: !monitor,
                    monitor,
                    note,
                    ..NewToken::default()
                },
            };
            let answer = client.create_token(&req)?;
            println!("{}", answer.token);
            eprintln!("rewind: token {} created; it is shown only now", answer.id);
            Ok(())
        }
        TokenCommand::List { server, json } => {
            let tokens = server.client()?.tokens()?;
            if json {
                return super::ops::print_json(&tokens);
            }
            for t in tokens {
                let what = match &t.scope {
                    Scope::Host { host } => format!("host {host}"),
                    Scope::Recovery { host, request } => format!("recovery {request} of {host}"),
                    s => s.kind().to_string(),
                };
                println!("{}  {:<32} {}  {}", t.id, what, t.created, t.note);
            }
            Ok(())
        }
        TokenCommand::Revoke { server, id } => {
            server.client()?.revoke_token(&id)?;
            println!("revoked {id}");
            Ok(())
        }
    }
}

fn print_decisions(host: &str, decisions: &[forget::Decision], dry_run: bool) {
    let gone = decisions.iter().filter(|d| !d.keep).count();
    println!(
        "{host}: keeping {} of {} snapshots, {} {gone}",
        decisions.len() - gone,
        decisions.len(),
        if dry_run { "would forget" } else { "forgot" }
    );
    for d in decisions {
        if d.keep {
            println!("  keep   {}  {}  ({})", d.time, d.id, d.reasons.join(", "));
        } else {
            println!("  forget {}  {}", d.time, d.id);
        }
    }
}

pub fn forget_command(args: ForgetArgs) -> Result<()> {
    if args.policy.is_empty() {
        bail!(
            "give at least one --keep-last/--keep-daily/--keep-weekly/--keep-monthly: an empty policy would forget every snapshot"
        );
    }
    if let Some(dir) = &args.repo.dir {
        let repo = crate::repo::Repo::open(dir)?;
        let mut result = forget::forget(&repo, &args.policy, args.repo.host.as_deref(), true)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for (host, decisions) in &mut result {
            if let Some(days) = args.min_age {
                hold_younger(decisions, now, days, "min-age");
            }
            if !args.dry_run {
                for d in decisions.iter().filter(|d| !d.keep) {
                    repo.backend.remove(&format!("snapshots/{}.xml", d.id))?;
                }
            }
            print_decisions(host, decisions, args.dry_run);
        }
        if !args.dry_run {
            eprintln!("rewind: the forgotten snapshots' data goes at the next `rewind prune`");
        }
        return Ok(());
    }
    let client = args.repo.server.client()?;
    let answer = client.forget(&ForgetRequest {
        policy: args.policy,
        host: args.repo.host,
        dry_run: args.dry_run,
        min_age_days: args.min_age,
    })?;
    for (host, decisions) in &answer.hosts {
        print_decisions(host, decisions, args.dry_run);
    }
    Ok(())
}

/// Keep the snapshots younger than `days` (by their time), with `reason`.
pub fn hold_younger(decisions: &mut [forget::Decision], now: i64, days: u64, reason: &str) {
    let limit = now.saturating_sub(days.saturating_mul(86_400) as i64);
    for d in decisions.iter_mut().filter(|d| !d.keep) {
        if crate::time::parse_rfc3339(&d.time).is_some_and(|t| t > limit) {
            d.keep = true;
            d.reasons.push(reason.to_string());
        }
    }
}

fn print_prune(host: &str, r: &prune::PruneReport, dry_run: bool) {
    let verb = if dry_run { "would retire" } else { "retired" };
    println!(
        "{host}: {} snapshots; {} packs: {} kept, {} too young, {verb} {} unused and repacked {} into {}; {} retired packs deleted; {} -> {}",
        r.snapshots,
        r.packs_before,
        r.packs_kept,
        r.packs_young,
        r.packs_retired,
        r.packs_repacked,
        r.packs_written,
        r.retired_deleted,
        human_bytes(r.bytes_before),
        human_bytes(r.bytes_after)
    );
}

pub fn prune_command(args: PruneArgs) -> Result<()> {
    let grace: Duration = prune::parse_duration(&args.grace)?;
    if let Some(dir) = &args.repo.dir {
        let r = prune::prune(dir, grace, args.dry_run)?;
        print_prune(&dir.display().to_string(), &r, args.dry_run);
        return Ok(());
    }
    let client = args.repo.server.client()?;
    let answer = client.prune(&PruneRequest {
        grace: Some(args.grace),
        host: args.repo.host,
        dry_run: args.dry_run,
    })?;
    for (host, r) in &answer.hosts {
        print_prune(host, r, args.dry_run);
    }
    Ok(())
}

/// `--disk`'s check: `CAPTURED=PRESENT`, kept as given.
fn check_disk_mapping(s: &str) -> Result<String, String> {
    crate::api::parse_disk_mapping(s).map(|_| s.to_string())
}
