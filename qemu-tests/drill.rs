//! Recovery drills: a real Debian machine (debootstrap, Debian's kernel,
//! GRUB) runs in QEMU and captures itself to `rewind serve` on the host with
//! its own capture service; it is changed and captured again; then it is
//! "lost" (a new blank disk), a recovery to the first point in time is
//! armed, the recovery image boots (PXE through the server's iPXE script, or
//! the ISO), recovers with nobody at the keyboard, and the recovered disk is
//! booted from its own boot loader and checked from its serial console.
//!
//! | drill | firmware, table | image booted by | hardware after the loss |
//! |---|---|---|---|
//! | `bios_mbr_pxe` | SeaBIOS, MBR | PXE (iPXE -> server) | same NIC, new disk 30% smaller (the request's `--shrink`) |
//! | `uefi_gpt_iso_new_hardware` | OVMF with Secure Boot (fresh NVRAM, Microsoft's keys), GPT + ESP, shim | ISO | new NIC (MAC), bigger new disk |
//! | `uefi_btrfs_dracut_nvme_4kn` | OVMF with Secure Boot, GPT + ESP, / on btrfs subvolumes, dracut host-only (qemu-tests/drill_btrfs.rs) | ISO | new NIC (e1000), NVMe disk with 4096-byte sectors |
//! | `drill_luks::uefi_luks_lvm_secure_boot_scsi` | OVMF with Secure Boot, GPT: ESP, /boot, LUKS2 -> LVM (root, swap, thin /home), shim; the passphrase typed at boot | ISO | virtio-scsi disk, e1000 NIC (new MAC), bigger disk |
//! | `bios_md_raid1_lvm_thin_sata` | SeaBIOS, MBR on two disks: /boot on MD RAID1 (metadata 1.0), LVM (root, swap, thin /home) on MD RAID1 | PXE (iPXE -> server) | two new disks of different sizes on SATA (AHCI) instead of virtio |
//! | `uefi_md_esp_lvm_sata` | OVMF with Secure Boot, GPT on two disks: the ESP mirrored on MD RAID1 (metadata 1.0), /boot and LVM on MD RAID1 as above, shim; one NVRAM entry (the first member) | ISO | as above, new NIC (MAC); then the second new disk alone boots through the entry made for its member |
//!
//! Each writes a report (every step's and every recovery stage's time,
//! bytes restored, throughput) to target/drill/<drill>.{txt,json}.
//! Needs root, REWIND_IMAGE (scripts/build-image) and the Debian mirror;
//! skipped without them unless REWIND_REQUIRE_QEMU_TESTS=1. `scripts/drill`
//! sets everything up and runs them.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "drill_btrfs.rs"]
mod drill_btrfs;
/// `uefi_luks_lvm_secure_boot_scsi`: encrypted LVM under Secure Boot.
#[path = "drill_luks.rs"]
mod drill_luks;
#[path = "../tests/qemu_util/mod.rs"]
mod qemu_util;
#[path = "../tests/server_util/mod.rs"]
mod server_util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use qemu_util::{Boot, Bus, Disk, Firmware, Image, Nic, Qemu, fresh_secure_boot_vars, stages};
use rewind::manifest::Manifest;
use rewind::stage::Stage;
use server_util::{BIN, ServerProc, printed_recovery_token};

const SOURCE_MAC: &str = "52:54:00:d1:00:01";
const NEW_MAC: &str = "52:54:00:d1:00:99";
const SOURCE_SERIAL: &str = "DRILLSRC0001";
const NEW_SERIAL: &str = "DRILLNEW0002";
/// The stack drill's second disks.
const SOURCE_SERIAL_2: &str = "DRILLSRC0003";
const NEW_SERIAL_2: &str = "DRILLNEW0004";
const ADDRESS: &str = "10.0.2.50/24";
const GATEWAY: &str = "10.0.2.2";
const SOURCE_MIB: u64 = 2048;
/// The BIOS drill's target: 30% smaller than the source, which its data
/// (about 0.5 GB) fits with the headroom (docs/layout.md).
const SHRUNK_MIB: u64 = SOURCE_MIB * 7 / 10;

/// Time limits, generous for TCG on a busy 2-core machine.
const BOOT: Duration = Duration::from_secs(300);
/// A boot through MD and LVM: udev assembles two arrays and activates a
/// volume group with a thin pool, which under TCG on a loaded host took
/// over 300 s to the login prompt.
const STACK_BOOT: Duration = Duration::from_secs(900);
const COMMAND: Duration = Duration::from_secs(120);
const CAPTURE: Duration = Duration::from_secs(1200);

/// The most a stage of the recovery may take to begin, in seconds, from the
/// start of the one before (the first: from power-on). The recovery runs
/// every stage of [`Stage::ALL`], in that order.
fn stage_limit(stage: Stage) -> u64 {
    match stage {
        Stage::Hardware => 300,
        Stage::Network => 120,
        Stage::Fetch => 120,
        Stage::Plan => 120,
        Stage::Partition => 120,
        Stage::Format => 180,
        Stage::Mount => 180,
        // The btrfs drill's 500 MiB took 94-105 s under TCG (checksums).
        Stage::Restore => 240,
        Stage::Configure => 1800,
        Stage::Bootloader => 300,
        Stage::Finish => 600,
    }
}

/// What a console must never show while nobody is at the keyboard.
const PROMPTS: [&str; 8] = [
    "[y/N]",
    "[Y/n]",
    "(y/n)",
    "yes/no",
    "Press any key",
    "Press Enter",
    "Password:",
    "login:",
];

struct Variant {
    name: &'static str,
    hostname: &'static str,
    uefi: bool,
    pxe: bool,
    target_mib: u64,
    new_mac: bool,
    /// The recovery target's disk on an NVMe controller and its NIC an
    /// e1000e, where the source had virtio for both (and an initramfs that
    /// only carries virtio drivers, `MODULES=list`): the initramfs must be
    /// regenerated for the recovered machine to find its root.
    new_hardware: bool,
    /// Two source disks with MD RAID1 + LVM (qemu-tests/guest/build-stack),
    /// recovered onto two new disks (`target_mib` and 512 MiB more) on
    /// SATA instead of virtio.
    stack: bool,
    /// / and /home on btrfs subvolumes, dracut in host-only mode, recovered
    /// onto an NVMe disk with 4096-byte sectors and an e1000 NIC
    /// (qemu-tests/drill_btrfs.rs).
    btrfs: bool,
}

#[test]
fn bios_mbr_pxe() {
    drill(&Variant {
        name: "bios-mbr-pxe",
        hostname: "drill-bios",
        uefi: false,
        pxe: true,
        // 30% smaller than the source: the request asks to shrink.
        target_mib: SHRUNK_MIB,
        new_mac: false,
        new_hardware: false,
        stack: false,
        btrfs: false,
    });
}

#[test]
fn uefi_gpt_iso_new_hardware() {
    drill(&Variant {
        name: "uefi-gpt-iso",
        hostname: "drill-uefi",
        uefi: true,
        pxe: false,
        target_mib: SOURCE_MIB + 1024,
        new_mac: true,
        new_hardware: true,
        stack: false,
        btrfs: false,
    });
}

