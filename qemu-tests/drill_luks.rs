//! The encrypted-LVM drill (issue 13, with issue 14's axes): a UEFI Debian
//! machine installed as the Debian installer's "guided - use entire disk
//! and set up encrypted LVM" makes it (ESP, /boot ext4, LUKS2 -> LVM: root,
//! swap_1 and a thin /home), on virtio disk and NIC, booting through shim
//! under the Secure Boot firmware. It escrows its volume key once (LUKS2
//! keeps the key in the kernel keyring: `luksDump --dump-volume-key` and
//! `rewind capture --luks-volume-key`), captures, changes, captures again
//! with its capture service, and is lost. The ISO recovers it under Secure
//! Boot onto a virtio-scsi disk and an e1000 NIC with nobody at the
//! keyboard; the recovered machine boots through shim, and at its own
//! cryptsetup prompt the drill types the machine's passphrase (the point:
//! the restored header still opens with it). Then its LUKS header, PVs, VG
//! and LVs must be what the source showed before the capture.
//!
//! This host has no device-mapper: the source is built in the recovery
//! image's shell (qemu-tests/guest/build-luks; its initramfs is made on
//! the host, by make-source-disk) and cached by input hash in
//! target/drill-cache/luks-source. rewind is not part of the cached
//! disk: each run installs the binary under test at the first boot, over
//! a TCP connection to the host.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::qemu_util::{
    self, Boot, Bus, Disk, Firmware, Image, Nic, Qemu, fresh_secure_boot_vars, stages,
};
use super::server_util::printed_recovery_token;
use super::{
    ADDRESS, BOOT, COMMAND, DrillServer, GATEWAY, NEW_MAC, NEW_SERIAL, PROMPTS, Report, SOURCE_MAC,
    SOURCE_MIB, SOURCE_SERIAL, capture, identity, logs_dir, repo_dir, script, stage_limit,
    stage_times, static_rewind, system_running,
};
use rewind::stage::Stage;

const NAME: &str = "uefi-luks-lvm";
const HOST: &str = "drill-luks";
/// The machine's own passphrase (make-source-disk --passphrase).
const PASSPHRASE: &str = "rewind drill 13";
/// The mapping, as the installer names it and crypttab keeps it.
const MAPPING: &str = "vda3_crypt";
const LUKS_UUID: &str = "c0de1300-5a1e-4b00-8d2c-4e119f3a6b05";
/// The prompt of cryptsetup's initramfs script.
const UNLOCK: &str = "Please unlock disk vda3_crypt";

#[test]
fn uefi_luks_lvm_secure_boot_scsi() {
    let Some(img) = Image::get(NAME) else {
        return;
    };
    let _one_vm = qemu_util::one_vm();
    luks_drill(&img);
}

/// The LUKS header and the LVM stack as the machine reports them, to
/// compare before the capture and after the recovery: the whole
/// `luksDump` (UUID, cipher, keyslots, digests: the restored header is the
/// captured one) and each PV's, VG's and LV's UUID and size.
fn luks_state(vm: &mut Qemu) -> String {
    vm.run_ok(
        &format!(
            "cryptsetup luksDump /dev/disk/by-uuid/{LUKS_UUID}; \
             pvs --noheadings --units b -o pv_name,pv_uuid,pv_size,vg_name; \
             vgs --noheadings --units b -o vg_name,vg_uuid,vg_size,vg_extent_size,pv_count,lv_count; \
             lvs --noheadings --units b -o lv_name,lv_uuid,lv_size,segtype,pool_lv,lv_attr"
        ),
        COMMAND,
    )
}

/// `lvm2-monitor.service` registers the thin pool with dmeventd at boot;
/// under TCG on a loaded host dmeventd can answer too late ("No input
/// from event server") and the unit fails, leaving the system degraded
/// for a reason that is not the recovery's. Started again once the boot is
/// over; reported.
fn settle_lvm_monitor(vm: &mut Qemu, rep: &mut Report, when: &str) {
    let (_, failed) = vm.run("systemctl is-failed -q lvm2-monitor.service", COMMAND);
    if failed == 0 {
        let why = vm.run_ok(
            "journalctl -b -u lvm2-monitor.service -o cat --no-pager | grep -m1 -E 'event server|Failed' || true",
            COMMAND,
        );
        vm.run_ok("systemctl restart lvm2-monitor.service", COMMAND);
        rep.fact(
            &format!("lvm2-monitor at boot ({when})"),
            format!("failed ({}), started again", why.trim()),
        );
    }
}

