//! Helpers for the QEMU tests: the recovery image to boot, a QEMU process
//! whose serial console is captured (and killed on drop, and when the test
//! process dies), waits on console lines with their own time limits.
//!
//! The tests run only when REWIND_IMAGE names a directory made by
//! scripts/build-image (vmlinuz, initrd.img, rewind.iso), so that a stale
//! image is never tested by accident; REWIND_REQUIRE_QEMU_TESTS=1 makes a
//! missing image, QEMU or root a failure instead of a skip.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// QEMU under TCG uses both cores: one VM at a time per test process,
/// unless REWIND_QEMU_VMS says more (the test command runs the drills two
/// at a time: much of a drill's VM time is one busy vCPU or waiting on
/// the host, and CI's time budget is shared by every drill).
static VMS_RUNNING: Mutex<usize> = Mutex::new(0);
static VM_FREED: std::sync::Condvar = std::sync::Condvar::new();

/// A turn to run a VM; the next test's turn comes when it is dropped.
pub struct VmTurn(());

impl Drop for VmTurn {
    fn drop(&mut self) {
        let mut n = VMS_RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        VM_FREED.notify_one();
    }
}

pub fn one_vm() -> VmTurn {
    let most: usize = std::env::var("REWIND_QEMU_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1);
    let mut n = VMS_RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    while *n >= most {
        n = VM_FREED.wait(n).unwrap_or_else(|e| e.into_inner());
    }
    *n += 1;
    VmTurn(())
}

fn required() -> bool {
    std::env::var_os("REWIND_REQUIRE_QEMU_TESTS").is_some_and(|v| v == "1")
}

fn skip(test: &str, why: &str) -> Option<Image> {
    assert!(!required(), "{test}: {why} (REWIND_REQUIRE_QEMU_TESTS=1)");
    eprintln!("skipped {test}: {why}");
    None
}

/// The image under test.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl Image {
    /// The image named by REWIND_IMAGE, when it and QEMU are there and we are root.
    pub fn get(test: &str) -> Option<Image> {
        let Some(dir) = std::env::var_os("REWIND_IMAGE").map(PathBuf::from) else {
            return skip(
                test,
                "REWIND_IMAGE is not set (scripts/build-image, then REWIND_IMAGE=target/image)",
            );
        };
        let img = Image {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            dir,
        };
        if !img.kernel.exists() || !img.initrd.exists() {
            return skip(
                test,
                &format!("no vmlinuz/initrd.img in {}", img.dir.display()),
            );
        }
        if Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_err()
        {
            return skip(test, "qemu-system-x86_64 is not installed");
        }
        if !nix::unistd::geteuid().is_root() {
            return skip(test, "needs root (loop devices)");
        }
        Some(img)
    }
}

