//! Tier 3 (root, QEMU, REWIND_IMAGE): the server's store survives a power
//! cut at every moment the disk could have been told to persist (issue 16,
//! point 5). A process kill proves nothing here: the page cache survives it.
//!
//! The recovery image (Debian's kernel) runs `rewind serve` on ext4 over a
//! dm-log-writes device: every write that reaches the data disk is also
//! appended, with its FLUSH/FUA flags, to a log disk, and `dmsetup message
//! ... mark NAME` writes a named mark into the same log. The host captures
//! snapshots to that server through a QEMU port forward, arms a request,
//! forgets a snapshot and prunes; after each acknowledged operation it
//! marks the log. Afterwards the host replays the log onto a blank copy of
//! the data disk and, after every FLUSH or FUA entry (every state a power
//! cut can leave, as the disk promised it), mounts a copy of the replay and
//! checks the store: the catalog loads and holds every acknowledged change,
//! every snapshot acknowledged before that point is there and `rewind
//! check` finds every pack and chunk of every snapshot present intact, a
//! forgotten snapshot stays forgotten, and the server starts on it.
//!
//!     REWIND_IMAGE=target/image cargo test --test qemu_powercut -- --nocapture
//!
//! (about 3 minutes; `REWIND_POWERCUT_EVERY_WRITE=1` checks after every
//! write instead, every in-order prefix of the log: about 10 minutes).
//!
//! The log format (Documentation/admin-guide/device-mapper/log-writes.rst):
//! a super block in the first sector (magic, version, number of entries,
//! sector size), then per entry one sector holding its header (sector,
//! number of sectors, flags, data length) — and a mark's name — followed by
//! the written sectors (none for flushes, discards and marks).

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;
mod qemu_util;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use qemu_util::{Boot, Bus, Disk, Firmware, Image, Nic, Qemu};

const MIB: u64 = 1 << 20;
/// The server's data disk, and the log of every write to it.
const DATA_DISK: u64 = 128 * MIB;
const LOG_DISK: u64 = 2048 * MIB;
const BIN: &str = env!("CARGO_BIN_EXE_rewind");
const HOST: &str = "pc";

// Flags of a log entry (drivers/md/dm-log-writes.c).
const LOG_FLUSH: u64 = 1 << 0;
const LOG_FUA: u64 = 1 << 1;
const LOG_DISCARD: u64 = 1 << 2;
const LOG_MARK: u64 = 1 << 3;
const LOG_MAGIC: u64 = 0x006a_7366_7773_6872;

/// One entry of a dm-log-writes log.
#[derive(Debug)]
struct Entry {
    /// In units of the log's sector size.
    sector: u64,
    nr_sectors: u64,
    flags: u64,
    /// Where the written sectors start in the log file (bytes).
    data_at: u64,
    mark: Option<String>,
}

/// Read the log's super block and every entry's header.
fn read_log(path: &Path) -> (u64, Vec<Entry>) {
    let f = std::fs::File::open(path).unwrap();
    let mut sup = [0u8; 32];
    f.read_exact_at(&mut sup, 0).unwrap();
    let le64 = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    assert_eq!(le64(&sup, 0), LOG_MAGIC, "not a dm-log-writes log");
    assert_eq!(le64(&sup, 8), 1, "log version");
    let count = le64(&sup, 16);
    let sector_size = u64::from(u32::from_le_bytes(sup[24..28].try_into().unwrap()));
    assert!(sector_size.is_power_of_two() && sector_size >= 512);
    let mut entries = Vec::with_capacity(count as usize);
    let mut at = sector_size;
    for _ in 0..count {
        let mut head = vec![0u8; sector_size as usize];
        f.read_exact_at(&mut head, at).unwrap();
        let (sector, nr_sectors, flags, data_len) = (
            le64(&head, 0),
            le64(&head, 8),
            le64(&head, 16),
            le64(&head, 24),
        );
        let mark = (flags & LOG_MARK != 0)
            .then(|| String::from_utf8_lossy(&head[32..32 + data_len as usize]).into_owned());
        at += sector_size;
        let data_at = at;
        if flags & (LOG_DISCARD | LOG_MARK) == 0 {
            at += nr_sectors * sector_size;
        }
        entries.push(Entry {
            sector,
            nr_sectors,
            flags,
            data_at,
            mark,
        });
    }
    (sector_size, entries)
}