#[test]
fn bios_md_raid1_lvm_thin_sata() {
    drill(&Variant {
        name: "bios-md-lvm",
        hostname: "drill-stack",
        uefi: false,
        pxe: true,
        target_mib: SOURCE_MIB + 512,
        new_mac: false,
        new_hardware: false,
        stack: true,
        btrfs: false,
    });
}

#[test]
fn uefi_md_esp_lvm_sata() {
    drill(&Variant {
        name: "uefi-md-lvm",
        hostname: "drill-mdesp",
        uefi: true,
        pxe: false,
        target_mib: SOURCE_MIB + 512,
        new_mac: true,
        new_hardware: false,
        stack: true,
        btrfs: false,
    });
}

#[test]
fn uefi_btrfs_dracut_nvme_4kn() {
    drill(&Variant {
        name: "uefi-btrfs-dracut-4kn",
        hostname: "drill-btrfs",
        uefi: true,
        pxe: false,
        target_mib: SOURCE_MIB + 1024,
        new_mac: true,
        new_hardware: false,
        stack: false,
        btrfs: true,
    });
}

fn repo_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn logs_dir() -> PathBuf {
    let d = std::env::var_os("REWIND_QEMU_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join("target/qemu-logs"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run one of the scripts next to this file; its output goes to our stderr.
fn script(name: &str, args: &[&str]) {
    let path = repo_dir().join("qemu-tests").join(name);
    let status = Command::new(&path).args(args).status().unwrap();
    assert!(status.success(), "{} {args:?}: {status}", path.display());
}

/// The static binary the guests run (the one inside the image).
fn static_rewind() -> PathBuf {
    let p = repo_dir().join("target/x86_64-unknown-linux-musl/release/rewind");
    assert!(
        p.exists(),
        "{} is missing (scripts/build-static)",
        p.display()
    );
    p
}

/// The drill's timings and figures, in the order they happened.
#[derive(Default)]
struct Report {
    steps: Vec<(String, f64)>,
    stages: Vec<(Stage, f64)>,
    facts: Vec<(String, String)>,
    /// File data of the snapshot restored.
    restored_bytes: u64,
}

impl Report {
    fn step(&mut self, what: &str, since: Instant) {
        let s = since.elapsed().as_secs_f64();
        eprintln!("drill: {what}: {s:.1} s");
        self.steps.push((what.to_string(), s));
    }

    fn fact(&mut self, what: &str, value: impl ToString) {
        let v = value.to_string();
        eprintln!("drill: {what}: {v}");
        self.facts.push((what.to_string(), v));
    }

    fn write(&self, v: &Variant) -> String {
        self.write_as(v.name)
    }

    /// The report of the drill `name`, written and returned.
    fn write_as(&self, name: &str) -> String {
        let mut t = format!("rewind recovery drill: {name}\n\n");
        for (k, val) in &self.facts {
            t += &format!("  {k:<44} {val}\n");
        }
        t += &format!("\n  {:<72} seconds\n", "step");
        for (k, s) in &self.steps {
            t += &format!("  {k:<72} {s:>7.1}\n");
        }
        t += &format!("\n  {:<72} seconds\n", "recovery stage");
        for (k, s) in &self.stages {
            t += &format!("  {k:<72} {s:>7.1}\n");
        }
        let json = serde_json::json!({
            "drill": name,
            "restored_bytes": self.restored_bytes,
            "restore_mb_per_s": self
                .stages
                .iter()
                .find(|(s, _)| *s == Stage::Restore)
                .map(|(_, secs)| (self.restored_bytes as f64 / 1e6 / secs.max(0.1) * 10.0).round() / 10.0),
            "facts": self.facts.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "steps": self.steps.iter().map(|(k, s)| serde_json::json!({"step": k, "seconds": (s * 10.0).round() / 10.0})).collect::<Vec<_>>(),
            "stages": self.stages.iter().map(|(k, s)| serde_json::json!({"stage": k, "seconds": (s * 10.0).round() / 10.0})).collect::<Vec<_>>(),
        });
        let dir = repo_dir().join("target/drill");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.txt")), &t).unwrap();
        std::fs::write(
            dir.join(format!("{name}.json")),
            serde_json::to_string_pretty(&json).unwrap(),
        )
        .unwrap();
        t
    }
}

/// The seconds since boot of each `== stage X == [N s since boot]` line,
/// made into each stage's duration (the last one ends at `end`).
fn stage_times(console: &str, end: f64) -> Vec<(Stage, f64)> {
    let mut marks: Vec<(Stage, f64)> = Vec::new();
    for line in console.lines() {
        let Some(rest) = line.split("rewind: == stage ").nth(1) else {
            continue;
        };
        let Some(name) = rest
            .split(" ==")
            .next()
            .and_then(|n| n.parse::<Stage>().ok())
        else {
            continue;
        };
        let Some(at) = rest
            .split('[')
            .nth(1)
            .and_then(|r| r.split(" s since boot").next())
            .and_then(|n| n.trim().parse::<f64>().ok())
        else {
            continue;
        };
        marks.push((name, at));
    }
    let mut out = Vec::new();
    for (i, (name, at)) in marks.iter().enumerate() {
        let next = marks.get(i + 1).map(|m| m.1).unwrap_or(end);
        out.push((*name, next - at));
    }
    out
}

fn firmware(uefi: bool, vars: &Path) -> Firmware<'_> {
    if uefi {
        // Secure Boot enforced with Microsoft's keys, as PCs ship: the
        // source boots through Debian's signed shim, the recovery ISO too,
        // and the recovered machine must again.
        Firmware::UefiSecureBoot { vars }
    } else {
        Firmware::Bios
    }
}

/// The recovery server of a drill: a `rewind serve` started for it on
/// 127.0.0.1, or yours (REWIND_DRILL_SERVER, REWIND_DRILL_TOKEN: an admin
/// token, REWIND_DRILL_PIN when it uses a self-signed certificate).
struct DrillServer {
    local: Option<ServerProc>,
    /// As this machine reaches it.
    url: String,
    /// As the guests reach it (QEMU's user network maps the host's
    /// 127.0.0.1 to 10.0.2.2).
    guest_url: String,
    admin: String,
    pin: Option<String>,
}

impl DrillServer {
    /// The recovery image's settings to trust the server: its pin, or
    /// plain HTTP allowed (the local server: QEMU's iPXE cannot check a
    /// self-signed certificate, so the PXE path stays on HTTP).
    fn image_trust(&self) -> String {
        match (&self.pin, self.url.starts_with("http://")) {
            (Some(p), _) => format!("rewind.pin={p}"),
            (None, true) => "rewind.insecure=1".to_string(),
            (None, false) => String::new(),
        }
    }

    fn new(dir: &Path) -> DrillServer {
        Self::new_with(dir, &[])
    }

    /// [`DrillServer::new`], a local server started with `extra`
    /// arguments (`--key-file`).
    fn new_with(dir: &Path, extra: &[&str]) -> DrillServer {
        let guest = |url: &str| {
            url.replace("://127.0.0.1", "://10.0.2.2")
                .replace("://localhost", "://10.0.2.2")
        };
        match std::env::var("REWIND_DRILL_SERVER") {
            Ok(url) => {
                let url = url.trim_end_matches('/').to_string();
                let admin = std::env::var("REWIND_DRILL_TOKEN")
                    .expect("REWIND_DRILL_SERVER needs REWIND_DRILL_TOKEN (an admin token)");
                DrillServer {
                    guest_url: guest(&url),
                    url,
                    admin,
                    pin: std::env::var("REWIND_DRILL_PIN").ok(),
                    local: None,
                }
            }
            Err(_) => {
                let s =
                    ServerProc::start_with(&dir.join("server"), "127.0.0.1:0", false, None, extra);
                DrillServer {
                    url: s.url.clone(),
                    guest_url: guest(&s.url),
                    admin: s.admin.clone(),
                    pin: s.pin.clone(),
                    local: Some(s),
                }
            }
        }
    }

    /// `rewind ARGS` against the server with the admin token; its output.
    fn cli(&self, args: &[&str]) -> String {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("REWIND_SERVER", &self.url)
            .env("REWIND_TOKEN", &self.admin)
            .env_remove("REWIND_REPO");
        if let Some(p) = &self.pin {
            c.env("REWIND_PIN", p);
        }
        if self.url.starts_with("http://") {
            c.env("REWIND_INSECURE_HTTP", "1");
        }
        let out = c.output().unwrap();
        let text = server_util::output_text(&out);
        assert!(out.status.success(), "rewind {}: {text}", args.join(" "));
        text
    }

    /// The first line of `rewind ARGS` that is a token.
    fn token(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        out.lines()
            .find(|l| l.starts_with("rwd_"))
            .unwrap_or_else(|| panic!("no token printed: {out}"))
            .to_string()
    }

    /// The snapshots of `host`, oldest first, read through the API.
    fn snapshots(&self, host: &str) -> Vec<Manifest> {
        let trust = rewind::client::Trust {
            pins: self.pin.iter().cloned().collect(),
            insecure_http: self.url.starts_with("http://"),
            ..Default::default()
        };
        let client = rewind::client::Client::new(&self.url, &self.admin, &trust).unwrap();
        let backend = rewind::client::HttpBackend::new(std::sync::Arc::new(client), host);
        let repo = rewind::repo::Repo::open_backend(std::sync::Arc::new(backend)).unwrap();
        let mut v: Vec<Manifest> = repo
            .snapshots()
            .unwrap()
            .into_iter()
            .filter(|m| m.snapshot.host == host)
            .collect();
        v.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time));
        v
    }

    /// The TCP port the guests reach the server on.
    fn guest_port(&self) -> String {
        let rest = self.guest_url.split("://").nth(1).unwrap_or("");
        let authority = rest.split('/').next().unwrap_or("");
        match authority.rsplit_once(':') {
            Some((_, port)) => port.to_string(),
            None if self.guest_url.starts_with("https") => "443".into(),
            None => "80".into(),
        }
    }
}