/// How to boot.
pub enum Boot<'a> {
    /// -kernel/-initrd with this command line.
    Direct(&'a Image, String),
    /// An ISO as a CD-ROM, under SeaBIOS.
    IsoBios(&'a Path),
    /// An ISO as a CD-ROM, under OVMF (UEFI).
    IsoUefi(&'a Path),
    /// An ISO as a CD-ROM, under OVMF with Secure Boot enforced and
    /// Microsoft's keys enrolled (as PCs ship).
    IsoUefiSecure(&'a Path),
    /// The network: under SeaBIOS, QEMU's iPXE option ROM gets `bootfile`
    /// from the TFTP directory `tftp` of the user network; under OVMF
    /// (`Firmware::Uefi`, `Firmware::UefiSecureBoot` with `start_with`),
    /// the firmware's own PXE does, with no option ROM.
    Pxe { tftp: &'a Path, bootfile: &'a str },
    /// The first disk, through the firmware (its own boot loader).
    Disk,
}

pub struct Qemu {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    console: Arc<Mutex<String>>,
    pub log: PathBuf,
    started: Instant,
    /// Where the part of the console already matched ends.
    cursor: usize,
    /// Commands run on the console so far (their markers' numbers).
    commands: u32,
}

/// A variable store as OVMF ships it: no boot entries of any OS.
pub fn fresh_ovmf_vars(path: &Path) {
    let (_, vars) = ovmf();
    std::fs::copy(&vars, path).unwrap();
}

/// A variable store with Secure Boot on: Microsoft's keys enrolled, no
/// boot entries.
pub fn fresh_secure_boot_vars(path: &Path) {
    let (_, vars) = ovmf_secure_boot();
    std::fs::copy(&vars, path).unwrap();
}

/// OVMF built with Secure Boot (needs SMM), and Debian's variable store
/// template with Microsoft's keys enrolled.
fn ovmf_secure_boot() -> (PathBuf, PathBuf) {
    let code = PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd");
    let vars = PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.ms.fd");
    assert!(
        code.exists() && vars.exists(),
        "OVMF with Secure Boot is not installed ({} and {}: apt-get install ovmf)",
        code.display(),
        vars.display()
    );
    (code, vars)
}

/// The OVMF firmware files (code, and a variables template).
fn ovmf() -> (PathBuf, PathBuf) {
    for (code, vars) in [
        (
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
        ),
        (
            "/usr/share/OVMF/OVMF_CODE.fd",
            "/usr/share/OVMF/OVMF_VARS.fd",
        ),
    ] {
        if Path::new(code).exists() {
            return (code.into(), vars.into());
        }
    }
    panic!("OVMF is not installed (apt-get install ovmf)");
}

/// A disk of the VM: an image file, with a serial number when the test
/// needs /dev/disk/by-id names, on a controller.
pub struct Disk<'a> {
    pub path: &'a Path,
    pub serial: Option<&'a str>,
    pub bus: Bus,
}

/// The disk controller a [`Disk`] hangs on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// virtio-blk: `/dev/vda`.
    Virtio,
    /// An NVMe controller per disk: `/dev/nvme0n1` (a serial is required).
    Nvme,
    /// As [`Bus::Nvme`], with 4096-byte logical and physical blocks (a
    /// 4Kn disk: `logical_block_size=4096,physical_block_size=4096`).
    Nvme4Kn,
    /// The q35 machine's AHCI controller (SATA): `/dev/sda`, one port per
    /// disk in order.
    Sata,
    /// A SCSI disk on one virtio-scsi controller: `/dev/sda`, with a WWN
    /// when given (two disks with one WWN are two paths to one LUN).
    Scsi(Option<u64>),
}

/// The VM's NIC: its MAC address and QEMU device model
/// (`virtio-net-pci`, `e1000e`, `e1000`, `rtl8139`).
#[derive(Clone, Copy)]
pub struct Nic<'a> {
    pub mac: &'a str,
    pub model: &'a str,
}

impl<'a> Nic<'a> {
    pub fn virtio(mac: &'a str) -> Nic<'a> {
        Nic {
            mac,
            model: "virtio-net-pci",
        }
    }
}

/// The firmware: SeaBIOS, or OVMF with a variable store that outlives the
/// VM (the drills boot the recovered disk with the store the recovery wrote).
pub enum Firmware<'a> {
    Bios,
    Uefi {
        vars: &'a Path,
    },
    /// OVMF with Secure Boot enforced (the store from
    /// [`fresh_secure_boot_vars`], or one a recovery wrote).
    UefiSecureBoot {
        vars: &'a Path,
    },
}

impl Qemu {
    /// Boot with `disks` as virtio disks and a user-mode NIC with `mac`.
    /// The console goes to `log` too.
    pub fn start(boot: Boot<'_>, disks: &[&Path], mac: &str, log: &Path) -> Qemu {
        Self::start_extra(boot, disks, mac, log, &[])
    }