/// What the host saw acknowledged, in the order of the marks: what every
/// later state of the disk must hold.
#[derive(Debug, Default, Clone)]
struct Promised {
    /// The server had created its store and printed its address.
    serving: bool,
    /// The host's token was created.
    token: bool,
    /// A recovery request was armed.
    armed: bool,
    /// Snapshots acknowledged, by id.
    snapshots: Vec<String>,
    /// Snapshots being forgotten: they may be there or not.
    forgetting: Vec<String>,
    /// Snapshots whose forgetting was acknowledged.
    forgotten: Vec<String>,
    /// A prune was acknowledged.
    pruned: bool,
}

impl Promised {
    /// Take a mark `rw-WHAT[-ID]` into account.
    fn mark(&mut self, name: &str, ids: &BTreeMap<String, String>) {
        match name {
            "rw-serving" => self.serving = true,
            "rw-token" => self.token = true,
            "rw-armed" => self.armed = true,
            "rw-pruned" => self.pruned = true,
            _ => {
                if let Some(n) = name.strip_prefix("rw-ack-") {
                    self.snapshots.push(ids[n].clone());
                } else if let Some(n) = name.strip_prefix("rw-forgetting-") {
                    self.forgetting.push(ids[n].clone());
                } else if let Some(n) = name.strip_prefix("rw-forgot-") {
                    self.forgotten.push(ids[n].clone());
                }
            }
        }
    }
}

/// A rewind client command against the server in the guest.
fn client(url: &str, token: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("REWIND_SERVER", url)
        .env("REWIND_TOKEN", token)
        // Plain HTTP: this test is about the store, not the transport.
        .env("REWIND_INSECURE_HTTP", "1")
        .env_remove("REWIND_REPO")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "rewind {} failed:\n{text}",
        args.join(" ")
    );
    text
}

/// The guest's shell runs a program file, not busybox's applet of the
/// same name.
fn tool(name: &str) -> String {
    format!("$(p=/usr/sbin/{name}; [ -x $p ] || p=/usr/bin/{name}; echo $p)")
}

/// What one replay point showed.
#[derive(Debug, Default)]
struct PointReport {
    snapshots_present: usize,
    checked: bool,
    served: bool,
}

