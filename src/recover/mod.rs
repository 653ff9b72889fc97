//! The recovery as named stages ([`Stage`]), each run by one wrapper
//! (`Recovery::stage`) that announces it on the console by a marker line
//! (`rewind: == stage fetch == [9.4 s since boot]`), writes it to the file
//! PID 1 reads, reports it to the server and names it in a failure:
//!
//! ```text
//! fetch → plan → partition → format → mount → restore → configure → bootloader → finish
//! ```
//!
//! In the live image (`rewind recover --live`, started by PID 1) two stages
//! come first: `hardware` (kernel modules for the devices found) and
//! `network` (DHCP or `ip=`). Nothing asks a question. No disk is written
//! unless the server holds an armed recovery request for this machine:
//! without one, the plan is shown and the server is asked again every
//! `rewind.poll` seconds. A failure names its stage on the console, is
//! reported to the server when it can be, and leaves the disks as the stage
//! left them.

mod configure;
mod report;
mod resume;
mod session;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::client::ServerArgs;
use crate::console::{say, uptime};
use crate::init::{
    self,
    cmdline::{Action, Settings},
};
use crate::kmod;
use crate::layout::{
    self,
    format::Tools,
    plan, present,
    raw::{NoRawData, RawSource},
};
use crate::manifest::Manifest;
use crate::netcfg;
use crate::raw_regions::RepoRaw;
use crate::stage::Stage;
use report::Reporter;
use session::{RequestInfo, Session, Target};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    rewind recover --server https://backup:8443 --pin PIN --token RECOVERY_TOKEN\n  \
    rewind recover --server URL --token T --plan          show what would be done\n\n\
The recovery image runs `rewind recover --live`, which reads these settings from the\n\
kernel command line (docs/boot.md), loads the kernel modules the hardware needs and\n\
brings the network up first.")]
pub struct RecoverArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The host to recover (default: found by this machine's MAC addresses).
    #[arg(long)]
    pub host: Option<String>,
    /// The point in time when no request says it (RFC 3339 or `latest`).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Show the plan and write nothing.
    #[arg(long)]
    pub plan: bool,
    /// Put captured disk CAPTURED on present disk PRESENT (repeatable).
    #[arg(long = "disk", value_name = "CAPTURED=PRESENT", value_parser = parse_mapping)]
    pub disks: Vec<(String, String)>,
    /// Grow the last partition on a bigger disk.
    #[arg(long)]
    pub grow: bool,
    /// Shrink the filesystems onto a smaller disk when their data fits.
    #[arg(long)]
    pub shrink: bool,
    /// Any disk that is not blank may be chosen (otherwise only one whose
    /// serial or WWN is the captured disk's, or one named with --disk).
    #[arg(long)]
    pub overwrite_non_blank: bool,
    /// Reinstall GRUB from the restored system (in a chroot) even where the
    /// captured boot code and core image could be written back as they were.
    #[arg(long)]
    pub reinstall_grub: bool,
    /// Rebuild the restored system's initramfs with its own tool:
    /// regenerate, auto (when disk controllers, NIC drivers or the
    /// firmware mode differ from the captured ones) or keep.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub initramfs: crate::initramfs::Mode,
    /// The recovered machine's host name, when not the captured one.
    #[arg(long, value_name = "NAME", value_parser = crate::retarget::parse_hostname)]
    pub hostname: Option<String>,
    /// A new static address for a captured interface (another site):
    /// IFACE:ADDRESS/PREFIX[:GATEWAY] (repeatable).
    #[arg(long = "address", value_name = "IFACE:CIDR[:GW]", value_parser = crate::retarget::parse_address)]
    pub addresses: Vec<crate::retarget::AddressOverride>,
    /// Where the recreated filesystems are mounted during the restore.
    #[arg(long, value_name = "DIR", default_value = "/target")]
    pub target_root: PathBuf,
    /// Seconds between two questions to the server while no request is armed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub poll: u64,
    /// Run as the recovery image's worker: settings from the kernel command
    /// line, modules and network first.
    #[arg(long, hide = true)]
    pub live: bool,
    /// With --live: settings from this text instead of /proc/cmdline.
    #[arg(long, hide = true, value_name = "TEXT")]
    pub cmdline: Option<String>,
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((c, p)) if !c.is_empty() && !p.is_empty() => Ok((c.to_string(), p.to_string())),
        _ => Err(format!("{s:?} is not CAPTURED=PRESENT (e.g. sda=/dev/sdb)")),
    }
}

/// A failure and the stage it happened in.
#[derive(Debug)]
pub struct StageFailure {
    pub stage: Stage,
    pub error: anyhow::Error,
}

impl std::fmt::Display for StageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stage {} failed: {:#}", self.stage, self.error)
    }
}

/// How a recovery ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Recovered,
    /// The plan was shown and nothing written (`--plan`, `rewind.action=plan`).
    Planned,
}

/// `rewind recover`.
pub fn recover_command(args: RecoverArgs) -> Result<()> {
    if args.live {
        let settings = match &args.cmdline {
            Some(text) => init::cmdline::in_image(text),
            None => init::cmdline::read(),
        };
        std::process::exit(live(settings, &args.target_root));
    }
    let settings = Settings {
        server: args.server.server.clone(),
        token: args.server.token.clone(),
        pins: args.server.pins.clone(),
        insecure_http: args.server.insecure_http,
        at: args.at.clone(),
        host: args.host.clone(),
        action: if args.plan {
            Action::Plan
        } else {
            Action::Recover
        },
        disks: args.disks.clone(),
        grow: args.grow,
        shrink: args.shrink,
        overwrite_non_blank: args.overwrite_non_blank,
        poll: Duration::from_secs(args.poll.max(1)),
        reinstall_grub: args.reinstall_grub,
        initramfs: args.initramfs,
        overrides: crate::retarget::Overrides {
            hostname: args.hostname.clone(),
            addresses: args.addresses.clone(),
        },
        ..Settings::default()
    };
    let mut r = Recovery::new(settings, &args.target_root, args.server.ca.clone());
    match r.run() {
        Ok(_) => Ok(()),
        Err(e) => {
            r.failed(&e);
            Err(anyhow!("recovery failed in {e}"))
        }
    }
}