/// What the drill compares before the loss and after the recovery, as the
/// machine itself reports it.
fn identity(vm: &mut Qemu, uefi: bool) -> String {
    let esp = if uefi {
        "findmnt -rno UUID,FSTYPE /boot/efi; "
    } else {
        ""
    };
    vm.run_ok(
        &format!(
            "hostname; findmnt -rno UUID,FSTYPE /; findmnt -rno UUID,FSTYPE /home; {esp}\
             swapon --noheadings --show=UUID,TYPE; ip -4 -o addr show dev lan0 | awk '{{print $2, $4}}'"
        ),
        COMMAND,
    )
}

/// The stack as the machine reports it, to compare before the capture and
/// after the recovery: each array's metadata version, level, size, member
/// count, name and UUID; each PV's, VG's and LV's UUID and size.
fn stack_state(vm: &mut Qemu, v: &Variant) -> String {
    vm.run_ok(
        &format!(
            "for a in {}; do echo \"$a\"; mdadm --detail \"$a\" | \
             grep -E '^ *(Version|Raid Level|Array Size|Raid Devices|Name|UUID) :'; done; \
             pvs --noheadings --units b -o pv_uuid,pv_size,vg_name; \
             vgs --noheadings --units b -o vg_name,vg_uuid,vg_size,vg_extent_size; \
             lvs --noheadings --units b -o lv_name,lv_uuid,lv_size,segtype,pool_lv vg0",
            md_arrays(v).join(" ")
        ),
        COMMAND,
    )
}

/// The stack source's arrays: /boot's and the PV's, and on UEFI the ESP's.
fn md_arrays(v: &Variant) -> &'static [&'static str] {
    if v.uefi {
        &["/dev/md/esp", "/dev/md/boot", "/dev/md/pv"]
    } else {
        &["/dev/md/boot", "/dev/md/pv"]
    }
}