/// Mount a copy of the replayed disk and check the store against what was
/// promised before this point. Errors say what was lost.
fn check_point(
    replay: &Path,
    work: &Path,
    promised: &Promised,
    serve: bool,
) -> Result<PointReport, String> {
    let copy = work.join("point.img");
    sh(
        "cp",
        &[
            "--sparse=always",
            replay.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    // Read-write: mounting replays ext4's journal, as a reboot would.
    let out = Command::new("mount")
        .args(["-o", "loop", copy.to_str().unwrap(), mnt.to_str().unwrap()])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "the filesystem does not mount: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let result = check_store(&mnt.join("data"), work, promised, serve);
    let umount = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(umount.success(), "cannot unmount {}", mnt.display());
    std::fs::remove_file(&copy).unwrap();
    result
}

fn check_store(
    data: &Path,
    work: &Path,
    promised: &Promised,
    serve: bool,
) -> Result<PointReport, String> {
    let mut report = PointReport::default();
    if !data.exists() {
        return if promised.serving {
            Err("the store is gone".into())
        } else {
            Ok(report)
        };
    }
    let catalog = rewind::server::state::Catalog::load(&data.join("catalog"))
        .map_err(|e| format!("the catalog does not load: {e:#}"))?;
    if promised.serving && !catalog.has_admin() {
        return Err("the admin token is lost".into());
    }
    if promised.token && catalog.tokens.len() < 2 {
        return Err(format!(
            "the host token is lost ({} tokens)",
            catalog.tokens.len()
        ));
    }
    if promised.armed && catalog.active_request(HOST).is_none() {
        return Err("the armed request is lost".into());
    }
    let repo = data.join("hosts").join(HOST);
    let present: Vec<String> = std::fs::read_dir(repo.join("snapshots"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .filter_map(|n| n.strip_suffix(".xml").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    report.snapshots_present = present.len();
    for id in &promised.snapshots {
        let forgotten = promised.forgotten.contains(id);
        let going = forgotten || promised.forgetting.contains(id);
        if !going && !present.contains(id) {
            return Err(format!("acknowledged snapshot {id} is lost"));
        }
        if forgotten && present.contains(id) {
            return Err(format!("forgotten snapshot {id} is back"));
        }
    }
    if repo.join("config").exists() {
        // Every pack and chunk every snapshot present references.
        let out = Command::new(BIN)
            .args(["check", "--repo", repo.to_str().unwrap()])
            .env_remove("REWIND_SERVER")
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(format!(
                "rewind check fails:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        report.checked = true;
    }
    if serve {
        serve_once(data, work)?;
        report.served = true;
    }
    Ok(report)
}

/// Start the server on the replayed store, ask it for the host's
/// snapshots, stop it.
fn serve_once(data: &Path, work: &Path) -> Result<(), String> {
    let log = work.join("serve.log");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--verify-every",
            "0s",
            "--insecure-http",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut started = false;
    for line in lines {
        let Ok(line) = line else { break };
        if line.contains("listening on") {
            started = true;
            break;
        }
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    if !started {
        return Err(format!(
            "the server does not start ({status}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ));
    }
    Ok(())
}

#[test]
fn every_flush_keeps_every_acknowledged_snapshot() {
    let Some(img) = Image::get("every_flush_keeps_every_acknowledged_snapshot") else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let started = Instant::now();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let data_img = dir.path().join("data.img");
    let log_img = dir.path().join("log.img");
    for (p, size) in [(&data_img, DATA_DISK), (&log_img, LOG_DISK)] {
        std::fs::File::create(p).unwrap().set_len(size).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let console_log = logs.join("powercut.log");
    let disks = [
        Disk {
            path: &data_img,
            serial: Some("data"),
            bus: Bus::Virtio,
        },
        Disk {
            path: &log_img,
            serial: Some("log"),
            bus: Bus::Virtio,
        },
    ];
    let mut vm = Qemu::start_with_net(
        Boot::Direct(
            &img,
            "console=ttyS0,115200 rewind.action=shell rewind.done=poweroff rewind.onfail=poweroff"
                .into(),
        ),
        Firmware::Bios,
        &disks,
        Nic::virtio("52:54:00:ab:cd:16"),
        &format!(",hostfwd=tcp:127.0.0.1:{port}-:8080"),
        &console_log,
    );
    let t = vm.expect("emergency shell on /dev/ttyS0", Duration::from_secs(240));
    eprintln!("shell after {t:.1} s (log: {})", console_log.display());
    std::thread::sleep(Duration::from_secs(2));
    let long = Duration::from_secs(300);

    // The store: ext4 (initialised whole now, not lazily later) on a
    // log-writes device over vda, logging to vdb.
    vm.run_ok("modprobe dm_log_writes", long);
    vm.run_ok(
        &format!(
            "{0} --noudevsync create lw --table \"0 $(cat /sys/block/vda/size) log-writes /dev/vda /dev/vdb\" && {0} mknodes lw && ls -l /dev/mapper/lw",
            tool("dmsetup")
        ),
        long,
    );
    let mark = |vm: &mut Qemu, name: &str| {
        vm.run_ok(
            &format!("{} message lw 0 mark {name}", tool("dmsetup")),
            Duration::from_secs(60),
        );
    };
    vm.run_ok(
        &format!(
            "{} -q -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 /dev/mapper/lw",
            tool("mkfs.ext4")
        ),
        long,
    );
    mark(&mut vm, "rw-mkfs");
    vm.run_ok("mkdir -p /srv && mount -t ext4 /dev/mapper/lw /srv", long);
    vm.run_ok(
        "rewind serve --data /srv/data --listen 0.0.0.0:8080 --insecure-http >/tmp/serve.out 2>/tmp/serve.err & echo $! >/tmp/serve.pid",
        long,
    );
    let out = vm.run_ok(
        "i=0; until grep -q 'listening on' /tmp/serve.out; do sleep 1; i=$((i+1)); [ $i -lt 120 ] || { cat /tmp/serve.err; exit 1; }; done; cat /tmp/serve.out",
        long,
    );
    let admin = out
        .lines()
        .find_map(|l| l.split("keep it safe): ").nth(1))
        .unwrap_or_else(|| panic!("no admin token in:\n{out}"))
        .trim()
        .to_string();
    mark(&mut vm, "rw-serving");
    let url = format!("http://127.0.0.1:{port}");

    let token = client(&url, &admin, &["token", "create", HOST])
        .lines()
        .find(|l| l.starts_with("rwd_"))
        .unwrap()
        .to_string();
    mark(&mut vm, "rw-token");

    // The source: a small ext4 on a loop device of the host.
    let src = TestFs::new(dir.path(), "src", 32);
    let mut ids = BTreeMap::new();
    let mut references = Vec::new();
    let src_point = src.mount.point.clone();
    let mut capture = |vm: &mut Qemu, n: u32| {
        let t = Instant::now();
        let out = client(
            &url,
            &token,
            &["capture", "--disk", &src.disk.dev, "--host", HOST],
        );
        let id = out
            .lines()
            .find_map(|l| l.strip_prefix("snapshot "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no snapshot id in:\n{out}"))
            .to_string();
        eprintln!(
            "capture {n}: {id} acknowledged in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        ids.insert(n.to_string(), id);
        let reference = dir.path().join(format!("ref{n}"));
        reference_copy(&src.mount.point, &reference);
        references.push((n, reference));
        mark(vm, &format!("rw-ack-{n}"));
    };
    src.write("etc/hostname", b"pc\n");
    src.write("a.bin", &noise(1, 3 << 20));
    // Kept by every snapshot, in the first one's pack: pruning the first
    // snapshot repacks it.
    src.write("keep.bin", &noise(5, 300 << 10));
    capture(&mut vm, 1);
    src.write("etc/hostname", b"pc2\n");
    std::fs::remove_file(src.path("a.bin")).unwrap();
    src.write("b.bin", &noise(2, 2 << 20));
    capture(&mut vm, 2);
    src.write("c.bin", &noise(3, 1 << 20));
    capture(&mut vm, 3);
    client(&url, &admin, &["request", HOST, "--at", "latest"]);
    mark(&mut vm, "rw-armed");
    // The first snapshot alone holds a.bin: forgotten, its chunks pruned.
    mark(&mut vm, "rw-forgetting-1");
    let out = client(
        &url,
        &admin,
        &["forget", "--keep-last", "2", "--host", HOST],
    );
    eprintln!("forget:\n{out}");
    mark(&mut vm, "rw-forgot-1");
    let out = client(&url, &admin, &["prune", "--host", HOST, "--grace", "0s"]);
    eprintln!("prune:\n{out}");
    mark(&mut vm, "rw-pruned");
    src.write("d.bin", &noise(4, 1 << 20));
    capture(&mut vm, 4);

    // Stop the server, unmount, and let dm-log-writes finish its log.
    vm.run_ok(
        "p=$(cat /tmp/serve.pid); kill -9 $p; while kill -0 $p 2>/dev/null; do sleep 1; done; umount /srv",
        long,
    );
    vm.run_ok(&format!("{} remove lw", tool("dmsetup")), long);
    vm.run_ok("sync", long);
    let guest_done = started.elapsed();
    vm.type_line("poweroff");
    vm.expect("rewind: powering off", Duration::from_secs(60));
    vm.wait_exit(Duration::from_secs(60));
    drop(src);

    // Replay, checking at every flush and FUA write.
    let (sector_size, entries) = read_log(&log_img);
    let marks: Vec<&str> = entries.iter().filter_map(|e| e.mark.as_deref()).collect();
    eprintln!(
        "log: {} entries, sector size {sector_size}, marks {marks:?}",
        entries.len()
    );
    assert!(marks.contains(&"rw-ack-4"), "the log ends early: {marks:?}");
    let work = dir.path().join("replay");
    std::fs::create_dir_all(&work).unwrap();
    let replay_img = work.join("replay.img");
    let replay = std::fs::File::create(&replay_img).unwrap();
    replay.set_len(DATA_DISK).unwrap();
    let log = std::fs::File::open(&log_img).unwrap();
    let mut promised = Promised::default();
    let mut formatted = false;
    // Every write in order, not only every flush: the states a disk that
    // writes in order but loses its cache could leave.
    let every_write = std::env::var_os("REWIND_POWERCUT_EVERY_WRITE").is_some_and(|v| v == "1");
    let mut points = 0usize;
    let mut served = 0usize;
    let mut checked = 0usize;
    let mut max_present = 0usize;
    let mut last_mark = String::new();
    let replay_started = Instant::now();
    let mut buf = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(m) = &e.mark {
            if m == "rw-mkfs" {
                formatted = true;
            }
            promised.mark(m, &ids);
            last_mark = m.clone();
            continue;
        }
        let len = (e.nr_sectors * sector_size) as usize;
        if e.flags & LOG_DISCARD != 0 {
            buf.clear();
            buf.resize(len, 0);
        } else if len > 0 {
            buf.resize(len, 0);
            log.read_exact_at(&mut buf, e.data_at).unwrap();
        }
        if len > 0 {
            replay
                .write_all_at(&buf[..len], e.sector * sector_size)
                .unwrap();
        }
        let durable = e.flags & (LOG_FLUSH | LOG_FUA) != 0;
        if !formatted || !(durable || every_write) {
            continue;
        }
        points += 1;
        match check_point(&replay_img, &work, &promised, true) {
            Ok(r) => {
                max_present = max_present.max(r.snapshots_present);
                served += usize::from(r.served);
                checked += usize::from(r.checked);
            }
            Err(why) => panic!(
                "power cut after log entry {i} (flags {:#x}, after mark {last_mark:?}, promised {promised:?}): {why}",
                e.flags
            ),
        }
    }
    // The final state: every snapshot kept restores what was captured.
    let copy = work.join("final.img");
    sh(
        "cp",
        &[
            "--sparse=always",
            replay_img.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    let mnt = Mounted::new(copy.to_str().unwrap(), &work.join("final"), &["loop"]);
    let repo = mnt.point.join("data/hosts").join(HOST);
    for (n, reference) in &references {
        let id = &ids[&n.to_string()];
        if promised.forgotten.contains(id) {
            continue;
        }
        let out = work.join(format!("restored{n}"));
        sh(
            BIN,
            &[
                "restore",
                "--repo",
                repo.to_str().unwrap(),
                id,
                "--fs",
                src_point.to_str().unwrap(),
                "--target",
                out.to_str().unwrap(),
            ],
        );
        assert_same_tree(reference, &out);
    }
    drop(mnt);
    eprintln!(
        "power cuts ({}): {points} replay points checked ({checked} with `rewind check`, the server started on {served}), \
         up to {max_present} snapshots present, {} acknowledged; \
         guest {:.0} s, replay {:.0} s, {} log entries",
        if every_write {
            "every write"
        } else {
            "every flush and FUA write"
        },
        promised.snapshots.len(),
        guest_done.as_secs_f64(),
        replay_started.elapsed().as_secs_f64(),
        entries.len()
    );
    assert!(points > 20, "too few replay points: {points}");
    assert_eq!(promised.snapshots.len(), 4);
}