/// Boot through GRUB to the cryptsetup prompt, type the passphrase, wait
/// for the login shell.
fn unlock_and_boot(vm: &mut Qemu) {
    vm.expect("GNU GRUB", BOOT);
    // Kernel and initramfs under TCG: over 300 s on a loaded 2-core host.
    vm.expect(UNLOCK, 2 * BOOT);
    // The prompt is printed before cryptsetup reads the console.
    std::thread::sleep(Duration::from_secs(1));
    vm.type_line(PASSPHRASE);
    vm.expect(&format!("DRILL-READY host={HOST}"), 2 * BOOT);
}

/// Serve `bin` once on a TCP port of 127.0.0.1 (the guests' 10.0.2.2):
/// the port. The guest reads it with bash's /dev/tcp.
fn serve_once(bin: &Path) -> u16 {
    let data = std::fs::read(bin).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(&data);
        }
    });
    port
}

/// The source disk, built in the recovery image's shell and cached under
/// target/drill-cache/luks-source keyed by a hash of what it is made from
/// (rewind excepted: installed at each first boot); copied (sparse) into
/// `dir`. Returns the copy and the build's seconds when it was built now.
fn luks_source(img: &Image, dir: &Path, logs: &Path) -> (PathBuf, Option<f64>) {
    let cache = repo_dir().join("target/drill-cache/luks-source");
    std::fs::create_dir_all(&cache).unwrap();
    let root_tar = repo_dir().join("target/drill-cache/root-stack.tar");
    script(
        "build-source-root-stack",
        &["--out", root_tar.to_str().unwrap()],
    );
    // SHA-256 of the inputs, in order, then the settings: what
    // `cat FILES; printf SETTINGS | sha256sum` says, so that a disk built
    // by hand can be put in the cache.
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    for f in [
        repo_dir().join("qemu-tests/make-source-disk"),
        repo_dir().join("qemu-tests/guest/build-luks"),
        repo_dir().join("qemu-tests/guest/drill-guest"),
        repo_dir().join("scripts/systemd/rewind-capture.service"),
        repo_dir().join("scripts/systemd/rewind-capture.timer"),
        root_tar.with_extension("tar.stamp"),
    ] {
        h.update(&std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
    }
    h.update(
        format!("{HOST} {SOURCE_MAC} {ADDRESS} {GATEWAY} {SOURCE_MIB} {PASSPHRASE}").as_bytes(),
    );
    let stamp = rewind::util::hex::encode(h.finish().as_ref())[..16].to_string();
    let cached = cache.join("disk.img");
    let stamp_file = cache.join("stamp");
    let mut built = None;
    if std::fs::read_to_string(&stamp_file).ok().as_deref() != Some(stamp.as_str()) {
        let t = Instant::now();
        eprintln!("drill: building the source disk (cache stamp {stamp})");
        let _ = std::fs::remove_file(&stamp_file);
        let payload = dir.join("luks-payload.img");
        script(
            "make-source-disk",
            &[
                "--variant",
                "uefi-luks",
                "--out",
                payload.to_str().unwrap(),
                "--root-tar",
                root_tar.to_str().unwrap(),
                "--hostname",
                HOST,
                "--mac",
                SOURCE_MAC,
                "--address",
                ADDRESS,
                "--gateway",
                GATEWAY,
                "--rewind",
                static_rewind().to_str().unwrap(),
                "--passphrase",
                PASSPHRASE,
            ],
        );
        let _ = std::fs::remove_file(&cached);
        std::fs::File::create(&cached)
            .unwrap()
            .set_len(SOURCE_MIB << 20)
            .unwrap();
        let mut vm = Qemu::start_with(
            Boot::Direct(
                img,
                "console=ttyS0,115200 rewind.action=shell rewind.done=poweroff rewind.onfail=poweroff"
                    .into(),
            ),
            Firmware::Bios,
            &[
                Disk {
                    path: &cached,
                    serial: Some(SOURCE_SERIAL),
                    bus: Bus::Virtio,
                },
                Disk {
                    path: &payload,
                    serial: None,
                    bus: Bus::Virtio,
                },
            ],
            Nic::virtio(SOURCE_MAC),
            &logs.join(format!("drill-{NAME}-build.log")),
        );
        vm.expect("emergency shell on /dev/ttyS0", BOOT);
        std::thread::sleep(Duration::from_secs(2));
        let out = vm.run_ok(
            "head -c 65536 /dev/vdb | tr -d '\\000' >/tmp/build-luks && sh /tmp/build-luks",
            Duration::from_secs(2400),
        );
        for l in out.lines().filter(|l| l.starts_with("build-luks: [")) {
            eprintln!("drill: {l}");
        }
        vm.type_line("exit");
        vm.expect("starting another", Duration::from_secs(30));
        vm.type_line("poweroff");
        vm.expect("rewind: powering off", Duration::from_secs(60));
        assert!(vm.wait_exit(Duration::from_secs(60)).success());
        std::fs::remove_file(&payload).unwrap();
        std::fs::write(&stamp_file, &stamp).unwrap();
        built = Some(t.elapsed().as_secs_f64());
    }
    let copy = dir.join("source.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&cached)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success(), "cp {}: {st}", cached.display());
    (copy, built)
}

fn luks_drill(img: &Image) {
    let started = Instant::now();
    let mut rep = Report::default();
    let logs = logs_dir();
    let dir = tempfile::Builder::new()
        .prefix(&format!("rewind-drill-{NAME}-"))
        .tempdir_in("/var/tmp")
        .unwrap();
    // The server keeps escrowed keys wrapped with its master key, a file
    // outside its data directory.
    let key_file = dir.path().join("master.key");
    let server = DrillServer::new_with(
        dir.path(),
        &[
            "--key-file",
            key_file.to_str().unwrap(),
            "--create-key-file",
        ],
    );
    let token = server.token(&["token", "create", HOST]);
    let guest_url = server.guest_url.clone();
    let port = server.guest_port();
    rep.fact(
        "recovery server",
        match &server.local {
            Some(_) => format!(
                "rewind serve on {} (started for the drill, --key-file)",
                server.url
            ),
            None => format!("{} (REWIND_DRILL_SERVER)", server.url),
        },
    );
    rep.fact("firmware", "UEFI (OVMF, Secure Boot enforced)");
    rep.fact(
        "partition table",
        "GPT: ESP, /boot ext4, LUKS2 (argon2id) -> LVM drill-luks-vg: root ext4, swap_1, thin pool -> /home ext4",
    );
    rep.fact("recovery image booted by", "ISO");
    let target_mib = SOURCE_MIB + 512;
    rep.fact(
        "source disk",
        format!("{SOURCE_MIB} MiB virtio, serial {SOURCE_SERIAL}"),
    );
    rep.fact(
        "target disk",
        format!("{target_mib} MiB virtio-scsi (/dev/sda), serial {NEW_SERIAL} (blank)"),
    );
    rep.fact("NIC", format!("{SOURCE_MAC} -> {NEW_MAC}"));
    rep.fact(
        "hardware",
        "virtio disk and NIC -> virtio-scsi disk, e1000 NIC",
    );
    let recovery_nic = Nic {
        mac: NEW_MAC,
        model: "e1000",
    };

    // 1. The source machine, built in the recovery image's shell.
    let t = Instant::now();
    let (source, built) = luks_source(img, dir.path(), &logs);
    rep.step(
        "the source machine's disk (built in the recovery image's shell, cached in target/drill-cache)",
        t,
    );
    if let Some(secs) = built {
        rep.fact("source built in the guest in", format!("{secs:.0} s"));
    }

    // 2. It boots through shim, asks its passphrase, escrows its volume
    // key once, captures, changes, captures again with its service.
    let source_vars = dir.path().join("source-vars.fd");
    fresh_secure_boot_vars(&source_vars);
    let t = Instant::now();
    let mut vm = Qemu::start_with(
        Boot::Disk,
        Firmware::UefiSecureBoot { vars: &source_vars },
        &[Disk {
            path: &source,
            serial: Some(SOURCE_SERIAL),
            bus: Bus::Virtio,
        }],
        Nic::virtio(SOURCE_MAC),
        &logs.join(format!("drill-{NAME}-source.log")),
    );
    unlock_and_boot(&mut vm);
    rep.step(
        "boot the source machine (shim, GRUB, passphrase typed, systemd)",
        t,
    );
    // The binary under test, and the capture's settings.
    let bin_port = serve_once(&static_rewind());
    let sum = String::from_utf8(
        Command::new("sha256sum")
            .arg(static_rewind())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let sum = sum.split_whitespace().next().unwrap().to_string();
    vm.run_ok(
        &format!(
            "timeout 120 bash -c 'cat </dev/tcp/10.0.2.2/{bin_port} >/usr/local/bin/rewind.new' && \
             echo '{sum}  /usr/local/bin/rewind.new' | sha256sum -c --quiet && chmod 0755 /usr/local/bin/rewind.new && \
             mv /usr/local/bin/rewind.new /usr/local/bin/rewind"
        ),
        COMMAND,
    );
    let pin = server
        .pin
        .as_deref()
        .map(|p| format!("REWIND_PIN={p}\\n"))
        .unwrap_or_default();
    let insecure = if guest_url.starts_with("http://") {
        "REWIND_INSECURE_HTTP=1\\n"
    } else {
        ""
    };
    vm.run_ok(
        &format!(
            "install -d -m 0700 /etc/rewind && (umask 077; printf 'REWIND_SERVER={guest_url}\\nREWIND_TOKEN={token}\\n{pin}{insecure}REWIND_ESCROW_LUKS_KEYS=1\\n' >/etc/rewind/capture.env)"
        ),
        COMMAND,
    );
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
    settle_lvm_monitor(&mut vm, &mut rep, "source");
    system_running(&mut vm);
    let luks_first = luks_state(&mut vm);
    eprintln!("drill: the source's LUKS header and LVM:\n{luks_first}");
    assert!(
        luks_first.contains(LUKS_UUID) && luks_first.contains("argon2id"),
        "{luks_first}"
    );
    let table = vm.run_ok(
        &format!("dmsetup table --showkeys {MAPPING} | cut -d' ' -f5 | cut -c1-12"),
        COMMAND,
    );
    rep.fact(
        "the opened volume's key",
        if table.contains(":logon:") {
            "in the kernel keyring (LUKS2): escrowed once from luksDump --dump-volume-key"
        } else {
            "in the dm table"
        },
    );
    vm.run_ok("drill-guest first", COMMAND);
    let state_first = vm.run_ok("drill-guest state", COMMAND);
    let identity_first = identity(&mut vm, true);
    assert!(
        identity_first.contains(&format!("lan0 {ADDRESS}")),
        "{identity_first}"
    );
    // The operator escrows the key once (docs/security.md §8): cryptsetup
    // asks the passphrase (here on its standard input), rewind never sees it.
    let t = Instant::now();
    let (out, status) = vm.run(
        &format!(
            "printf %s '{PASSPHRASE}' | cryptsetup luksDump --dump-volume-key --batch-mode --key-file - \
               --volume-key-file /root/{MAPPING}.vk /dev/disk/by-uuid/{LUKS_UUID} >/dev/null && \
             set -a && . /etc/rewind/capture.env && set +a && \
             rewind capture --escrow-luks-keys --luks-volume-key {MAPPING}=/root/{MAPPING}.vk; \
             s=$?; rm -f /root/{MAPPING}.vk; (exit $s)"
        ),
        super::CAPTURE,
    );
    assert_eq!(status, 0, "capture 1 with the escrow failed:\n{out}");
    rep.step(
        "capture 1 (first, everything; the volume key escrowed from --luks-volume-key)",
        t,
    );
    for l in out
        .lines()
        .filter(|l| l.to_lowercase().contains("escrow") || l.contains("LUKS"))
    {
        eprintln!("drill: capture 1: {l}");
    }
    vm.run_ok("drill-guest second", COMMAND);
    let state_second = vm.run_ok("drill-guest state", COMMAND);
    assert_ne!(state_first, state_second, "the second step changed nothing");
    // The daily capture, unattended: it cannot read the key and names the
    // one the server holds.
    capture(&mut vm, &mut rep, "capture 2 (incremental, its service)");
    vm.type_line("poweroff");
    vm.wait_exit(Duration::from_secs(180));
    drop(vm);

    let snaps = server.snapshots(HOST);
    assert_eq!(snaps.len(), 2, "two snapshots expected on the server");
    for s in &snaps {
        let l = s
            .luks
            .iter()
            .find(|l| l.name == MAPPING)
            .unwrap_or_else(|| panic!("snapshot {} has no LUKS volume {MAPPING}", s.snapshot.id));
        assert!(
            l.header.is_some(),
            "snapshot {}: no LUKS header",
            s.snapshot.id
        );
        assert!(
            l.escrow.is_some(),
            "snapshot {}: no escrowed key",
            s.snapshot.id
        );
    }
    assert_eq!(
        snaps[0].luks[0].escrow, snaps[1].luks[0].escrow,
        "the second capture names another key"
    );
    let first = &snaps[0];
    let data_bytes: u64 = first
        .filesystems
        .iter()
        .filter_map(|f| f.data.as_ref())
        .map(|d| d.bytes)
        .sum();
    rep.fact(
        "restored to snapshot",
        format!("{} ({})", first.snapshot.id, first.snapshot.time),
    );
    rep.restored_bytes = data_bytes;
    rep.fact(
        "file data in that snapshot",
        format!("{:.1} MB", data_bytes as f64 / 1e6),
    );
    assert!(
        first
            .boot
            .efi
            .iter()
            .flat_map(|e| &e.entries)
            .any(|e| e.description == "debian"),
        "the capture did not record the debian boot entry"
    );

    // 3. Lost: a new blank disk on another controller, another NIC.
    let target = dir.path().join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(target_mib << 20)
        .unwrap();
    let new_machine = format!("mac={NEW_MAC}");
    let out = server.cli(&[
        "request",
        HOST,
        "--at",
        &first.snapshot.time,
        "--machine",
        &new_machine,
    ]);
    let recovery_token = printed_recovery_token(&out);

    // 4. The ISO under Secure Boot, on a machine whose NVRAM knows no OS.
    let recovery_vars = dir.path().join("recovery-vars.fd");
    fresh_secure_boot_vars(&recovery_vars);
    let disks = [Disk {
        path: &target,
        serial: Some(NEW_SERIAL),
        bus: Bus::Scsi(None),
    }];
    let iso = dir.path().join("rewind.iso");
    let out = Command::new(repo_dir().join("scripts/build-image"))
        .args(["--out", img.dir.to_str().unwrap(), "--iso-only", "--iso"])
        .arg(&iso)
        .args([
            "--cmdline",
            &format!(
                "rewind.server={guest_url} rewind.token={recovery_token} \
                 rewind.done=poweroff rewind.onfail=poweroff {}",
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
    let t = Instant::now();
    let mut vm = Qemu::start_with(
        Boot::IsoUefi(&iso),
        Firmware::UefiSecureBoot {
            vars: &recovery_vars,
        },
        &disks,
        recovery_nic,
        &logs.join(format!("drill-{NAME}-recovery.log")),
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
    rep.step("recovery: power-on to power-off, unattended", t);
    let console = vm.console();
    drop(vm);
    assert_eq!(
        stages(&console),
        Stage::ALL.map(|s| s.to_string()).to_vec(),
        "stages out of order or repeated"
    );
    for p in PROMPTS.iter().chain(&["Please unlock", "Enter passphrase"]) {
        assert!(
            !console.contains(p),
            "the recovery console showed a prompt: {p:?}"
        );
    }
    assert!(
        !console.contains("FAILED"),
        "the recovery console says FAILED"
    );
    assert!(
        console.contains("rewind: firmware: UEFI, Secure Boot on"),
        "the recovery image did not run with Secure Boot on"
    );
    assert!(
        console.contains("rewind: initramfs (initramfs-tools): regenerated"),
        "the initramfs was not regenerated for the new hardware"
    );
    for line in console.lines().filter(|l| {
        l.contains("cryptsetup") || l.contains("rewind: initramfs") || l.contains("escrow")
    }) {
        eprintln!("drill: {}", line.trim());
    }
    if let Some(line) = console.lines().find(|l| l.contains("rewind: initramfs")) {
        rep.fact(
            "initramfs",
            line.split("rewind: ").nth(1).unwrap_or(line).trim(),
        );
    }
    let finished = console
        .lines()
        .find(|l| l.contains("rewind: recovery finished in"))
        .and_then(|l| l.rsplit('(').next())
        .and_then(|r| r.split(" s since boot").next())
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or(end);
    rep.stages = stage_times(&console, finished);
    if let Some((_, restore)) = rep.stages.iter().find(|(s, _)| *s == Stage::Restore) {
        rep.fact(
            "restore throughput",
            format!("{:.1} MB/s", data_bytes as f64 / 1e6 / restore.max(0.1)),
        );
    }
    for line in console.lines().filter(|l| l.contains("rewind: recovered ")) {
        rep.fact(
            "recovery summary",
            line.trim().trim_start_matches("rewind: "),
        );
    }

    // 5. The recovered machine boots through shim; its own passphrase
    // opens the restored header at its normal prompt.
    let t = Instant::now();
    let mut vm = Qemu::start_with(
        Boot::Disk,
        Firmware::UefiSecureBoot {
            vars: &recovery_vars,
        },
        &disks,
        recovery_nic,
        &logs.join(format!("drill-{NAME}-recovered.log")),
    );
    unlock_and_boot(&mut vm);
    rep.step(
        "boot the recovered machine (shim, GRUB, its passphrase typed, to login)",
        t,
    );
    let t = Instant::now();
    settle_lvm_monitor(&mut vm, &mut rep, "recovered");
    system_running(&mut vm);
    assert_eq!(
        vm.run_ok("drill-guest state", COMMAND),
        state_first,
        "the recovered files differ from the first snapshot's"
    );
    assert_eq!(
        identity(&mut vm, true),
        identity_first,
        "host name, filesystem UUIDs, swap or address differ"
    );
    assert_eq!(
        luks_state(&mut vm),
        luks_first,
        "the recovered LUKS header or LVM stack differs from the source's"
    );
    rep.fact(
        "stack compared",
        "cryptsetup luksDump (UUID, cipher, keyslots, digests), pvs, vgs, lvs (UUIDs, sizes, types): equal",
    );
    assert_ne!(
        vm.run("id bob", COMMAND).1,
        0,
        "the second snapshot's user is back"
    );
    assert_eq!(
        vm.run_ok("cat /sys/class/net/lan0/address", COMMAND),
        NEW_MAC,
        "lan0 is not the machine's NIC"
    );
    rep.fact(
        "lan0 driver",
        vm.run_ok(
            "basename $(readlink /sys/class/net/lan0/device/driver)",
            COMMAND,
        ),
    );
    // / on its LV, in the mapping the machine's crypttab names, on the new
    // disk's third partition, behind the virtio-scsi controller.
    let chain = vm.run_ok(
        "lsblk -rsno NAME \"$(findmnt -no SOURCE /)\" | tr '\\n' ' '",
        COMMAND,
    );
    assert_eq!(
        chain.split_whitespace().collect::<Vec<_>>(),
        ["drill--luks--vg-root", MAPPING, "sda3", "sda"],
        "/ is not on the LV in {MAPPING} on the new disk"
    );
    let controller = vm.run_ok(
        "cat /sys/block/sda/device/../../scsi_host/host*/proc_name 2>/dev/null || echo unknown",
        COMMAND,
    );
    rep.fact(
        "/ on",
        format!(
            "{} (controller {})",
            chain.split_whitespace().collect::<Vec<_>>().join(" <- "),
            controller.trim()
        ),
    );
    vm.run_ok(
        &format!("timeout 20 bash -c 'exec 3<>/dev/tcp/10.0.2.2/{port}' && echo reached"),
        COMMAND,
    );
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
    assert_eq!(
        efi.lines().filter(|l| l.contains("debian")).count(),
        1,
        "duplicate entries:\n{efi}"
    );
    rep.fact(
        "booted through",
        entry
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
    );
    let sb = vm.run_ok("mokutil --sb-state", COMMAND);
    assert!(
        sb.contains("SecureBoot enabled"),
        "the recovered machine does not run with Secure Boot on: {sb}"
    );
    rep.fact("Secure Boot", sb.trim().to_string());
    rep.step("checks on the recovered machine", t);
    vm.type_line("poweroff");
    vm.wait_exit(Duration::from_secs(180));
    drop(vm);
    rep.fact(
        "drill total",
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    );
    eprintln!("{}", rep.write_as(NAME));
}