/// After a capture of the stack source: no snapshot LV left in vg0 (issue
/// 19: the capture read root and /home from LVM snapshots and removed them).
fn stack_snapshots_gone(vm: &mut Qemu) -> String {
    let lvs = vm.run_ok("lvs --noheadings -o lv_name,lv_tags vg0", COMMAND);
    assert!(
        !lvs.contains("rewind-snap"),
        "a capture left its snapshot behind:\n{lvs}"
    );
    lvs.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Issue 19: a capture killed with SIGKILL while it holds the root's
/// snapshot (an `after-snapshot` drop-in hook that waits) leaves that
/// snapshot LV; the next capture (capture 2, which then must find none
/// left) removes it. Returns what the kill left, as `lvs` shows it.
fn stack_capture_killed(vm: &mut Qemu) -> String {
    vm.run_ok(
        "mkdir -p /etc/rewind/hooks.d && rm -f /run/drill-held && \
         printf '%s\\n' '[[hook]]' 'name = \"drill-hold\"' 'when = \"after-snapshot\"' \
         'filesystem = \"/\"' 'run = \"touch /run/drill-held; sleep 900\"' 'timeout = 1000' \
         > /etc/rewind/hooks.d/99-drill-hold.toml && \
         systemctl start --no-block rewind-capture.service && \
         for i in $(seq 600); do [ -e /run/drill-held ] && break; sleep 1; done; \
         [ -e /run/drill-held ] && systemctl kill -s KILL rewind-capture.service && \
         for i in $(seq 60); do systemctl is-active -q rewind-capture.service || break; sleep 1; done; \
         rm -f /etc/rewind/hooks.d/99-drill-hold.toml; \
         ! systemctl is-active -q rewind-capture.service",
        CAPTURE,
    );
    let lvs = vm.run_ok("lvs --noheadings -o lv_name,lv_tags vg0", COMMAND);
    assert!(
        lvs.contains("rewind-snap"),
        "the killed capture held no snapshot LV (the test proves nothing):\n{lvs}"
    );
    lvs.lines()
        .filter(|l| l.contains("rewind-snap"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How the stack source's first capture read each filesystem, from the
/// manifest's `<data read=...>`: root (ext4 on a linear LV) from a classic
/// LVM snapshot, /home (xfs on a thin LV) from a thin snapshot, /boot (on
/// MD, no snapshot layer) live.
fn stack_read_modes(first: &Manifest) -> String {
    use rewind::manifest::ReadMode;
    let read = |point: &str| {
        first
            .filesystems
            .iter()
            .filter_map(|f| f.data.as_ref())
            .find(|d| d.from == point)
            .unwrap_or_else(|| panic!("the first snapshot has no data from {point}"))
            .read
    };
    let modes = [
        ("/", read("/"), ReadMode::LvmSnapshot),
        ("/home", read("/home"), ReadMode::LvmThinSnapshot),
        ("/boot", read("/boot"), ReadMode::Live),
    ];
    for (point, got, want) in modes {
        assert_eq!(got, Some(want), "{point} was not read as expected");
    }
    modes
        .iter()
        .map(|(p, got, _)| format!("{p} {}", got.map_or("?", |m| m.name())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Both members of every array in sync (waiting for a resync to end).
fn arrays_in_sync(vm: &mut Qemu, v: &Variant) -> String {
    let want = md_arrays(v);
    vm.run(
        &format!("mdadm --wait {}", want.join(" ")),
        Duration::from_secs(1200),
    );
    let mdstat = vm.run_ok("cat /proc/mdstat", COMMAND);
    let arrays = mdstat.lines().filter(|l| l.starts_with("md")).count();
    let synced = mdstat.matches("[2/2] [UU]").count();
    assert!(
        arrays == want.len()
            && synced == want.len()
            && !mdstat.contains("resync")
            && !mdstat.contains("recovery"),
        "the arrays are not all in sync:\n{mdstat}"
    );
    mdstat
}

/// `systemctl is-system-running` once the boot is over: `running`, or the
/// failed units.
fn system_running(vm: &mut Qemu) {
    let (state, _) = vm.run(
        "timeout 300 systemctl is-system-running --wait",
        Duration::from_secs(320),
    );
    if state.trim() != "running" {
        let failed = vm.run_ok(
            "systemctl --failed --no-legend --plain; journalctl -b -p err -o cat --no-pager | tail -n 20; \
             for u in $(systemctl --failed --no-legend --plain | cut -d' ' -f1); do \
             echo \"== $u\"; journalctl -b -u \"$u\" -o short-monotonic --no-pager | tail -n 15; done",
            COMMAND,
        );
        panic!("the system is {state:?}, not running:\n{failed}");
    }
}

/// The stack drill's two source disks, built from the recovery image's
/// shell (this host's kernel has no md or dm) and cached under
/// target/drill-cache/stack-source/VARIANT, keyed by a hash of everything
/// they are made from. Copied (sparse) into `dir` for the drill to boot and change.
fn stack_source(img: &Image, v: &Variant, dir: &Path, logs: &Path) -> [PathBuf; 2] {
    let cache = repo_dir()
        .join("target/drill-cache/stack-source")
        .join(v.name);
    std::fs::create_dir_all(&cache).unwrap();
    let root_tar = repo_dir().join("target/drill-cache/root-stack.tar");
    script(
        "build-source-root-stack",
        &["--out", root_tar.to_str().unwrap()],
    );
    let rewind_bin = static_rewind();
    let mut h = blake3::Hasher::new();
    for f in [
        repo_dir().join("qemu-tests/make-source-disk"),
        repo_dir().join("qemu-tests/guest/build-stack"),
        repo_dir().join("qemu-tests/guest/drill-guest"),
        root_tar.with_extension("tar.stamp"),
        rewind_bin.clone(),
    ] {
        h.update(&std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
    }
    h.update(
        format!(
            "{} {SOURCE_MAC} {ADDRESS} {GATEWAY} {SOURCE_MIB}",
            v.hostname
        )
        .as_bytes(),
    );
    let stamp = h.finalize().to_hex()[..16].to_string();
    let cached = [cache.join("a.img"), cache.join("b.img")];
    let stamp_file = cache.join("stamp");
    if std::fs::read_to_string(&stamp_file).ok().as_deref() != Some(stamp.as_str()) {
        let _ = std::fs::remove_file(&stamp_file);
        let payload = dir.join("stack-payload.img");
        script(
            "make-source-disk",
            &[
                "--variant",
                if v.uefi { "uefi-stack" } else { "bios-stack" },
                "--out",
                payload.to_str().unwrap(),
                "--root-tar",
                root_tar.to_str().unwrap(),
                "--hostname",
                v.hostname,
                "--mac",
                SOURCE_MAC,
                "--address",
                ADDRESS,
                "--gateway",
                GATEWAY,
                "--rewind",
                rewind_bin.to_str().unwrap(),
            ],
        );
        for p in &cached {
            let _ = std::fs::remove_file(p);
            std::fs::File::create(p)
                .unwrap()
                .set_len(SOURCE_MIB << 20)
                .unwrap();
        }
        let mut vm = Qemu::start_with(
            Boot::Direct(
                img,
                "console=ttyS0,115200 rewind.action=shell rewind.done=poweroff rewind.onfail=poweroff"
                    .into(),
            ),
            Firmware::Bios,
            &[
                Disk {
                    path: &cached[0],
                    serial: Some(SOURCE_SERIAL),
                    bus: Bus::Virtio,
                },
                Disk {
                    path: &cached[1],
                    serial: Some(SOURCE_SERIAL_2),
                    bus: Bus::Virtio,
                },
                Disk {
                    path: &payload,
                    serial: None,
                    bus: Bus::Virtio,
                },
            ],
            Nic::virtio(SOURCE_MAC),
            &logs.join(format!("drill-{}-build.log", v.name)),
        );
        vm.expect("emergency shell on /dev/ttyS0", BOOT);
        std::thread::sleep(Duration::from_secs(2));
        vm.run_ok(
            "head -c 65536 /dev/vdc | tr -d '\\000' >/tmp/build-stack && sh /tmp/build-stack",
            Duration::from_secs(2400),
        );
        vm.type_line("exit");
        vm.expect("starting another", Duration::from_secs(30));
        vm.type_line("poweroff");
        vm.expect("rewind: powering off", Duration::from_secs(60));
        assert!(vm.wait_exit(Duration::from_secs(60)).success());
        std::fs::remove_file(&payload).unwrap();
        std::fs::write(&stamp_file, &stamp).unwrap();
    }
    let copies = [dir.join("source.img"), dir.join("source-2.img")];
    for (from, to) in cached.iter().zip(&copies) {
        let st = Command::new("cp")
            .arg("--sparse=always")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success(), "cp {}: {st}", from.display());
    }
    copies
}

fn capture(vm: &mut Qemu, rep: &mut Report, what: &str) {
    let t = Instant::now();
    let (out, status) = vm.run("systemctl start rewind-capture.service", CAPTURE);
    let journal = vm.run_ok(
        "journalctl -u rewind-capture.service -o cat --no-pager | grep -v '^$' | tail -n 12",
        COMMAND,
    );
    assert_eq!(status, 0, "{what} failed: {out}\n{journal}");
    rep.step(what, t);
    eprintln!("{journal}");
}

fn drill(v: &Variant) {
    let Some(img) = Image::get(v.name) else {
        return;
    };
    let _one_vm = qemu_util::one_vm();
    let started = Instant::now();
    let mut rep = Report::default();
    let logs = logs_dir();
    let dir = tempfile::Builder::new()
        .prefix(&format!("rewind-drill-{}-", v.name))
        .tempdir_in("/var/tmp")
        .unwrap();
    let server = DrillServer::new(dir.path());
    let token = server.token(&["token", "create", v.hostname]);
    let guest_url = server.guest_url.clone();
    let port = server.guest_port();
    rep.fact(
        "recovery server",
        match &server.local {
            Some(_) => format!("rewind serve on {} (started for the drill)", server.url),
            None => format!("{} (REWIND_DRILL_SERVER)", server.url),
        },
    );
    rep.fact(
        "firmware",
        if v.uefi {
            "UEFI (OVMF, Secure Boot enforced)"
        } else {
            "BIOS (SeaBIOS)"
        },
    );
    rep.fact(
        "partition table",
        match (v.uefi, v.stack) {
            (true, _) if v.btrfs => {
                "GPT; ESP; / and /home on btrfs subvolumes (@, the default; @home; @snapshots/home-1 read-only); dracut host-only"
            }
            (true, true) => {
                "GPT on two disks; the ESP (vfat) on MD RAID1 (metadata 1.0); /boot ext4 on MD RAID1 (1.0); MD RAID1 (1.2) -> LVM vg0: root ext4, swap, thin pool -> /home xfs"
            }
            (true, false) => "GPT",
            (false, false) => "MBR",
            (false, true) => {
                "MBR on two disks; /boot ext4 on MD RAID1 (metadata 1.0); MD RAID1 (1.2) -> LVM vg0: root ext4, swap, thin pool -> /home xfs"
            }
        },
    );
    rep.fact(
        "recovery image booted by",
        if v.pxe {
            "PXE (iPXE, server script)"
        } else {
            "ISO"
        },
    );
    if v.stack {
        rep.fact(
            "source disks",
            format!("2 x {SOURCE_MIB} MiB virtio, serials {SOURCE_SERIAL}, {SOURCE_SERIAL_2}"),
        );
        rep.fact(
            "target disks",
            format!(
                "{} and {} MiB SATA (AHCI), serials {NEW_SERIAL}, {NEW_SERIAL_2} (blank)",
                v.target_mib,
                v.target_mib + 512
            ),
        );
    } else {
        rep.fact(
            "source disk",
            format!("{SOURCE_MIB} MiB, serial {SOURCE_SERIAL}"),
        );
        rep.fact(
            "target disk",
            format!("{} MiB, serial {NEW_SERIAL} (blank)", v.target_mib),
        );
    }
    let recovery_mac = if v.new_mac { NEW_MAC } else { SOURCE_MAC };
    rep.fact("NIC", format!("{SOURCE_MAC} -> {recovery_mac}"));
    let (target_bus, recovery_nic) = if v.btrfs {
        drill_btrfs::hardware(&mut rep, recovery_mac)
    } else if v.new_hardware {
        rep.fact("hardware", "virtio disk and NIC -> NVMe disk, e1000e NIC");
        (
            Bus::Nvme,
            Nic {
                mac: recovery_mac,
                model: "e1000e",
            },
        )
    } else if v.stack {
        if v.uefi {
            rep.fact(
                "hardware",
                "virtio disks and NIC -> SATA (AHCI) disks of other sizes, e1000e NIC",
            );
            (
                Bus::Sata,
                Nic {
                    mac: recovery_mac,
                    model: "e1000e",
                },
            )
        } else {
            rep.fact(
                "hardware",
                "virtio disks -> SATA (AHCI) disks of other sizes",
            );
            (Bus::Sata, Nic::virtio(recovery_mac))
        }
    } else {
        (Bus::Virtio, Nic::virtio(recovery_mac))
    };

    // 1. The source machine.
    let source = dir.path().join("source.img");
    let source_2 = dir.path().join("source-2.img");
    if v.stack {
        let t = Instant::now();
        stack_source(&img, v, dir.path(), &logs);
        rep.step(
            "the source machine's two disks (built in the recovery image's shell, cached in target/drill-cache)",
            t,
        );
    } else {
        let t = Instant::now();
        let root_tar = repo_dir().join("target/drill-cache/root.tar");
        script("build-source-root", &["--out", root_tar.to_str().unwrap()]);
        rep.step(
            "the Debian root (debootstrap, cached in target/drill-cache)",
            t,
        );
        let root_tar = if v.btrfs {
            drill_btrfs::root_tar(&mut rep)
        } else {
            root_tar
        };
        let t = Instant::now();
        let rewind_bin = static_rewind();
        script(
            "make-source-disk",
            &[
                "--variant",
                match (v.uefi, v.btrfs) {
                    (true, true) => "uefi-btrfs",
                    (true, false) => "uefi",
                    _ => "bios",
                },
                "--out",
                source.to_str().unwrap(),
                "--root-tar",
                root_tar.to_str().unwrap(),
                "--hostname",
                v.hostname,
                "--mac",
                SOURCE_MAC,
                "--address",
                ADDRESS,
                "--gateway",
                GATEWAY,
                "--server",
                &guest_url,
                "--token",
                &token,
                "--rewind",
                rewind_bin.to_str().unwrap(),
                "--disk-serial",
                SOURCE_SERIAL,
                "--size",
                &SOURCE_MIB.to_string(),
                "--pin",
                server.pin.as_deref().unwrap_or(""),
            ],
        );
        rep.step("install the source machine's disk", t);
    }

    // 2. It runs, captures itself, changes, captures again.
    let source_vars = dir.path().join("source-vars.fd");
    if v.uefi {
        fresh_secure_boot_vars(&source_vars);
    }
    let t = Instant::now();
    let mut source_disks = vec![Disk {
        path: &source,
        serial: Some(SOURCE_SERIAL),
        bus: Bus::Virtio,
    }];
    if v.stack {
        source_disks.push(Disk {
            path: &source_2,
            serial: Some(SOURCE_SERIAL_2),
            bus: Bus::Virtio,
        });
    }
    let mut vm = Qemu::start_with(
        Boot::Disk,
        firmware(v.uefi, &source_vars),
        &source_disks,
        Nic::virtio(SOURCE_MAC),
        &logs.join(format!("drill-{}-source.log", v.name)),
    );
    let boot_limit = if v.stack { STACK_BOOT } else { BOOT };
    vm.expect(&format!("DRILL-READY host={}", v.hostname), boot_limit);
    rep.step("boot the source machine (GRUB, kernel, systemd)", t);
    let mut stack_first = String::new();
    let btrfs_first = if v.btrfs {
        drill_btrfs::prepare_source(&mut vm, &mut rep)
    } else {
        String::new()
    };
    if v.stack {
        // The cached disks carry no token: the capture's settings now.
        let mut settings = server
            .pin
            .as_deref()
            .map(|p| format!("REWIND_PIN={p}\\n"))
            .unwrap_or_default();
        // As make-source-disk writes it for a plain-HTTP server.
        if guest_url.starts_with("http://") {
            settings += "REWIND_INSECURE_HTTP=1\\n";
        }
        vm.run_ok(
            &format!(
                "install -d -m 0700 /etc/rewind && printf 'REWIND_SERVER={guest_url}\\nREWIND_TOKEN={token}\\n{settings}' >/etc/rewind/capture.env && chmod 0600 /etc/rewind/capture.env"
            ),
            COMMAND,
        );
        system_running(&mut vm);
        stack_first = stack_state(&mut vm, v);
        eprintln!("drill: the source's stack:\n{stack_first}");
        arrays_in_sync(&mut vm, v);
    }
    if v.uefi {
        // What the installer does: an NVRAM entry for the OS's loader.
        vm.run_ok(
            r"efibootmgr -q -c -d /dev/vda -p 1 -L debian -l '\EFI\debian\shimx64.efi'",
            COMMAND,
        );
        let sb = vm.run_ok("mokutil --sb-state", COMMAND);
        assert!(
            sb.contains("SecureBoot enabled"),
            "the source machine does not run with Secure Boot on: {sb}"
        );
        if v.stack {
            // The entry names the ESP's first member only (an installer
            // knows nothing of the mirror); the first boot's removable
            // path goes, so that only NVRAM entries can boot the disks.
            vm.run_ok("rm -r /boot/efi/EFI/BOOT", COMMAND);
        }
    }
    if v.new_hardware {
        // Disks named by kernel name, as hand-edited and older systems do:
        // the ESP in fstab and the hibernation device on the kernel line and
        // in initramfs-tools' settings. On NVMe they must say nvme0n1pN.
        let named = vm.run_ok(
            "sed -i -E 's#^UUID=[^[:space:]]+([[:space:]]+/boot/efi[[:space:]])#/dev/vda1\\1#' /etc/fstab && \
             echo RESUME=/dev/vda4 >/etc/initramfs-tools/conf.d/resume && \
             sed -i -E 's#^([[:space:]]*linux[[:space:]].*)$#\\1 resume=/dev/vda4#' /boot/grub/grub.cfg && \
             sed -i 's#^GRUB_CMDLINE_LINUX=\"#&resume=/dev/vda4 #' /etc/default/grub && \
             systemctl daemon-reload && umount /boot/efi && mount /boot/efi && \
             findmnt -rno SOURCE /boot/efi && \
             grep -c 'resume=/dev/vda4' /boot/grub/grub.cfg",
            COMMAND,
        );
        assert!(named.lines().any(|l| l == "/dev/vda1"), "{named}");
    }
    assert_eq!(
        vm.run_ok("systemctl is-enabled rewind-capture.timer", COMMAND),
        "enabled"
    );
    vm.run_ok("drill-guest first", COMMAND);
    let state_first = vm.run_ok("drill-guest state", COMMAND);
    let identity_first = identity(&mut vm, v.uefi);
    assert!(
        identity_first.contains(&format!("lan0 {ADDRESS}")),
        "{identity_first}"
    );
    capture(&mut vm, &mut rep, "capture 1 (first, everything)");
    if v.stack {
        let lvs = stack_snapshots_gone(&mut vm);
        rep.fact("LVs in the source after capture 1", lvs);
    }
    vm.run_ok("drill-guest second", COMMAND);
    let state_second = vm.run_ok("drill-guest state", COMMAND);
    assert_ne!(state_first, state_second, "the second step changed nothing");
    if v.stack {
        let t = Instant::now();
        let held = stack_capture_killed(&mut vm);
        rep.step("a capture SIGKILLed holding its snapshot", t);
        rep.fact("left behind by the killed capture", held);
    }
    capture(&mut vm, &mut rep, "capture 2 (incremental)");
    if v.stack {
        let lvs = stack_snapshots_gone(&mut vm);
        rep.fact("LVs in the source after capture 2", lvs);
    }
    vm.type_line("poweroff");
    vm.wait_exit(Duration::from_secs(180));
    drop(vm);

    let snaps = server.snapshots(v.hostname);
    assert_eq!(snaps.len(), 2, "two snapshots expected on the server");
    let first = &snaps[0];
    // Every tree, btrfs subvolumes mounted apart (/home on @home) included.
    let data_bytes: u64 = first.backed_up().map(|d| d.bytes).sum();
    rep.fact(
        "restored to snapshot",
        format!("{} ({})", first.snapshot.id, first.snapshot.time),
    );
    rep.restored_bytes = data_bytes;
    rep.fact(
        "file data in that snapshot",
        format!("{:.1} MB", data_bytes as f64 / 1e6),
    );
    if v.stack {
        rep.fact("capture 1 read", stack_read_modes(first));
    }
    if v.uefi {
        let entries = first
            .boot
            .efi
            .as_ref()
            .map(|e| e.entries.len())
            .unwrap_or(0);
        assert!(
            first
                .boot
                .efi
                .iter()
                .flat_map(|e| &e.entries)
                .any(|e| e.description == "debian"),
            "the capture did not record the debian boot entry ({entries} entries)"
        );
    }

    // The BIOS drill recovers a second time with GRUB reinstalled by the
    // restored system's grub-install (the path taken when the captured boot
    // code cannot be reused).
    let rounds: &[&str] = if v.uefi || v.stack || server.local.is_none() {
        &[""]
    } else {
        &["", "rewind.grub=reinstall"]
    };
    for (round, extra) in rounds.iter().enumerate() {
        let suffix = if round == 0 {
            String::new()
        } else {
            format!("-{}", round + 1)
        };
        let label = if extra.is_empty() {
            String::new()
        } else {
            format!(" [{extra}]")
        };
        // 3. Lost: a new blank disk (bigger in the new-hardware drill).
        let target = dir.path().join(format!("target{suffix}.img"));
        std::fs::File::create(&target)
            .unwrap()
            .set_len(v.target_mib << 20)
            .unwrap();
        let target_2 = dir.path().join(format!("target-2{suffix}.img"));
        if v.stack {
            std::fs::File::create(&target_2)
                .unwrap()
                .set_len((v.target_mib + 512) << 20)
                .unwrap();
        }

        // 4. A recovery to the first point in time, armed on the server.
        // New hardware (another NIC): the operator names the new machine,
        // which is the one the request lets claim the recovery.
        let new_machine = format!("mac={NEW_MAC}");
        let mut request = vec!["request", v.hostname, "--at", &first.snapshot.time];
        if v.new_mac {
            request.extend(["--machine", new_machine.as_str()]);
        }
        let shrink = v.target_mib < SOURCE_MIB;
        if shrink {
            request.push("--shrink");
        }
        let out = server.cli(&request);
        let recovery_token = printed_recovery_token(&out);

        // 5. The recovery image boots and recovers with nobody at the keyboard.
        let recovery_vars = dir.path().join("recovery-vars.fd");
        if v.uefi {
            // The new machine's NVRAM knows no OS.
            fresh_secure_boot_vars(&recovery_vars);
        }
        let log = logs.join(format!("drill-{}-recovery{suffix}.log", v.name));
        let mut disks = vec![Disk {
            path: &target,
            serial: Some(NEW_SERIAL),
            bus: target_bus,
        }];
        if v.stack {
            disks.push(Disk {
                path: &target_2,
                serial: Some(NEW_SERIAL_2),
                bus: target_bus,
            });
        }
        let tftp = dir.path().join("tftp");
        let iso = dir.path().join("rewind.iso");
        let boot = if v.pxe {
            // Our image on our server; your server boots what it serves.
            if let Some(local) = &server.local {
                let boot = local.data.join("boot");
                std::fs::copy(&img.kernel, boot.join("vmlinuz")).unwrap();
                std::fs::copy(&img.initrd, boot.join("initrd.img")).unwrap();
                std::fs::write(
                    boot.join("cmdline"),
                    format!(
                        "console=ttyS0,115200 no_timer_check rewind.done=poweroff rewind.onfail=poweroff {} {extra}\n",
                        server.image_trust()
                    ),
                )
                .unwrap();
            }
            let boot_token = server.token(&["token", "create", "--boot"]);
            std::fs::create_dir_all(&tftp).unwrap();
            std::fs::write(
                tftp.join("rewind.ipxe"),
                format!(
                    "#!ipxe\nchain {guest_url}/boot/ipxe?mac=${{net0/mac}}&token={boot_token}\n"
                ),
            )
            .unwrap();
            Boot::Pxe {
                tftp: &tftp,
                bootfile: "rewind.ipxe",
            }
        } else {
            let out = Command::new(repo_dir().join("scripts/build-image"))
                .args(["--out", img.dir.to_str().unwrap(), "--iso-only", "--iso"])
                .arg(&iso)
                .args([
                    "--cmdline",
                    &format!(
                        "rewind.server={guest_url} rewind.token={recovery_token} \
                     rewind.done=poweroff rewind.onfail=poweroff {} {extra}",
                        server.image_trust()
                    ),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Boot::IsoUefi(&iso)
        };
        let t = Instant::now();
        let mut vm = Qemu::start_with(
            boot,
            firmware(v.uefi, &recovery_vars),
            &disks,
            recovery_nic,
            &log,
        );
        for stage in Stage::ALL {
            vm.expect(
                &format!("rewind: == stage {stage} =="),
                Duration::from_secs(stage_limit(stage)),
            );
        }
        vm.expect("rewind: recovery finished", Duration::from_secs(120));
        let end = vm.elapsed().as_secs_f64();
        let status = vm.wait_exit(Duration::from_secs(60));
        assert!(status.success(), "QEMU: {status}");
        rep.step(
            &format!("recovery{label}: power-on to power-off, unattended"),
            t,
        );
        let console = vm.console();
        drop(vm);
        let seen = stages(&console);
        assert_eq!(
            seen,
            Stage::ALL.map(|s| s.to_string()).to_vec(),
            "stages out of order or repeated"
        );
        for p in PROMPTS {
            assert!(
                !console.contains(p),
                "the recovery console showed a prompt: {p:?}"
            );
        }
        assert!(
            !console.contains("FAILED"),
            "the recovery console says FAILED"
        );
        if let Some(line) = console.lines().find(|l| l.contains("rewind: initramfs")) {
            rep.fact(
                &format!("initramfs{label}"),
                line.split("rewind: ").nth(1).unwrap_or(line).trim(),
            );
        }
        if shrink {
            // The plan printed the shrunk layout: the first partition (/)
            // shrunk, the others after it.
            let plan: Vec<&str> = console
                .lines()
                .skip_while(|l| !l.contains("shrink (--shrink): "))
                .enumerate()
                .take_while(|(i, l)| *i == 0 || l.starts_with("    partition "))
                .map(|(_, l)| l)
                .map(str::trim)
                .collect();
            assert!(
                plan.first().is_some_and(|l| l.contains(&format!(
                    "the captured layout needs 2.0 GiB, this disk has {:.1} GiB; its data fits",
                    v.target_mib as f64 / 1024.0
                ))),
                "the plan did not print the shrunk layout:\n{}",
                plan.join("\n")
            );
            assert!(
                plan.iter()
                    .any(|l| l.starts_with("partition 1 (ext4 /): shrunk 1.5 GiB -> ")),
                "{}",
                plan.join("\n")
            );
            if round == 0 {
                rep.fact("shrunk layout", plan.join("; "));
            }
        }
        if v.uefi {
            assert!(
                console.contains("rewind: firmware: UEFI, Secure Boot on"),
                "the recovery image did not run with Secure Boot on"
            );
        }
        if v.btrfs {
            drill_btrfs::check_recovery(&console, &mut rep);
        }
        if v.new_hardware || v.stack {
            assert!(
                console.contains("rewind: initramfs (initramfs-tools): regenerated"),
                "the initramfs was not regenerated for the new hardware"
            );
        }
        if v.stack {
            for line in console.lines().filter(|l| {
                l.contains("mdadm --create")
                    || l.contains("grub-install")
                    || l.contains("mdadm.conf")
            }) {
                eprintln!("drill: {}", line.trim());
            }
            if v.uefi {
                let made: Vec<&str> = console
                    .lines()
                    .filter(|l| l.contains("is on the mirrored ESP: "))
                    .map(|l| l.trim().trim_start_matches("rewind: "))
                    .collect();
                assert!(
                    !made.is_empty(),
                    "the recovery made no NVRAM entry for the ESP's second member"
                );
                rep.fact("the mirrored ESP's entries", made.join("; "));
            }
            rep.fact(
                "GRUB on the new disks",
                if v.uefi {
                    "shim and GRUB as files on the mirrored ESP (restored through the array)"
                } else if console.contains("grub-install --target=i386-pc") {
                    "reinstalled by the restored system's grub-install"
                } else {
                    "the captured boot code and core image of each disk, restored byte for byte"
                },
            );
        }
        // Stage marks count from the kernel's start, as does the last line.
        let finished = console
            .lines()
            .find(|l| l.contains("rewind: recovery finished in"))
            .and_then(|l| l.rsplit('(').next())
            .and_then(|r| r.split(" s since boot").next())
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(end);
        let times = stage_times(&console, finished);
        if !extra.is_empty() {
            let secs = times
                .iter()
                .find(|(s, _)| *s == Stage::Bootloader)
                .map_or(0.0, |t| t.1);
            rep.fact(&format!("bootloader stage{label}"), format!("{secs:.1} s"));
            assert!(
                console.contains("grub-install --target=i386-pc"),
                "GRUB was not reinstalled"
            );
        } else {
            rep.stages = times;
        }
        if let Some((_, restore)) = rep
            .stages
            .iter()
            .filter(|_| round == 0)
            .find(|(s, _)| *s == Stage::Restore)
        {
            rep.fact(
                "restore throughput",
                format!("{:.1} MB/s", data_bytes as f64 / 1e6 / restore.max(0.1)),
            );
        }
        for line in console.lines().filter(|l| l.contains("rewind: recovered ")) {
            rep.fact(
                &format!("recovery summary{label}"),
                line.trim().trim_start_matches("rewind: "),
            );
        }
        // The recovery report: drivers captured and present, and the
        // initramfs decision, on the console and in the server's record.
        let drivers = console
            .lines()
            .find_map(|l| l.split("rewind: drivers: ").nth(1))
            .expect("the recovery report names no drivers");
        rep.fact(&format!("drivers{label}"), drivers.trim());
        let status = server.cli(&["status", "--host", v.hostname]);
        assert!(
            status.contains("drivers changed: ") && status.contains("; initramfs "),
            "rewind status does not show the drivers and the initramfs:\n{status}"
        );

        // 6. The recovered disk boots from its own boot loader.
        let t = Instant::now();
        let mut vm = Qemu::start_with(
            Boot::Disk,
            firmware(v.uefi, &recovery_vars),
            &disks,
            recovery_nic,
            &logs.join(format!("drill-{}-recovered{suffix}.log", v.name)),
        );
        vm.expect("GNU GRUB", BOOT);
        vm.expect(&format!("DRILL-READY host={}", v.hostname), boot_limit);
        rep.step(
            &format!("boot the recovered machine{label} (its GRUB, to login)"),
            t,
        );
        let t = Instant::now();
        assert_eq!(
            vm.run_ok("drill-guest state", COMMAND),
            state_first,
            "the recovered files differ from the first snapshot's"
        );
        assert_eq!(
            identity(&mut vm, v.uefi),
            identity_first,
            "host name, filesystem UUIDs, swap or address differ"
        );
        assert_ne!(
            vm.run("id bob", COMMAND).1,
            0,
            "the second snapshot's user is back"
        );
        assert_eq!(
            vm.run_ok("cat /sys/class/net/lan0/address", COMMAND),
            recovery_mac,
            "lan0 is not the machine's NIC"
        );
        vm.run_ok(
            &format!("timeout 20 bash -c 'exec 3<>/dev/tcp/10.0.2.2/{port}' && echo reached"),
            COMMAND,
        );
        if v.uefi {
            let efi = vm.run_ok("efibootmgr -v", COMMAND);
            let current = efi
                .lines()
                .find_map(|l| l.strip_prefix("BootCurrent: "))
                .unwrap_or_else(|| panic!("no BootCurrent:\n{efi}"))
                .trim()
                .to_string();
            let entry = efi
                .lines()
                .find(|l| l.starts_with(&format!("Boot{current}")))
                .unwrap_or_else(|| panic!("no entry {current}:\n{efi}"));
            assert!(
                entry.contains("debian") && entry.contains(r"\EFI\debian\shimx64.efi"),
                "booted through {entry:?}, not the recreated debian entry (shim):\n{efi}"
            );
            let sb = vm.run_ok("mokutil --sb-state", COMMAND);
            assert!(
                sb.contains("SecureBoot enabled"),
                "the recovered machine does not run with Secure Boot on: {sb}"
            );
            rep.fact(&format!("Secure Boot{label}"), sb.trim().to_string());
            // One entry; with a mirrored ESP, one per member.
            assert_eq!(
                efi.lines().filter(|l| l.contains("debian")).count(),
                if v.stack { 2 } else { 1 },
                "not one entry per ESP:\n{efi}"
            );
            if v.stack {
                rep.fact(
                    &format!("NVRAM entries{label}"),
                    efi.lines()
                        .filter(|l| l.contains("debian"))
                        .map(|l| l.split(r"HD(").next().unwrap_or(l).trim())
                        .collect::<Vec<_>>()
                        .join("; "),
                );
            }
            rep.fact(
                &format!("booted through{label}"),
                entry
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        if v.btrfs {
            drill_btrfs::check_recovered(&mut vm, &mut rep, &btrfs_first);
        }
        if v.new_hardware {
            system_running(&mut vm);
            let named = vm.run_ok(
                "findmnt -rno SOURCE /boot/efi; grep -o 'resume=[^ ]*' /proc/cmdline; \
                 cat /etc/initramfs-tools/conf.d/resume",
                COMMAND,
            );
            assert_eq!(
                named, "/dev/nvme0n1p1\nresume=/dev/nvme0n1p4\nRESUME=/dev/nvme0n1p4",
                "kernel disk names were not renamed for NVMe"
            );
            rep.fact(
                &format!("kernel disk names{label}"),
                "fstab's /dev/vda1 (ESP) and resume=/dev/vda4 (GRUB, initramfs-tools) became nvme0n1p1 and nvme0n1p4; running",
            );
        }
        if v.stack {
            system_running(&mut vm);
            assert_eq!(
                stack_state(&mut vm, v),
                stack_first,
                "the recovered stack differs from the source's"
            );
            let mdstat = arrays_in_sync(&mut vm, v);
            rep.fact(
                "arrays after the recovery",
                mdstat
                    .lines()
                    .filter(|l| l.starts_with("md"))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            rep.fact(
                "stack compared",
                "mdadm --detail, pvs, vgs, lvs (UUIDs, names, sizes, levels): equal",
            );
        }
        if shrink {
            // Healthy on its smaller disk: every unit started, / smaller.
            system_running(&mut vm);
            let df = vm.run_ok("df -B1M --output=size,used / | tail -n 1", COMMAND);
            rep.fact(
                &format!("recovered / (MiB size, used){label}"),
                df.split_whitespace().collect::<Vec<_>>().join(", "),
            );
        }
        rep.step(&format!("checks on the recovered machine{label}"), t);
        vm.type_line("poweroff");
        vm.wait_exit(Duration::from_secs(180));
        drop(vm);
        if v.stack {
            // The second new disk alone (its first disk failed) starts
            // GRUB, which reads /boot from its half of the mirror: GRUB is
            // on every member of /boot's array (BIOS), or the firmware
            // boots the entry made for the ESP's second member (UEFI).
            let t = Instant::now();
            let mut vm = Qemu::start_with(
                Boot::Disk,
                firmware(v.uefi, &recovery_vars),
                &[Disk {
                    path: &target_2,
                    serial: Some(NEW_SERIAL_2),
                    bus: target_bus,
                }],
                recovery_nic,
                &logs.join(format!("drill-{}-recovered-second-disk.log", v.name)),
            );
            vm.expect("GNU GRUB", BOOT);
            rep.step(
                if v.uefi {
                    "the second new disk alone: the firmware boots shim and GRUB from its ESP member, GRUB reads /boot from its half of the mirror"
                } else {
                    "the second new disk alone: its GRUB reads /boot from its half of the mirror"
                },
                t,
            );
            vm.kill();
        }
    }
    rep.fact(
        "drill total",
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    );
    eprintln!("{}", rep.write(v));
}