    /// [`Qemu::start`] with more QEMU arguments (`-rtc base=2001-01-01`).
    pub fn start_extra(
        boot: Boot<'_>,
        disks: &[&Path],
        mac: &str,
        log: &Path,
        extra: &[&str],
    ) -> Qemu {
        let vars = log.with_extension("ovmf-vars.fd");
        let firmware = match &boot {
            Boot::IsoUefi(_) => {
                fresh_ovmf_vars(&vars);
                Firmware::Uefi { vars: &vars }
            }
            Boot::IsoUefiSecure(_) => {
                fresh_secure_boot_vars(&vars);
                Firmware::UefiSecureBoot { vars: &vars }
            }
            _ => Firmware::Bios,
        };
        let disks: Vec<Disk> = disks
            .iter()
            .map(|p| Disk {
                path: p,
                serial: None,
                bus: Bus::Virtio,
            })
            .collect();
        Self::start_with_extra(boot, firmware, &disks, Nic::virtio(mac), log, extra)
    }

    /// [`Qemu::start`] with the firmware chosen and disks with serials.
    /// `Boot::Disk` boots the first disk through the firmware.
    pub fn start_with(
        boot: Boot<'_>,
        firmware: Firmware<'_>,
        disks: &[Disk<'_>],
        nic: Nic<'_>,
        log: &Path,
    ) -> Qemu {
        Self::start_full(boot, firmware, disks, nic, "", log, &[])
    }

    /// [`Qemu::start_with`] with more QEMU arguments.
    pub fn start_with_extra(
        boot: Boot<'_>,
        firmware: Firmware<'_>,
        disks: &[Disk<'_>],
        nic: Nic<'_>,
        log: &Path,
        extra: &[&str],
    ) -> Qemu {
        Self::start_full(boot, firmware, disks, nic, "", log, extra)
    }

    /// [`Qemu::start_with`] with more options of the user network
    /// (`,hostfwd=tcp:127.0.0.1:PORT-:8080`: a host port reaching a guest's).
    pub fn start_with_net(
        boot: Boot<'_>,
        firmware: Firmware<'_>,
        disks: &[Disk<'_>],
        nic: Nic<'_>,
        net_options: &str,
        log: &Path,
    ) -> Qemu {
        Self::start_full(boot, firmware, disks, nic, net_options, log, &[])
    }

    /// Every way to start: user-network options and extra QEMU arguments.
    #[allow(clippy::too_many_arguments)]
    fn start_full(
        boot: Boot<'_>,
        firmware: Firmware<'_>,
        disks: &[Disk<'_>],
        nic: Nic<'_>,
        net_options: &str,
        log: &Path,
        extra: &[&str],
    ) -> Qemu {
        let mut args: Vec<String> = [
            "-machine",
            "q35",
            "-cpu",
            "max",
            "-m",
            "1536",
            "-smp",
            "2",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut push = |a: &[&str]| args.extend(a.iter().map(|s| s.to_string()));
        let pflash = match &firmware {
            Firmware::Bios => None,
            Firmware::Uefi { vars } => Some((ovmf().0, *vars)),
            Firmware::UefiSecureBoot { vars } => {
                // Secure Boot firmware keeps its variables in SMM: the
                // machine needs SMM and a pflash only SMM code may write.
                push(&[
                    "-machine",
                    "q35,smm=on",
                    "-global",
                    "driver=cfi.pflash01,property=secure,value=on",
                ]);
                Some((ovmf_secure_boot().0, *vars))
            }
        };
        if let Some((code, vars)) = pflash {
            push(&[
                "-drive",
                &format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    code.display()
                ),
                "-drive",
                &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            ]);
        }
        match &boot {
            // no_timer_check: under TCG on a loaded machine the kernel's
            // IO-APIC timer check can fail and panic (image/cmdline says more).
            Boot::Direct(img, cmdline) => push(&[
                "-kernel",
                img.kernel.to_str().unwrap(),
                "-initrd",
                img.initrd.to_str().unwrap(),
                "-append",
                &format!("{cmdline} no_timer_check"),
            ]),
            Boot::IsoBios(iso) | Boot::IsoUefi(iso) | Boot::IsoUefiSecure(iso) => {
                push(&["-cdrom", iso.to_str().unwrap(), "-boot", "d"])
            }
            Boot::Pxe { .. } if matches!(firmware, Firmware::Bios) => push(&["-boot", "n"]),
            // Under OVMF: the NIC's bootindex (below).
            Boot::Pxe { .. } => {}
            // Under OVMF the variable store's BootOrder decides, as on a
            // real machine (QEMU's boot order would reorder it).
            Boot::Disk if !matches!(firmware, Firmware::Bios) => {}
            Boot::Disk => {} // bootindex on the first disk
        }
        let bios_disk_boot = matches!(boot, Boot::Disk) && matches!(firmware, Firmware::Bios);
        let mut sata_port = 0;
        if disks.iter().any(|d| matches!(d.bus, Bus::Scsi(_))) {
            push(&["-device", "virtio-scsi-pci,id=scsi0"]);
        }
        for (i, d) in disks.iter().enumerate() {
            let serial = d.serial.map(|s| format!(",serial={s}")).unwrap_or_default();
            let bootindex = if i == 0 && bios_disk_boot {
                ",bootindex=1"
            } else {
                ""
            };
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=none,id=disk{i},cache=unsafe",
                    d.path.display()
                ),
                "-device",
                &match d.bus {
                    Bus::Virtio => format!("virtio-blk-pci,drive=disk{i}{serial}{bootindex}"),
                    Bus::Nvme => format!("nvme,drive=disk{i}{serial}{bootindex}"),
                    Bus::Nvme4Kn => format!(
                        "nvme,drive=disk{i}{serial}{bootindex},logical_block_size=4096,physical_block_size=4096"
                    ),
                    Bus::Sata => {
                        sata_port += 1;
                        format!(
                            "ide-hd,drive=disk{i},bus=ide.{}{serial}{bootindex}",
                            sata_port - 1
                        )
                    }
                    Bus::Scsi(wwn) => format!(
                        "scsi-hd,bus=scsi0.0,drive=disk{i}{serial}{bootindex}{}",
                        wwn.map(|w| format!(",wwn=0x{w:016x}")).unwrap_or_default()
                    ),
                },
            ]);
        }
        let tftp = match &boot {
            Boot::Pxe { tftp, bootfile } => {
                format!(",tftp={},bootfile={bootfile}", tftp.display())
            }
            _ => String::new(),
        };
        push(&["-netdev", &format!("user,id=n0{tftp}{net_options}")]);
        // PXE under OVMF: the firmware's own network stack and PXE, first
        // in the boot order, and no option ROM. QEMU's NIC ROMs are iPXE,
        // unsigned, which OVMF would run even under Secure Boot; a real
        // machine's PXE is its firmware's (and shim cannot fetch GRUB
        // through iPXE's PXE protocol: it gets a wrong file size).
        let uefi_pxe = if matches!(boot, Boot::Pxe { .. }) && !matches!(firmware, Firmware::Bios) {
            ",romfile=,bootindex=1"
        } else {
            ""
        };
        push(&[
            "-device",
            &format!("{},netdev=n0,mac={}{uefi_pxe}", nic.model, nic.mac),
        ]);
        if let Boot::Pxe { .. } = &boot {
            // iPXE writes to the screen only: the network traffic shows
            // what it was told.
            let pcap = log.with_extension("pcap");
            push(&[
                "-object",
                &format!("filter-dump,id=d0,netdev=n0,file={}", pcap.display()),
            ]);
        }
        push(extra);
        let logfile = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(logfile.try_clone().unwrap()));
        // QEMU dies with the test process, however that ends.
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        #[allow(unsafe_code)]
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("cannot start qemu-system-x86_64");
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let console = Arc::new(Mutex::new(String::new()));
        let sink = console.clone();
        // What QEMU writes, as it comes: a prompt (cryptsetup's "Please
        // unlock disk ...: ") ends with no newline and must be seen. A UTF-8
        // character split between two reads waits for its end.
        std::thread::spawn(move || {
            let mut logfile = logfile;
            let mut stdout = stdout;
            let mut chunk = [0u8; 4096];
            let mut pending: Vec<u8> = Vec::new();
            loop {
                match stdout.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = logfile.write_all(&chunk[..n]);
                        pending.extend_from_slice(&chunk[..n]);
                        let complete = match std::str::from_utf8(&pending) {
                            Ok(_) => pending.len(),
                            Err(e) if e.error_len().is_none() => e.valid_up_to(),
                            Err(_) => pending.len(),
                        };
                        let text = String::from_utf8_lossy(&pending[..complete]).into_owned();
                        pending.drain(..complete);
                        sink.lock().unwrap().push_str(&text);
                    }
                }
            }
        });
        Qemu {
            child: Some(child),
            stdin,
            console,
            log: log.to_path_buf(),
            started: Instant::now(),
            cursor: 0,
            commands: 0,
        }
    }

    pub fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    fn tail(&self) -> String {
        let c = self.console();
        let lines: Vec<&str> = c.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Wait for a console line containing `text` after what was matched
    /// before; fail on `FAILED` unless `text` is about failure, on QEMU's
    /// exit, and after `limit`. Returns the seconds since QEMU started.
    pub fn expect(&mut self, text: &str, limit: Duration) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            {
                let c = self.console.lock().unwrap();
                if let Some(i) = c[self.cursor..].find(text) {
                    self.cursor += i + text.len();
                    return self.started.elapsed().as_secs_f64();
                }
                if !text.contains("FAILED") && c[self.cursor..].contains("recovery FAILED") {
                    drop(c);
                    panic!(
                        "waiting for {text:?}: the recovery failed:\n{}\n(log: {})",
                        self.tail(),
                        self.log.display()
                    );
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                std::thread::sleep(Duration::from_millis(200));
                if self.console.lock().unwrap()[self.cursor..].contains(text) {
                    continue;
                }
                panic!(
                    "waiting for {text:?}: QEMU exited ({status}):\n{}\n(log: {})",
                    self.tail(),
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "waiting for {text:?}: nothing after {} s:\n{}\n(log: {})",
                    limit.as_secs(),
                    self.tail(),
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the network traffic (PXE boots) holds `text`.
    pub fn expect_on_wire(&mut self, text: &str, limit: Duration) {
        let pcap = self.log.with_extension("pcap");
        let deadline = Instant::now() + limit;
        loop {
            let bytes = std::fs::read(&pcap).unwrap_or_default();
            if bytes.windows(text.len()).any(|w| w == text.as_bytes()) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{text:?} never went over the network in {} s (capture: {})",
                    limit.as_secs(),
                    pcap.display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Type on the serial console.
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("no stdin");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Run `command` in the shell on the serial console (a root shell
    /// without line editing or echo, as the drills' source machines have)
    /// and return its output and exit status. The markers are typed split
    /// so that an echo of the typed line cannot match them.
    pub fn run(&mut self, command: &str, limit: Duration) -> (String, i32) {
        self.commands += 1;
        let n = self.commands;
        self.type_line(&format!(
            "echo @@B{n}''@@; {{ {command}\n}} 2>&1; echo @@E{n}''@@ $?"
        ));
        self.expect(&format!("@@B{n}@@"), Duration::from_secs(60));
        let from = self.cursor;
        let end = format!("@@E{n}@@ ");
        self.expect(&end, limit);
        let c = self.console();
        let out = c[from..self.cursor - end.len()]
            .trim_matches(['\r', '\n'])
            .replace('\r', "");
        // The status may arrive after the marker (the console is read in
        // pieces): it ends at the line's end.
        let status_from = self.cursor;
        self.expect("\n", Duration::from_secs(60));
        let c = self.console();
        let status = c[status_from..self.cursor]
            .split(|ch: char| !ch.is_ascii_digit())
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or(-1);
        (out, status)
    }

    /// [`Qemu::run`], failing the test unless the command succeeds.
    pub fn run_ok(&mut self, command: &str, limit: Duration) -> String {
        let (out, status) = self.run(command, limit);
        assert_eq!(
            status,
            0,
            "`{command}` failed on the console (status {status}):\n{out}\n(log: {})",
            self.log.display()
        );
        out
    }

    /// Wait for QEMU to exit (a power-off, or a reboot with -no-reboot).
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("QEMU already reaped");
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            if Instant::now() > deadline {
                let tail = self.tail();
                panic!(
                    "QEMU still runs after {} s:\n{tail}\n(log: {})",
                    limit.as_secs(),
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a file holds nothing but zeros (or holes).
pub fn all_zero(path: &Path) -> bool {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return true;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return false;
        }
    }
}

/// The marker lines of a console, in order.
pub fn stages(console: &str) -> Vec<String> {
    console
        .lines()
        .filter_map(|l| {
            let rest = l.split("rewind: == stage ").nth(1)?;
            Some(rest.split(" ==").next()?.to_string())
        })
        .collect()
}

/// Single-quoted for the guest's sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// rewind's stack runner (`layout::stack_run::StackRunner`) on the live
/// image's serial console: what the recovery would run, run in the guest.
pub struct Console<'a>(pub &'a mut Qemu);

impl rewind::layout::stack_run::StackRunner for Console<'_> {
    fn run(&mut self, argv: &[String]) -> anyhow::Result<String> {
        // The emergency shell prefers busybox's applets (its mke2fs is not
        // e2fsprogs'); rewind execs by PATH, so run the program file. Its
        // standard input is /dev/null, as `rewind::cmd` gives it: with the
        // console as its input, `cryptsetup luksHeaderRestore` waits on it.
        let program = quote(&argv[0]);
        let args: Vec<String> = argv[1..].iter().map(|a| quote(a)).collect();
        let (out, status) = self.0.run(
            &format!(
                "p=/usr/sbin/{program}; [ -x \"$p\" ] || p=/usr/bin/{program}; \"$p\" {} </dev/null 2>/tmp/stack.err || {{ cat /tmp/stack.err; false; }}",
                args.join(" ")
            ),
            Duration::from_secs(300),
        );
        if status != 0 {
            anyhow::bail!("`{}` failed in the guest ({status}): {out}", argv.join(" "));
        }
        Ok(out)
    }

    fn write(&mut self, path: &str, text: &str) -> anyhow::Result<()> {
        let dir = Path::new(path).parent().unwrap().to_str().unwrap();
        self.0.run_ok(
            &format!(
                "mkdir -p {} && cat > {} <<'REWIND_EOF'\n{}\nREWIND_EOF",
                quote(dir),
                quote(path),
                text.trim_end_matches('\n')
            ),
            Duration::from_secs(120),
        );
        Ok(())
    }

    fn read(&mut self, path: &str) -> anyhow::Result<String> {
        Ok(self
            .0
            .run_ok(&format!("cat {}", quote(path)), Duration::from_secs(60)))
    }

    /// At most 16 KiB (a LUKS header's binary part and JSON area: reading
    /// the default 4 MiB over a serial line is pointless).
    fn read_head(&mut self, device: &str, len: usize) -> anyhow::Result<Vec<u8>> {
        let hex = self.0.run_ok(
            &format!("od -An -v -tx1 -N {} {}", len.min(16384), quote(device)),
            Duration::from_secs(120),
        );
        Ok(hex
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect())
    }

    fn remove(&mut self, path: &str) -> anyhow::Result<()> {
        self.0
            .run_ok(&format!("rm -f {}", quote(path)), Duration::from_secs(30));
        Ok(())
    }
}