/// The live image's worker: hardware, network, then the recovery. Returns
/// the exit status PID 1 acts on.
pub fn live(settings: Settings, target_root: &Path) -> i32 {
    let started = Instant::now();
    for w in &settings.warnings {
        eprintln!("rewind: warning: {w}");
    }
    let mut r = Recovery::new(settings, target_root, None);
    r.hold_for_report = true;
    if let Err(e) = r.stage(Stage::Hardware, |r| hardware(&r.settings)) {
        r.failed(&e);
        return 1;
    }
    let network = r.stage(Stage::Network, |r| network(&r.settings));
    if r.settings.action == Action::Shell {
        if let Err(e) = network {
            eprintln!("rewind: network: {:#}", e.error);
        }
        return init::EXIT_SHELL;
    }
    if let Err(e) = network {
        r.failed(&e);
        return 1;
    }
    // Before anything else talks to the server or writes a disk (docs/boot.md).
    init::clock::set_from_server(&r.settings, r.ca.as_deref());
    match r.run() {
        Ok(Outcome::Recovered) => {
            say(&format!(
                "recovery finished in {} ({:.0} s since boot)",
                human_duration(started.elapsed()),
                uptime()
            ));
            0
        }
        Ok(Outcome::Planned) => init::EXIT_HOLD,
        Err(e) => {
            r.failed(&e);
            1
        }
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Load the modules the hardware asks for, then give disks a moment to
/// appear (USB and SATA probe in the background). Nothing here fails the
/// stage: a module that does not load is a warning, and the stages that
/// need a disk or a NIC say when there is none.
fn hardware(settings: &Settings) -> Result<()> {
    let index = match kmod::Index::running() {
        Ok(i) => i,
        Err(e) => {
            say(&format!("warning: no module index: {e:#}"));
            return Ok(());
        }
    };
    let mut loader = kmod::Loader::new(index);
    let mut preload: Vec<String> = std::fs::read_to_string("/etc/rewind-preload")
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    preload.extend(settings.modules.iter().cloned());
    let t = Instant::now();
    let devices = kmod::coldplug(&mut loader, &preload, Duration::from_secs(20));
    say(&format!(
        "{} modules loaded for {devices} devices in {:.1} s: {}",
        loader.newly.len(),
        t.elapsed().as_secs_f64(),
        loader.newly.join(" ")
    ));
    for (m, why) in &loader.failed {
        say(&format!("warning: module {m}: {why}"));
    }
    say(&firmware_line());
    settle_disks(Duration::from_secs(10));
    let disks = crate::probe::disks::list_disks(Path::new("/sys")).unwrap_or_default();
    say(&format!(
        "disks: {}",
        if disks.is_empty() {
            "none".to_string()
        } else {
            disks.join(" ")
        }
    ));
    Ok(())
}

/// How the image was booted: BIOS, or UEFI with Secure Boot on or off (the
/// drills and an operator reading the console check it).
fn firmware_line() -> String {
    let efivars = Path::new("/sys/firmware/efi/efivars");
    if !Path::new("/sys/firmware/efi").is_dir() {
        return "firmware: BIOS".into();
    }
    let state = match crate::bootloader::efi::ensure_efivarfs(efivars)
        .ok()
        .and_then(|()| crate::probe::efi::secure_boot(efivars))
    {
        Some(true) => "Secure Boot on",
        Some(false) => "Secure Boot off",
        None => "Secure Boot state unknown (no SecureBoot variable)",
    };
    format!("firmware: UEFI, {state}")
}

/// Wait until the list of block devices has not changed for a second.
fn settle_disks(limit: Duration) {
    let list = || {
        let mut v: Vec<String> = std::fs::read_dir("/sys/block")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let started = Instant::now();
    let mut last = list();
    let mut stable_since = Instant::now();
    while started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(250));
        let now = list();
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
}

fn network(settings: &Settings) -> Result<()> {
    match netcfg::bring_up(&settings.ip, settings.link_wait)? {
        Some(c) => {
            say(&format!("network: {c}"));
            netcfg::keep_lease(&c);
        }
        None => say("network: left alone (ip=off)"),
    }
    Ok(())
}

/// A stage's marker line on the console (after `rewind: `). The QEMU tests
/// and the drills find the stages by it: keep it as it is.
fn marker(stage: Stage, uptime: f64) -> String {
    format!("== stage {stage} == [{uptime:.1} s since boot]")
}

/// One recovery: settings, where it stands, and who hears about it.
pub struct Recovery {
    settings: Settings,
    target_root: PathBuf,
    ca: Option<PathBuf>,
    /// The stage announced last; `None` before the first.
    stage: Option<Stage>,
    /// Where the stage is recorded for PID 1 ([`init::STAGE_FILE`]).
    stage_file: PathBuf,
    reporter: Option<Reporter>,
    started: Instant,
    /// How long each stage run so far took, in order (a stage run twice,
    /// like fetch after waiting for a request, appears twice).
    timings: Vec<(Stage, Duration)>,
    /// Hold until the server records a failure (the live image; a command
    /// run by hand says it could not and returns).
    hold_for_report: bool,
    /// The pause between two tries to record the result while holding
    /// ([`RESULT_RETRY`]; shorter in tests).
    result_retry: Duration,
    /// The disks an interrupted run of this request chose on this machine
    /// (the server's claim record): the plan may take them again.
    chosen_before: Vec<crate::api::DiskChoice>,
}

/// What the fetch stage found.
enum Fetched {
    /// An armed request, and its snapshot's manifest.
    Armed { target: Target, manifest: Manifest },
    /// No armed request yet; the manifest to show a plan of, when the token
    /// may read it.
    Waiting {
        target: Target,
        preview: Option<Manifest>,
    },
}

impl Recovery {
    pub fn new(settings: Settings, target_root: &Path, ca: Option<PathBuf>) -> Recovery {
        Recovery {
            settings,
            target_root: target_root.to_path_buf(),
            ca,
            stage: None,
            stage_file: PathBuf::from(init::STAGE_FILE),
            reporter: None,
            started: Instant::now(),
            timings: Vec::new(),
            hold_for_report: false,
            result_retry: RESULT_RETRY,
            chosen_before: Vec::new(),
        }
    }

    /// Run one stage: announce it (the marker line with the time since
    /// boot, the stage file PID 1 reads, the server), then `work`, whose
    /// error becomes a failure that names the stage.
    fn stage<T>(
        &mut self,
        stage: Stage,
        work: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T, StageFailure> {
        self.stage = Some(stage);
        init::write_stage_file(&self.stage_file, stage);
        say(&marker(stage, uptime()));
        if let Some(r) = &self.reporter {
            r.stage(stage);
        }
        let started = Instant::now();
        let result = work(self);
        self.timings.push((stage, started.elapsed()));
        result.map_err(|error| StageFailure { stage, error })
    }

    /// `fetch 2.1s, plan 0.3s, ...`: where a recovery spent its time.
    fn timings_line(&self) -> String {
        let parts: Vec<String> = self
            .timings
            .iter()
            .map(|(s, d)| format!("{s} {}", human_duration(*d)))
            .collect();
        parts.join(", ")
    }

    /// Print the failure and report it to the server when possible; leave
    /// the disks as they are, but unmount what is mounted so that what was
    /// written reaches them.
    pub fn failed(&mut self, e: &StageFailure) {
        say(&format!(
            "recovery FAILED in stage {}: {:#}",
            e.stage, e.error
        ));
        say(&format!("stage times: {}", self.timings_line()));
        if self.target_root.exists() {
            let _ = layout::mount::unmount_below(&self.target_root);
        }
        nix::unistd::sync();
        match &self.reporter {
            // The live image holds until the server has recorded the
            // failure, as it does for a success: a machine that reboots
            // with its request still running on the server would start
            // the recovery again at its next network boot.
            Some(r) if self.hold_for_report => {
                let message = format!("{:#}", e.error);
                if hold_until_recorded(|| r.result(false, e.stage, &message), self.result_retry) {
                    say("the failure was reported to the server");
                }
            }
            Some(r) => match r.result(false, e.stage, &format!("{:#}", e.error)) {
                Ok(()) => say("the failure was reported to the server"),
                Err(err) => say(&format!(
                    "could not report the failure to the server: {err:#}"
                )),
            },
            None => say("the failure could not be reported: no recovery token for the server yet"),
        }
    }

    fn run(&mut self) -> Result<Outcome, StageFailure> {
        let (session, fetched) = self.stage(Stage::Fetch, |r| {
            let session = Session::open(&r.settings, r.ca.as_deref())?;
            say(&format!(
                "server {} ({} token); this machine: {}",
                session.base(),
                session.kind,
                session.macs.join(" ")
            ));
            let target = session.find_target(&r.settings)?;
            let fetched = if target.request.is_some() {
                let manifest = r.fetch_armed(&session, &target)?;
                Fetched::Armed { target, manifest }
            } else if session.can_read_manifests() {
                let m = session.manifest_for(&r.settings, &target)?;
                describe(&m, None);
                Fetched::Waiting {
                    target,
                    preview: Some(m),
                }
            } else {
                Fetched::Waiting {
                    target,
                    preview: None,
                }
            };
            Ok((session, fetched))
        })?;

        let (target, manifest) = match fetched {
            Fetched::Armed { target, manifest } => (target, manifest),
            // No armed request: show what would be done, write nothing, and
            // ask again until one is armed.
            Fetched::Waiting { target, preview } => {
                match preview {
                    Some(m) => {
                        let p = self.stage(Stage::Plan, |r| r.preview_plan(&m))?;
                        print!("{p}");
                    }
                    None => say(&format!(
                        "{} is known to the server; a {} token may not read its manifest before a \
                         recovery is armed, so the plan is shown then",
                        target.host, session.kind
                    )),
                }
                if self.settings.action == Action::Plan {
                    say("plan only (rewind.action=plan): nothing was written");
                    return Ok(Outcome::Planned);
                }
                let target = self.wait_for_request(&session, &target);
                let manifest = self.stage(Stage::Fetch, |r| r.fetch_armed(&session, &target))?;
                (target, manifest)
            }
        };

        self.chosen_before = session.chosen_before();
        let prepared = self.stage(Stage::Plan, |r| {
            let planning_only = r.settings.action == Action::Plan;
            // The repository: raw regions (boot gap, BIOS boot partition)
            // for the format stage, file trees for the restore, captured
            // LUKS headers for the stack (a resume stages them to open it).
            let repo = if manifest.trees().is_empty() || planning_only {
                None
            } else {
                Some(session.repository(&target.host).context(
                    "cannot open the host's repository on the server; nothing was written",
                )?)
            };
            // LUKS volumes: their escrowed keys and headers on the tmpfs,
            // or no write at all (removed when the `Staged` is dropped);
            // before the preflight check, which refuses a LUKS layer
            // without them.
            let stage_keys = |p: &plan::Plan| {
                crate::escrow::staging::stage(
                    p,
                    repo.as_ref(),
                    &|id| session.escrowed_key(&target.host, id),
                    Path::new(layout::stack::WORK_DIR),
                )
            };
            let resumable = if planning_only {
                None
            } else {
                r.resumable(&manifest, &stage_keys)
            };
            let (the_plan, resumed, staged) = match resumable {
                Some(res) => (res.plan, Some((res.recorded, res.stack)), res.staged),
                None => {
                    let (p, marked) = r.plan_marked(&manifest, r.settings.overwrite_non_blank)?;
                    for m in marked {
                        say(&m);
                    }
                    (p, None, None)
                }
            };
            print!("{the_plan}");
            if planning_only {
                return Ok(None);
            }
            // The last look before the first byte is written: still armed?
            session
                .still_armed(&target)
                .context("nothing was written")?;
            record_disk_choices(&session, &the_plan);
            let staged = match staged {
                Some(s) => s,
                None => stage_keys(&the_plan).context("nothing was written")?,
            };
            match &resumed {
                // Only the layers made again are made: their tools, keys.
                Some((_, opened)) => {
                    let mut again = the_plan.clone();
                    again.stack = the_plan
                        .stack
                        .iter()
                        .zip(&opened.layers)
                        .filter(|(_, l)| **l != layout::stack_run::open::Layer::Opened)
                        .map(|(s, _)| s.clone())
                        .collect();
                    layout::preflight(&again).context("preflight check failed")?;
                }
                None => layout::preflight(&the_plan).context("preflight check failed")?,
            }
            Ok(Some((the_plan, repo, staged, resumed)))
        })?;
        let Some((the_plan, repo, staged, resumed)) = prepared else {
            say("plan only (rewind.action=plan): nothing was written");
            return Ok(Outcome::Planned);
        };

        let mut raw: Box<dyn RawSource> = match &repo {
            Some(repo) => Box::new(RepoRaw {
                repo,
                manifest: &manifest,
            }),
            None => Box::new(NoRawData),
        };
        let sys = Path::new("/sys");
        self.stage(Stage::Partition, |_| match &resumed {
            Some(_) => {
                say("resuming: partitioning skipped: every partition table is the planned one");
                Ok(())
            }
            None => layout::partition_disks(&the_plan, sys),
        })?;
        self.stage(Stage::Format, |_| match &resumed {
            Some((_, opened)) if opened.whole() => {
                say(
                    "resuming: formatting skipped: every filesystem's type and UUID verified, \
                     every layer of the storage stack opened",
                );
                Ok(())
            }
            Some((_, opened)) => {
                say(
                    "resuming: formatting skipped but for the storage stack's layers that did \
                     not verify: they are made again, with the filesystems on them",
                );
                layout::remake_stack(&the_plan, opened)
            }
            None => layout::format_disks(&the_plan, raw.as_mut()),
        })?;
        drop(staged);
        self.stage(Stage::Mount, |_| {
            let mounted = layout::mount_filesystems(&the_plan)?;
            println!("{}", layout::recreated(&the_plan, mounted));
            Ok(())
        })?;
        drop(raw);

        let restored = self.stage(Stage::Restore, |r| {
            let restored = r.restore(repo.as_ref(), &manifest, &the_plan, resumed.is_some())?;
            layout::seal_subvolumes(&the_plan);
            Ok(restored)
        })?;
        let hardware = self.stage(Stage::Configure, |r| {
            configure::configure(
                &manifest,
                &the_plan,
                &r.settings.overrides,
                r.settings.initramfs,
            )
        })?;
        self.stage(Stage::Bootloader, |r| {
            crate::bootloader::run(
                &manifest,
                &the_plan,
                &r.target_root,
                r.settings.reinstall_grub,
            )
        })?;
        self.stage(Stage::Finish, |r| {
            // This machine's RTC, as the restored system keeps it.
            init::clock::write_hardware_clock(&r.target_root);
            resume::remove_journals(&manifest, &the_plan);
            layout::mount::unmount_below(&r.target_root)
                .context("cannot unmount the recovered filesystems")?;
            layout::take_down_stack(&the_plan);
            nix::unistd::sync();
            Ok(())
        })?;
        let restore_time = self
            .timings
            .iter()
            .filter(|(s, _)| *s == Stage::Restore)
            .map(|(_, d)| *d)
            .sum();
        let rto = report::rto_per_gib(self.started.elapsed(), restore_time, restored.bytes)
            .map_or_else(String::new, |r| format!(" ({r})"));
        let summary = format!(
            "recovered {} to snapshot {} (taken {}): {} disk(s), {} files, {} in {}{rto}; {}{}",
            target.host,
            manifest.snapshot.id,
            manifest.snapshot.time,
            the_plan.disks.len(),
            restored.files,
            crate::util::size::human_bytes(restored.bytes),
            human_duration(self.started.elapsed()),
            hardware.summary(),
            if resumed.is_some() {
                format!(
                    "; resumed an interrupted recovery: layout kept, {} files ({}) already restored and verified",
                    restored.resumed,
                    crate::util::size::human_bytes(restored.resumed_bytes)
                )
            } else {
                String::new()
            }
        );
        say(&summary);
        say(&format!("stage times: {}", self.timings_line()));
        if let Some(r) = &self.reporter {
            // The machine reboots only once the server knows the request
            // succeeded: otherwise a machine that boots from the network
            // first would be handed the same recovery again.
            let reclaimed: std::cell::RefCell<Option<std::sync::Arc<crate::client::Client>>> =
                std::cell::RefCell::new(None);
            hold_until_recorded(
                || {
                    if let Some(c) = reclaimed.borrow().as_ref() {
                        return c.report_result(true, Stage::Finish, &summary);
                    }
                    match r.result(true, Stage::Finish, &summary) {
                        Err(e)
                            if matches!(
                                crate::client::api_error(&e),
                                Some(crate::api::ApiError::Unauthorized(_))
                            ) =>
                        {
                            // The claim lapsed (a long outage): claim again.
                            let c = session.claim_again()?;
                            let sent = c.report_result(true, Stage::Finish, &summary);
                            *reclaimed.borrow_mut() = Some(c);
                            sent
                        }
                        other => other,
                    }
                },
                self.result_retry,
            );
        }
        Ok(Outcome::Recovered)
    }

    /// The fetch stage once a request is armed: the request's overrides,
    /// progress reports from now on (not for a plan), and the manifest of
    /// its snapshot.
    fn fetch_armed(&mut self, session: &Session, target: &Target) -> Result<Manifest> {
        let req = target.request.clone().unwrap_or_default();
        say(&format!(
            "recovery request {} ({}): {} to snapshot {} taken {}",
            req.id, req.state, target.host, req.snapshot, req.snapshot_time
        ));
        merge_request_overrides(&mut self.settings.overrides, &req);
        merge_request_disk_settings(&mut self.settings, &req);
        if self.settings.action == Action::Plan {
            // A plan reports nothing (the request stays armed), but a boot
            // token still needs the request's token to read the manifest.
            if !session.can_read_manifests() {
                session.recovery_client(&req)?;
            }
        } else {
            self.start_reporting(session, &req);
        }
        let manifest = session.manifest_for(&self.settings, target)?;
        describe(&manifest, Some(&req));
        Ok(manifest)
    }

    /// Ask the server every `rewind.poll` seconds until a request for this
    /// machine is armed. A failed question is a warning: the next one may
    /// work.
    fn wait_for_request(&self, session: &Session, target: &Target) -> Target {
        say(&format!(
            "no recovery request is armed for {}: nothing was written; waiting for one \
             (`rewind request {}` on the server), asking every {} s",
            target.host,
            target.host,
            self.settings.poll.as_secs()
        ));
        loop {
            std::thread::sleep(self.settings.poll);
            match session.find_target(&self.settings) {
                Ok(t) if t.request.is_some() => return t,
                Ok(_) => {}
                Err(e) => say(&format!("warning: asking the server: {e:#}")),
            }
        }
    }

    fn start_reporting(&mut self, session: &Session, req: &RequestInfo) {
        if self.reporter.is_some() {
            return;
        }
        match session.recovery_client(req) {
            Ok(Some(c)) => {
                let r = Reporter::start(c);
                if let Some(stage) = self.stage {
                    r.stage(stage);
                }
                self.reporter = Some(r);
            }
            Ok(None) => say(
                "warning: this token cannot report progress (a host token); the server will not see it",
            ),
            Err(e) => say(&format!("warning: progress will not be reported: {e:#}")),
        }
    }

    /// The plan shown while no request is armed. A request may still ask
    /// to shrink (`rewind request --shrink`): when only a shrunk layout
    /// fits, show it and say how to ask for it, rather than fail.
    fn preview_plan(&mut self, m: &Manifest) -> Result<plan::Plan> {
        match self.plan(m) {
            Err(e) if !self.settings.shrink => {
                self.settings.shrink = true;
                let shrunk = self.plan(m);
                self.settings.shrink = false;
                match shrunk {
                    Ok(p) => {
                        say(&format!(
                            "as captured, the layout fits no disk here ({e:#}); shrunk it \
                             does: arm the request with `rewind request {} --shrink` (or boot \
                             with rewind.shrink=1)",
                            m.snapshot.host
                        ));
                        Ok(p)
                    }
                    Err(_) => Err(e),
                }
            }
            other => other,
        }
    }

    fn plan(&self, m: &Manifest) -> Result<plan::Plan> {
        self.plan_on(m, self.settings.overwrite_non_blank)
    }

    /// An interrupted recovery of the same snapshot on these disks, verified
    /// (`resume`): the plan that made it, and the files its journals record.
    /// The disks hold a layout, so they are not blank: the plan may take a
    /// used disk here, and it is used only if the layout on it, and the
    /// journals in its filesystems, are exactly this recovery's.
    fn resumable(
        &self,
        m: &Manifest,
        stage_keys: &dyn Fn(&plan::Plan) -> Result<crate::escrow::staging::Staged>,
    ) -> Option<resume::Resumable> {
        let candidate = self.plan_on(m, true).ok()?;
        match resume::check(m, candidate, stage_keys) {
            Ok(res) => {
                say(&format!(
                    "resuming: layout verified, {} files already restored",
                    res.recorded
                ));
                Some(res)
            }
            Err(why) => {
                if !why.contains("no GPT") && !why.contains("no MBR") {
                    say(&format!("not resuming: {why}"));
                }
                None
            }
        }
    }

    fn plan_on(&self, m: &Manifest, overwrite_non_blank: bool) -> Result<plan::Plan> {
        self.plan_marked(m, overwrite_non_blank).map(|(p, _)| p)
    }

    /// The plan on this machine's disks ([`plan::plan_here`]), where the
    /// disks an interrupted run of this request chose (its claim record)
    /// may be taken again for the captured disks they were chosen for;
    /// with what was so marked, for the console.
    fn plan_marked(
        &self,
        m: &Manifest,
        overwrite_non_blank: bool,
    ) -> Result<(plan::Plan, Vec<String>)> {
        let opts = plan::PlanOptions {
            mapping: self.settings.disks.clone(),
            grow: self.settings.grow,
            shrink: self.settings.shrink,
            overwrite_non_blank,
            target_root: self.target_root.clone(),
            skip_mount: Vec::new(),
            tools: Tools::detect(),
        };
        let (mut disks, mapping) = present::survey(
            Path::new("/sys"),
            Path::new("/proc"),
            &opts.mapping,
            &present::BootMedium::running(),
        )?;
        let marked = present::mark_chosen_before(&mut disks, &self.chosen_before);
        let p = plan::plan(m, &disks, &plan::PlanOptions { mapping, ..opts })?;
        Ok((p, marked))
    }

    /// Restore every filesystem that has data into its mount, parents first.
    fn restore(
        &mut self,
        repo: Option<&crate::repo::Repo>,
        m: &Manifest,
        the_plan: &plan::Plan,
        resuming: bool,
    ) -> Result<Restored> {
        let Some(repo) = repo else {
            say("the snapshot holds no data: nothing to restore");
            return Ok(Restored::default());
        };
        let mut jobs = Vec::new();
        for (fs, data) in m
            .filesystems
            .iter()
            .flat_map(|fs| fs.data_trees().map(move |d| (fs, d)))
        {
            match the_plan
                .mounts
                .iter()
                .find(|s| s.point == data.from && s.skipped.is_none())
            {
                Some(step) => jobs.push((fs, data, PathBuf::from(&step.target))),
                None => say(&format!(
                    "warning: {} ({}) is not mounted by the plan: its data is not restored",
                    data.from, fs.device
                )),
            }
        }
        // Parents first: / before /home.
        jobs.sort_by_key(|(_, d, _)| layout::mount::order_key(&d.from));
        let total: u64 = jobs.iter().map(|(_, d, _)| d.bytes).sum();
        // Every journal is written before the first file of any: their
        // presence says that the layout was made whole (see resume.rs), so
        // a run cut while restoring the first filesystem resumes too.
        let mut journals = Vec::new();
        for (fs, data, target) in &jobs {
            journals.push(
                resume::Journal::open(target, m, fs, data, resuming, None)
                    .with_context(|| format!("cannot start the resume journal of {}", data.from))?,
            );
        }
        let mut done_before = 0;
        let mut out = Restored::default();
        for ((_, data, target), mut journal) in jobs.into_iter().zip(journals) {
            let tree = data.tree.id();
            let entries = repo
                .tree_entries(&tree)
                .with_context(|| format!("cannot read the file tree of {}", data.from))?;
            let progress = std::sync::Arc::new(crate::progress::Progress::new(
                format!("rewind: restoring {}", data.from),
                Some(data.bytes),
            ));
            if let Some(r) = &self.reporter {
                r.restoring(&data.from, done_before, total, progress.clone());
            }
            let t = Instant::now();
            journal.set_progress(progress.clone());
            let result = crate::repo::prefetch::restore_resuming(
                repo,
                entries,
                &crate::restore::RestoreOptions {
                    target: target.clone(),
                    only: Vec::new(),
                },
                &progress,
                Some(&journal),
            );
            if let Err(e) = journal.flush() {
                say(&format!(
                    "warning: the resume journal of {}: {e:#}; an interrupted run would rewrite more",
                    data.from
                ));
            }
            let stats = result
                .with_context(|| format!("restore of {} into {}", data.from, target.display()))?;
            progress.finish();
            if resuming {
                say(&format!(
                    "{}: {} of {} recorded files verified and kept, the others rewritten",
                    data.from,
                    stats.resumed,
                    journal.earlier()
                ));
            }
            for w in &stats.warnings {
                say(&format!("warning: {w}"));
            }
            say(&format!(
                "{}: {} files, {} directories, {} in {}",
                data.from,
                stats.files,
                stats.dirs,
                crate::util::size::human_bytes(stats.bytes),
                human_duration(t.elapsed())
            ));
            done_before += data.bytes;
            out.files += stats.files;
            out.bytes += stats.bytes;
            out.resumed += stats.resumed;
            out.resumed_bytes += stats.resumed_bytes;
        }
        if let Some(r) = &self.reporter {
            r.restored(total);
        }
        Ok(out)
    }
}

/// What the claim records of a plan's disks ([`present::DiskChoice`]),
/// and the present disks that cannot be recorded (no serial, no WWN, and
/// no hardware path or no partition table).
fn disk_choices(p: &plan::Plan) -> (Vec<crate::api::DiskChoice>, Vec<String>) {
    let mut chosen = Vec::new();
    let mut unknown = Vec::new();
    for d in &p.disks {
        match present::DiskChoice::of(&d.captured, &d.target, d.table_id().as_deref()) {
            Some(c) => chosen.push(c),
            None => unknown.push(d.target.path.clone()),
        }
    }
    (chosen, unknown)
}

/// Before the first write, record on the claim which disks the plan chose,
/// so that a run cut before its restore starts (no resume journal yet) can
/// take them again at its next boot although they are no longer blank. A
/// record that does not arrive is a warning: that next boot then refuses
/// those disks as any non-blank disk (`rewind.overwrite`), as before.
fn record_disk_choices(session: &Session, p: &plan::Plan) {
    let (chosen, unknown) = disk_choices(p);
    for path in &unknown {
        say(&format!(
            "note: {path} has no serial, no WWN and no partition table to know it by: if this run is \
             cut before its restore starts, the next boot cannot know it again (it is not blank \
             then: rewind.overwrite)"
        ));
    }
    if chosen.is_empty() {
        return;
    }
    match session.record_disks(&chosen) {
        Ok(_) => {}
        Err(e) => say(&format!(
            "warning: the server did not record the disks chosen ({e:#}); if this run is cut \
             before its restore starts, the next boot refuses them as not blank \
             (rewind.overwrite)"
        )),
    }
}

/// The request's disk settings (`rewind request --disk`, `--overwrite`,
/// `--shrink`): a mapping where the kernel command line gave none (this
/// machine's own settings win), and the permissions it adds.
fn merge_request_disk_settings(s: &mut Settings, req: &RequestInfo) {
    if req.shrink && !s.shrink {
        say("the request allows shrinking the layout onto a smaller disk (--shrink)");
        s.shrink = true;
    }
    if req.overwrite && !s.overwrite_non_blank {
        say("the request allows overwriting a disk that is not blank (--overwrite)");
        s.overwrite_non_blank = true;
    }
    if req.disks.is_empty() {
        return;
    }
    if !s.disks.is_empty() {
        say(&format!(
            "the request maps disks ({}); rewind.disk= wins",
            req.disks.join(", ")
        ));
        return;
    }
    for d in &req.disks {
        match crate::api::parse_disk_mapping(d) {
            Ok(pair) => s.disks.push(pair),
            Err(e) => say(&format!("warning: the request's disk mapping {e}: ignored")),
        }
    }
    say(&format!("the request maps disks: {}", req.disks.join(", ")));
}

/// The request's host name and addresses, where the kernel command line
/// (this machine's own settings) did not already say otherwise.
fn merge_request_overrides(ov: &mut crate::retarget::Overrides, req: &RequestInfo) {
    if let Some(h) = &req.hostname {
        match &ov.hostname {
            None => {
                say(&format!("the request names the recovered machine {h}"));
                ov.hostname = Some(h.clone());
            }
            Some(mine) => say(&format!(
                "the request names the machine {h}; rewind.hostname={mine} wins"
            )),
        }
    }
    for a in &req.addresses {
        match crate::retarget::parse_address(a) {
            Ok(a) if ov.addresses.iter().any(|o| o.iface == a.iface) => say(&format!(
                "the request's address {} for {} is overridden by rewind.address",
                a.cidr(),
                a.iface
            )),
            Ok(a) => {
                say(&format!(
                    "the request gives {} the address {}",
                    a.iface,
                    a.cidr()
                ));
                ov.addresses.push(a);
            }
            Err(e) => say(&format!(
                "warning: the request's address {a:?}: {e}; ignored"
            )),
        }
    }
}

/// How long the image waits between two tries to record its result.
const RESULT_RETRY: Duration = Duration::from_secs(10);

/// Send the result until the server has recorded it, holding the machine
/// (it does not reboot) meanwhile and saying so on the console. An answer
/// that says the request is over on the server (409, 404, 403, 400) ends
/// the wait too: the server will not start it again. Returns whether the
/// server recorded this result.
fn hold_until_recorded(mut report: impl FnMut() -> Result<()>, pause: Duration) -> bool {
    let mut tries = 0u32;
    loop {
        tries += 1;
        match report() {
            Ok(()) => {
                if tries > 1 {
                    say(&format!(
                        "the server recorded the result after {tries} tries: going on"
                    ));
                }
                return true;
            }
            Err(e)
                if matches!(
                    crate::client::api_error(&e),
                    Some(
                        crate::api::ApiError::Conflict(_)
                            | crate::api::ApiError::NotFound(_)
                            | crate::api::ApiError::Forbidden(_)
                            | crate::api::ApiError::BadRequest(_)
                    )
                ) =>
            {
                say(&format!(
                    "warning: the server did not take the result: {e:#}; the request is over on \
                     the server, so it will not start again"
                ));
                return false;
            }
            Err(e) => {
                say(&format!(
                    "HOLDING: the recovery has ended but the server has not recorded its result \
                     ({e:#}); this machine does not reboot until it has (else it could be \
                     recovered again); retrying in {} s",
                    pause.as_secs()
                ));
                std::thread::sleep(pause);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Restored {
    files: u64,
    bytes: u64,
    /// Files an interrupted run had restored, verified and kept.
    resumed: u64,
    resumed_bytes: u64,
}

fn describe(m: &Manifest, req: Option<&RequestInfo>) {
    let data: u64 = m.backed_up().map(|d| d.bytes).sum();
    say(&format!(
        "snapshot {} of {} taken {}: {} disk(s), {} filesystem(s), {} of data{}",
        m.snapshot.id,
        m.snapshot.host,
        m.snapshot.time,
        m.disks.len(),
        m.filesystems.len(),
        crate::util::size::human_bytes(data),
        req.map_or_else(String::new, |r| format!("; request {} ({})", r.id, r.state))
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The disk choice a run records before its first write, and what its
    /// next boot makes of it (issue 15: a run cut while partitioning or
    /// formatting, before any resume journal): the recorded disk takes its
    /// captured disk again although it now holds the half-made layout; a
    /// disk without serial or WWN is not recorded (and said so).
    #[test]
    fn the_disks_a_run_chose_are_recorded_and_taken_again() {
        use crate::layout::present::tests::{GIB, two_disks};
        use crate::layout::present::{Contents, PresentDisk};
        let m = two_disks();
        let opts = plan::PlanOptions {
            target_root: "/target".into(),
            ..plan::PlanOptions::default()
        };
        let mut sdb = PresentDisk::bare("sdb", 8 * GIB);
        sdb.wwn = Some("naa.5000c500a1b2c3d4".into());
        let sdd = PresentDisk::bare("sdd", 2 * GIB);
        let first = plan::plan(&m, &[sdb.clone(), sdd.clone()], &opts).unwrap();
        let (chosen, unknown) = disk_choices(&first);
        assert_eq!(unknown, ["/dev/sdd"]);
        assert_eq!(
            chosen,
            [present::DiskChoice {
                captured: "vda".into(),
                serial: None,
                wwn: Some("naa.5000c500a1b2c3d4".into()),
                size: 8 * GIB,
                ..Default::default()
            }]
        );
        // As the server keeps it and answers it in the next claim.
        let body = serde_json::to_string(&crate::api::ChosenDisks {
            disks: chosen.clone(),
        })
        .unwrap();
        let back: crate::api::ChosenDisks = serde_json::from_str(&body).unwrap();
        // The run is cut while formatting: sdb holds its new table.
        sdb.contents = Contents::Holds(vec!["gpt partition table".into()]);
        let mut present = vec![sdb, sdd];
        assert!(
            plan::plan(&m, &present, &opts).is_err(),
            "refused without it"
        );
        present::mark_chosen_before(&mut present, &back.disks);
        let again = plan::plan(&m, &present, &opts).unwrap();
        let targets: Vec<&str> = again.disks.iter().map(|d| d.target.path.as_str()).collect();
        assert_eq!(targets, ["/dev/sdb", "/dev/sdd"]);

        // sdd without serial but with a place in the hardware: recorded
        // with the table the plan writes on it (vdb's GPT disk GUID).
        let placed = PresentDisk {
            hw_path: Some("devices/pci0000:00/0000:00:06.0/virtio3".into()),
            ..PresentDisk::bare("sdd", 2 * GIB)
        };
        let with_place = plan::plan(&m, &[present[0].clone(), placed], &opts);
        let (chosen, unknown) = disk_choices(&with_place.unwrap());
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(
            chosen[1].table_id.as_deref(),
            Some("a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e70")
        );
    }

    #[test]
    fn the_kernel_command_line_wins_over_the_request() {
        let mut ov =
            crate::init::cmdline::parse("rewind.hostname=local rewind.address=lan0:10.1.0.5/24")
                .overrides;
        let req = RequestInfo {
            hostname: Some("from-request".into()),
            addresses: vec![
                "lan0:192.0.2.10/24".into(),
                "lan1:192.0.2.11/24:192.0.2.1".into(),
                "nonsense".into(),
            ],
            ..RequestInfo::default()
        };
        merge_request_overrides(&mut ov, &req);
        assert_eq!(ov.hostname.as_deref(), Some("local"));
        let got: Vec<(String, String)> = ov
            .addresses
            .iter()
            .map(|a| (a.iface.clone(), a.cidr()))
            .collect();
        assert_eq!(
            got,
            [
                ("lan0".to_string(), "10.1.0.5/24".to_string()),
                ("lan1".to_string(), "192.0.2.11/24".to_string())
            ]
        );
        let mut none = crate::retarget::Overrides::default();
        merge_request_overrides(&mut none, &req);
        assert_eq!(none.hostname.as_deref(), Some("from-request"));
        assert_eq!(none.addresses.len(), 2);
    }

    /// The request's disk settings: its mapping where the command line
    /// gave none (a signed image's command line gives none: it is locked),
    /// its overwrite and shrink permissions in any case.
    #[test]
    fn the_request_gives_disk_settings_the_command_line_did_not() {
        let req = RequestInfo {
            disks: vec!["vda=/dev/sdb".into(), "vdb=nonsense".into()],
            overwrite: true,
            shrink: true,
            ..RequestInfo::default()
        };
        let mut locked = crate::init::cmdline::parse("rewind.disk=vda=/dev/sdz");
        crate::init::cmdline::lock_disk_settings(&mut locked);
        merge_request_disk_settings(&mut locked, &req);
        assert_eq!(locked.disks, [("vda".to_string(), "/dev/sdb".to_string())]);
        assert!(locked.overwrite_non_blank && locked.shrink);
        let mut own = crate::init::cmdline::parse("rewind.disk=vda=/dev/sdz");
        merge_request_disk_settings(&mut own, &req);
        assert_eq!(own.disks, [("vda".to_string(), "/dev/sdz".to_string())]);
        let mut plain = crate::init::cmdline::parse("");
        merge_request_disk_settings(&mut plain, &RequestInfo::default());
        assert!(plain.disks.is_empty() && !plain.overwrite_non_blank && !plain.shrink);
    }

    /// The server is away when the result is sent: the image holds and
    /// retries until it is recorded; an answer that the request is over
    /// ends the wait without a record.
    #[test]
    fn the_result_is_held_until_the_server_records_it() {
        let mut calls = 0;
        let recorded = hold_until_recorded(
            || {
                calls += 1;
                if calls < 4 {
                    Err(anyhow!("connection refused"))
                } else {
                    Ok(())
                }
            },
            Duration::from_millis(1),
        );
        assert!(recorded);
        assert_eq!(calls, 4, "held and retried until recorded");
        let mut calls = 0;
        let recorded = hold_until_recorded(
            || {
                calls += 1;
                Err(anyhow::Error::new(crate::api::ApiError::Conflict(
                    "request r1 is cancelled".into(),
                )))
            },
            Duration::from_millis(1),
        );
        assert!(!recorded);
        assert_eq!(calls, 1);
    }

    /// The live image's failure path: `failed` sends the failure and, while
    /// the server does not record it (503 three times), holds and sends it
    /// again; it returns only once the server took it. (A machine that
    /// rebooted with its request still running would recover again at its
    /// next network boot.)
    #[test]
    fn a_failure_is_held_until_the_server_records_it() {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let (mut line, mut len, mut request) = (String::new(), 0usize, String::new());
                reader.read_line(&mut request).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).unwrap();
                assert!(
                    request.starts_with("POST /v1/recovery/result "),
                    "{request}"
                );
                bodies.push(String::from_utf8(body).unwrap());
                if bodies.len() < 4 {
                    conn.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .unwrap();
                } else {
                    let answer =
                        serde_json::to_string(&crate::api::RecoveryRequest::default()).unwrap();
                    conn.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{answer}",
                            answer.len()
                        )
                        .as_bytes(),
                    )
                    .unwrap();
                    return bodies;
                }
            }
            bodies
        });
        let mut client = crate::client::Client::new(
            &format!("http://{addr}"),
            "rwd_test",
            &crate::client::Trust::insecure_http(),
        )
        .unwrap();
        client.retry_for = Duration::from_millis(1);
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recovery::new(Settings::default(), &dir.path().join("target"), None);
        r.reporter = Some(Reporter::start(std::sync::Arc::new(client)));
        r.hold_for_report = true;
        r.result_retry = Duration::from_millis(10);
        // The failure as a stage returns it (not run through `stage`, which
        // would also have the reporter's thread send progress).
        let e = StageFailure {
            stage: Stage::Format,
            error: anyhow!("mkfs.ext4 exited with status 1"),
        };
        r.failed(&e);
        let bodies = server.join().unwrap();
        assert_eq!(bodies.len(), 4, "sent until recorded: {bodies:?}");
        for b in &bodies {
            let report: crate::api::ResultReport = serde_json::from_str(b).unwrap();
            assert!(!report.ok, "{b}");
            assert_eq!(report.stage, Stage::Format);
            assert!(
                report.message.contains("mkfs.ext4 exited with status 1"),
                "{b}"
            );
        }
    }

    #[test]
    fn the_marker_line_stays_as_the_tests_read_it() {
        assert_eq!(
            marker(Stage::Fetch, 12.34),
            "== stage fetch == [12.3 s since boot]"
        );
        assert_eq!(
            marker(Stage::Bootloader, 100.0),
            "== stage bootloader == [100.0 s since boot]"
        );
    }

    #[test]
    fn a_stage_is_recorded_and_its_failure_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recovery::new(Settings::default(), dir.path(), None);
        r.stage_file = dir.path().join("run/rewind/stage");
        let seen = r.stage(Stage::Restore, |r| Ok(r.stage)).unwrap();
        assert_eq!(seen, Some(Stage::Restore));
        assert_eq!(init::read_stage_file(&r.stage_file), Some(Stage::Restore));
        let e = r
            .stage(Stage::Format, |_| -> Result<()> {
                Err(anyhow!("mkfs.ext4 exited with status 1"))
                    .context("format stage failed on /dev/vda2")
            })
            .unwrap_err();
        assert_eq!(e.stage, Stage::Format);
        assert_eq!(
            e.to_string(),
            "stage format failed: format stage failed on /dev/vda2: mkfs.ext4 exited with status 1"
        );
        assert_eq!(init::read_stage_file(&r.stage_file), Some(Stage::Format));
        // Both runs are timed, the failed one too.
        let timed: Vec<Stage> = r.timings.iter().map(|(s, _)| *s).collect();
        assert_eq!(timed, [Stage::Restore, Stage::Format]);
        assert!(r.timings_line().starts_with("restore 0.0s, format 0.0s"));
    }
}
