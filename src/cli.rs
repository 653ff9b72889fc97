//! The command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::api::SnapshotSummary;
use crate::browse;
use crate::capture::CaptureOptions;
use crate::client::ops::print_json;
use crate::manifest;
use crate::probe::{self, ProbeOptions};
use crate::progress::Progress;
use crate::repo::check;
use crate::restore::RestoreOptions;
use crate::util::size::human_bytes;

#[derive(Parser, Debug)]
#[command(
    name = "rewind",
    version,
    about = "Bring a dead Linux machine back, whole, at a point in time",
    long_about = "rewind records a machine's configuration (disks, partition tables, \
filesystems, network, boot loader) as an XML manifest and backs up its filesystems \
(incremental, deduplicated, verified), so that the machine can be recreated on new \
disks, at a chosen point in time, with no one at the keyboard."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Record this machine's configuration as a manifest, and back up its
    /// filesystems into a repository as one snapshot.
    Capture(CaptureArgs),
    /// Work with manifest files.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Show how a manifest's disks would be recreated on the disks present:
    /// the disk mapping and every action, writing nothing.
    Plan(crate::layout::PlanArgs),
    /// Recreate a manifest's disk layout: partition, format and mount under
    /// a target root (asks for --yes, never prompts).
    Recreate(crate::layout::RecreateArgs),
    /// List the snapshots in a repository, oldest first.
    Snapshots {
        #[command(flatten)]
        repo: RepoArg,
        /// Print JSON (docs/api.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// List a directory (or show a file) of a snapshot.
    Ls {
        #[command(flatten)]
        repo: RepoArg,
        /// Snapshot id, a unique prefix of it, or `latest`.
        snapshot: String,
        /// Absolute path on the captured machine.
        #[arg(default_value = "/")]
        path: String,
        /// Print JSON (docs/api.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Find which snapshots hold a path: a pattern with `/` matches whole
    /// paths, one without matches names; `*` and `?` are wildcards.
    Find {
        #[command(flatten)]
        repo: RepoArg,
        pattern: String,
        /// Print JSON (docs/api.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Restore a filesystem of a snapshot, or some of its files, into a directory.
    #[command(after_help = "Examples:\n  \
        rewind restore latest --fs / --target /mnt/root              a whole filesystem\n  \
        rewind restore 20261125T06 --fs /home --target /tmp/r /home/ann/notes.txt")]
    Restore {
        #[command(flatten)]
        repo: RepoArg,
        /// Snapshot id, a unique prefix of it, or `latest`.
        snapshot: String,
        /// The mount point of the filesystem to restore, as captured.
        #[arg(long = "fs", value_name = "MOUNTPOINT")]
        fs: String,
        /// Directory to restore into (created if missing).
        #[arg(long, value_name = "DIR")]
        target: PathBuf,
        /// Only these paths (absolute on the captured machine, or relative to
        /// the filesystem) and what is below them.
        paths: Vec<PathBuf>,
    },
    /// Verify every pack and chunk of a repository, and name the files that
    /// damage affects.
    Check {
        #[command(flatten)]
        repo: RepoArg,
        /// Print JSON (docs/api.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Recover this machine from a recovery server: fetch the manifest,
    /// plan, partition, format, mount, restore (only with an armed request).
    Recover(crate::recover::RecoverArgs),
    /// Run the recovery server.
    Serve(crate::server::ServeArgs),
    /// Arm (or cancel) a recovery of a host to a point in time.
    Request(crate::client::commands::RequestArgs),
    /// Show whether each host is recoverable, and recovery requests: armed,
    /// running (stage, bytes, rate), finished; `--check` for monitoring.
    Status(crate::client::commands::StatusArgs),
    /// Create, list and revoke the server's tokens.
    #[command(subcommand)]
    Token(crate::client::commands::TokenCommand),
    /// Forget snapshots by a retention policy (their data goes at the next prune).
    Forget(crate::client::commands::ForgetArgs),
    /// Remove the data no snapshot references.
    Prune(crate::client::commands::PruneArgs),
    /// Have the server read every pack of every host back and check every
    /// hash now (it also does so on a schedule: `serve --verify-every`).
    Verify(crate::client::ops::VerifyArgs),
    /// Show the server's audit log: tokens, recovery requests, forget,
    /// prune, verification; who did what, when.
    Audit(crate::client::ops::AuditArgs),
    /// Print the shell completion script for a shell.
    #[command(after_help = "Examples:\n  \
        rewind completions bash > /usr/share/bash-completion/completions/rewind\n  \
        rewind completions zsh > /usr/share/zsh/vendor-completions/_rewind")]
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (rewind.1, rewind-COMMAND.1, ...) into a directory.
    ManPages {
        /// The directory (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

/// A repository directory, or a host's repository on a server.
pub use crate::client::RepoArg;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    rewind capture --manifest-only                 print this machine's manifest\n  \
    rewind capture --manifest-only -o web1.xml     write it to a file\n  \
    rewind capture --manifest-only --disk /dev/sdb only the disk /dev/sdb")]
pub struct CaptureArgs {
    /// Record the configuration only (partition tables, filesystems, network,
    /// boot loader), not the data.
    #[arg(long, conflicts_with = "repo")]
    pub manifest_only: bool,
    /// Back up the data of every mounted filesystem of the captured disks
    /// into this repository (created if missing), as one snapshot.
    #[arg(long, env = "REWIND_REPO", value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Back up only the filesystem mounted here; repeatable.
    #[arg(long, value_name = "MOUNTPOINT")]
    pub only: Vec<PathBuf>,
    /// Where to write the manifest; `-` is standard output.
    #[arg(short, long, value_name = "FILE", default_value = "-")]
    pub output: PathBuf,
    /// A disk to capture (device path, by-id links accepted); repeatable.
    /// Default: every disk backed by hardware (not loop, ram or zram devices).
    #[arg(long = "disk", value_name = "DEVICE")]
    pub disks: Vec<PathBuf>,
    /// The host name the snapshot is filed under (default: the system's).
    #[arg(long)]
    pub host: Option<String>,
    /// The capture's configuration file (default: /etc/rewind/capture.toml
    /// if it exists); flags override it. See docs/capture.md.
    #[arg(long, value_name = "FILE", env = "REWIND_CAPTURE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read every filesystem live, taking no snapshot.
    #[arg(long)]
    pub live: bool,
    /// Leave out paths matching this pattern (`/srv/cache/*`: the whole
    /// path; `*.tmp`: a name at any depth); an excluded directory is kept
    /// empty. Repeatable; adds to the configuration's patterns.
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Do not apply the default exclusions (/tmp/*, /var/tmp/*, apt's
    /// downloaded packages, swap files...).
    #[arg(long)]
    pub no_default_excludes: bool,
    /// Or back up to a recovery server (into the host's repository there).
    #[command(flatten)]
    pub server: crate::client::ServerArgs,
    /// Escrow each captured LUKS volume's volume key with the recovery
    /// server (your consent: the server then holds, wrapped, what opens the
    /// volume, and releases it to an armed recovery of this host or an
    /// admin; docs/security.md). Without it a LUKS volume's recovery stops
    /// at the plan, since recovery never waits at a passphrase prompt.
    /// `REWIND_ESCROW_LUKS_KEYS=1` (or true/yes/on) in capture.env.
    #[arg(long, env = "REWIND_ESCROW_LUKS_KEYS", value_parser = clap::builder::BoolishValueParser::new())]
    pub escrow_luks_keys: bool,
    /// The volume key of LUKS mapping NAME from FILE (as `cryptsetup
    /// luksDump --dump-volume-key --volume-key-file FILE` writes it), for a
    /// mapping whose key is in the kernel keyring; repeatable.
    #[arg(long = "luks-volume-key", value_name = "NAME=FILE", requires = "escrow_luks_keys", value_parser = parse_key_file)]
    pub luks_volume_keys: Vec<(String, PathBuf)>,
}

fn parse_key_file(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((n, f)) if !n.is_empty() && !f.is_empty() => Ok((n.to_string(), PathBuf::from(f))),
        _ => Err(format!(
            "{s:?} is not NAME=FILE (e.g. cryptroot=/root/cryptroot.vk)"
        )),
    }
}

#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Check that a manifest is well formed and consistent; prints every
    /// problem with its element path.
    Validate {
        /// The manifest file.
        file: PathBuf,
    },
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Capture(args) => capture(args),
        Command::Plan(args) => crate::layout::plan_command(args),
        Command::Recreate(args) => crate::layout::recreate_command(args),
        Command::Snapshots { repo, json } => {
            let host = repo.host.clone();
            let repo = repo.open()?;
            // In the server's order for a server's repository (by its
            // commit times), else by the snapshots' own times.
            let snaps = repo.snapshot_list()?;
            let shown: Vec<_> = snaps
                .iter()
                .filter(|l| {
                    host.as_deref()
                        .is_none_or(|h| l.manifest.snapshot.host == h)
                })
                .collect();
            if json {
                let list: Vec<_> = shown
                    .into_iter()
                    .map(|l| SnapshotSummary {
                        committed: l.committed.clone(),
                        ..SnapshotSummary::of(&l.manifest)
                    })
                    .collect();
                return print_json(&list);
            }
            if shown.is_empty() {
                eprintln!("rewind: no snapshots in {}", repo.describe());
            }
            for l in shown {
                println!(
                    "{}{}",
                    browse::describe_snapshot(&l.manifest),
                    dated_ahead_note(l)
                );
            }
            Ok(())
        }
        Command::Ls {
            repo,
            snapshot,
            path,
            json,
        } => {
            let host = repo.host.clone();
            let repo = repo.open()?;
            let m = repo.find_snapshot(&snapshot, host.as_deref())?;
            let mut entries = Vec::new();
            let listed = browse::ls(&repo, &m, &path, &mut |l| match json {
                true => entries.push(l.json()),
                false => println!("{}", l.line()),
            })?;
            if listed.is_none() {
                bail!(
                    "{path}: no such file or directory in snapshot {}",
                    m.snapshot.id
                );
            }
            if json {
                print_json(&entries)?;
            }
            Ok(())
        }
        Command::Find {
            repo,
            pattern,
            json,
        } => {
            let host = repo.host.clone();
            let repo = repo.open()?;
            let mut entries = Vec::new();
            let n = browse::find(&repo, &pattern, host.as_deref(), &mut |l| match json {
                true => entries.push(l.json()),
                false => println!("{}", l.line()),
            })?;
            if json {
                // An empty list is an answer too: tools need no error for it.
                return print_json(&entries);
            }
            if n == 0 {
                bail!("no snapshot holds a path matching {pattern:?}");
            }
            Ok(())
        }
        Command::Restore {
            repo,
            snapshot,
            fs,
            target,
            paths,
        } => restore_cmd(&repo, &snapshot, &fs, &target, &paths),
        Command::Recover(args) => crate::recover::recover_command(args),
        Command::Serve(args) => crate::server::serve_command(args),
        Command::Request(args) => crate::client::commands::request_command(args),
        Command::Status(args) => crate::client::commands::status_command(args),
        Command::Token(cmd) => crate::client::commands::token_command(cmd),
        Command::Forget(args) => crate::client::commands::forget_command(args),
        Command::Prune(args) => crate::client::commands::prune_command(args),
        Command::Verify(args) => crate::client::ops::verify_command(args),
        Command::Audit(args) => crate::client::ops::audit_command(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "rewind", &mut std::io::stdout());
            Ok(())
        }
        Command::ManPages { out } => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            clap_mangen::generate_to(Cli::command(), &out)
                .with_context(|| format!("cannot write the man pages into {}", out.display()))?;
            Ok(())
        }
        Command::Check { repo, json } => {
            let repo = repo.open()?;
            let report = check::check(&repo, |done, total| {
                if total > 0 && (done % 64 == 0 || done == total) {
                    eprint!("\rrewind: checking packs {done}/{total}");
                }
            })?;
            eprintln!();
            if json {
                print_json(&serde_json::json!({
                    "repository": repo.describe(),
                    "clean": report.is_clean(),
                    "packs": report.packs,
                    "chunks": report.blobs,
                    "snapshots": report.snapshots,
                    "damage": report.damage,
                    "affected": report.affected,
                }))?;
                anyhow::ensure!(report.is_clean(), "{} is damaged", repo.describe());
                return Ok(());
            }
            for d in &report.damage {
                println!("damaged: {d}");
            }
            for a in &report.affected {
                println!("affected: {a}");
            }
            if !report.is_clean() {
                bail!(
                    "{} is damaged: {} problems, {} files affected (listed above)",
                    repo.describe(),
                    report.damage.len(),
                    report.affected.len()
                );
            }
            println!(
                "{}: {} packs, {} chunks and {} snapshots verified, no damage",
                repo.describe(),
                report.packs,
                report.blobs,
                report.snapshots
            );
            Ok(())
        }
        Command::Manifest(ManifestCommand::Validate { file }) => {
            let m = manifest::load(&file)?;
            println!(
                "{}: valid manifest of {} taken {} ({} disks, {} filesystems, {} swap areas)",
                file.display(),
                m.snapshot.host,
                m.snapshot.time,
                m.disks.len(),
                m.filesystems.len(),
                m.swaps.len()
            );
            Ok(())
        }
    }
}

fn capture(mut args: CaptureArgs) -> Result<()> {
    let config = crate::capture::config::Config::load(args.config.as_deref())?;
    // The configuration fills what the command line does not say.
    if args.host.is_none() {
        args.host = config.capture.host.clone();
    }
    if args.disks.is_empty() {
        args.disks = config.capture.disks.clone();
    }
    if args.only.is_empty() && !args.manifest_only {
        args.only = config.capture.only.clone();
    }
    let mut host = args.host;
    let repo = match args.manifest_only {
        true => None,
        false => crate::client::capture_repo(args.repo.as_deref(), &args.server, &mut host)?,
    };
    // A capture to a server reports how it went, failures included.
    let report_to = match (&args.repo, &host) {
        (None, Some(h)) if args.server.server.is_some() => Some(h.clone()),
        _ => None,
    };
    let escrow = match (&report_to, args.escrow_luks_keys) {
        (Some(h), true) => Some(crate::escrow::source::EscrowOptions {
            vault: std::sync::Arc::new(crate::client::ServerVault {
                client: std::sync::Arc::new(args.server.client()?),
                host: h.clone(),
            }),
            key_files: args.luks_volume_keys.clone(),
        }),
        (None, true) => bail!(
            "--escrow-luks-keys escrows keys with a recovery server: give --server URL --token TOKEN (not --repo or --manifest-only)"
        ),
        _ => None,
    };
    let probe_opts = ProbeOptions {
        disks: args.disks,
        host,
        ..ProbeOptions::default()
    };
    if let Some(mut repo) = repo {
        let started = std::time::Instant::now();
        let started_at = crate::time::now_utc();
        let captured = crate::capture::capture(
            &mut repo,
            &CaptureOptions {
                probe: probe_opts,
                only: args.only,
                progress: true,
                escrow,
                snapshots: crate::capture::snapshot::SnapshotOptions {
                    live: args.live || config.capture.live,
                    lvm_percent: config.capture.lvm_snapshot_percent.unwrap_or(100),
                },
                exclude: crate::walk::Exclusions {
                    patterns: config.exclude_patterns(&args.exclude, args.no_default_excludes),
                    cachedir_tag: config.exclude.cachedir_tag,
                    nodump: config.exclude.nodump,
                    ..Default::default()
                },
                hooks: config.clone(),
            },
        );
        let report = match captured {
            Ok(r) => r,
            Err(e) => {
                if let Some(h) = &report_to {
                    let secs = started.elapsed().as_secs_f64();
                    let failed = crate::capture::failed_report(&e, &started_at, secs);
                    crate::client::report_capture(&args.server, h, &failed);
                }
                return Err(e);
            }
        };
        for w in &report.warnings {
            eprintln!("rewind: warning: {w}");
        }
        for fs in &report.filesystems {
            let read = fs.read.map_or("", |r| r.describe());
            eprintln!(
                "rewind: {}: {} entries, {} of content ({} files read, {} unchanged){read}",
                fs.mount_point,
                fs.entries,
                human_bytes(fs.bytes),
                fs.files_read,
                fs.files_reused
            );
        }
        let s = report.stored;
        println!(
            "snapshot {} committed in {:.1}s: {} new chunks ({} stored), {} already in the repository",
            report.manifest.snapshot.id,
            started.elapsed().as_secs_f64(),
            s.blobs_new,
            human_bytes(s.bytes_new_stored),
            s.blobs_dedup
        );
        if let Some(h) = &report_to {
            let sent = report.to_api(&started_at, started.elapsed().as_secs_f64());
            crate::client::report_capture(&args.server, h, &sent);
        }
        return Ok(());
    }
    if !args.only.is_empty() {
        bail!("--only backs up to a repository: give --repo DIR or --server URL");
    }
    if !args.manifest_only {
        bail!(
            "say where the data goes with --repo DIR or --server URL, or record the configuration only with --manifest-only"
        );
    }
    let probed = probe::probe(&probe_opts)?;
    for w in &probed.warnings {
        eprintln!("rewind: warning: {w}");
    }
    let xml = manifest::to_xml(&probed.manifest).context("cannot serialize the manifest")?;
    if args.output == Path::new("-") {
        std::io::stdout()
            .write_all(xml.as_bytes())
            .context("cannot write to standard output")?;
    } else {
        crate::util::fs::write_atomic(&args.output, xml.as_bytes())
            .with_context(|| format!("cannot write {}", args.output.display()))?;
        eprintln!(
            "rewind: wrote {} ({} disks, {} filesystems, {} swap areas)",
            args.output.display(),
            probed.manifest.disks.len(),
            probed.manifest.filesystems.len(),
            probed.manifest.swaps.len()
        );
    }
    Ok(())
}

/// For a snapshot dated after the server committed it (its host's clock,
/// or the host, ahead): where it stands in the list, which is not its date.
fn dated_ahead_note(l: &crate::repo::Listed) -> String {
    let Some(committed) = &l.committed else {
        return String::new();
    };
    match crate::time::parse_rfc3339(committed) {
        Some(c) if c < l.manifest.snapshot.time.unix() => format!(
            "  (dated after its commit at {}: ordered at its commit)",
            crate::time::format_utc(c)
        ),
        _ => String::new(),
    }
}

fn restore_cmd(
    repo: &RepoArg,
    snapshot: &str,
    fs_mount: &str,
    target: &Path,
    paths: &[PathBuf],
) -> Result<()> {
    let host = repo.host.as_deref();
    let repo = repo.open()?;
    let m = repo.find_snapshot(snapshot, host)?;
    let data = m
        .backed_up()
        .find(|d| d.from == fs_mount)
        .with_context(|| {
            let have: Vec<&str> = m.backed_up().map(|d| d.from.as_str()).collect();
            format!(
                "snapshot {} has no data for a filesystem mounted at {fs_mount} (it has: {})",
                m.snapshot.id,
                have.join(" ")
            )
        })?;
    let only = paths
        .iter()
        .map(|p| browse::relative_to(fs_mount, p))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let started = std::time::Instant::now();
    let entries = repo.tree_entries(&data.tree.id())?;
    let progress = Progress::new(format!("rewind: restoring {fs_mount}"), Some(data.bytes));
    let stats = crate::repo::prefetch::restore_with_progress(
        &repo,
        entries,
        &RestoreOptions {
            target: target.to_path_buf(),
            only,
        },
        &progress,
    )
    .with_context(|| {
        format!(
            "restore of {fs_mount} from snapshot {} into {}",
            m.snapshot.id,
            target.display()
        )
    })?;
    progress.finish();
    for w in &stats.warnings {
        eprintln!("rewind: warning: {w}");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "restored {fs_mount} of {} into {}: {} files, {} directories, {} in {secs:.1}s ({}/s)",
        m.snapshot.id,
        target.display(),
        stats.files,
        stats.dirs,
        human_bytes(stats.bytes),
        human_bytes((stats.bytes as f64 / secs.max(0.001)) as u64)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
