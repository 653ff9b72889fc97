//! Consistent captures on real filesystems (root, loop devices): a btrfs
//! under a continuous SQLite writer is captured from a snapshot and restored
//! intact; the same tree read live is recorded as live; a failing pre-hook
//! stops the capture with its message; exclusions by pattern, CACHEDIR.TAG
//! and nodump leave excluded directories empty; snapshots left behind, by a
//! capture killed with SIGKILL too, are removed by the next capture.

#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{LoopDisk, Mounted, root_or_skip, sh};
use rewind::manifest::{Manifest, ReadMode};

/// A btrfs filesystem on a partitioned loop disk, mounted under `dir`.
fn btrfs(dir: &Path, name: &str) -> (LoopDisk, Mounted) {
    let disk = LoopDisk::new(
        dir,
        &format!("{name}.img"),
        400,
        "label: gpt\nstart=2048, type=linux\n",
    );
    sh("mkfs.btrfs", &["-q", "-f", &disk.part(1)]);
    let m = Mounted::new(&disk.part(1), &dir.join(name), &[]);
    (disk, m)
}

fn rewind(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(args)
        .env_remove("REWIND_CAPTURE_CONFIG")
        .output()
        .unwrap()
}

/// `rewind capture --repo` of the one filesystem at `point` on `disk`,
/// with the configuration `config` (its hooks directory set to an empty one).
fn capture(dir: &Path, disk: &LoopDisk, point: &Path, config: &str, extra: &[&str]) -> Output {
    let hooks = dir.join("no-hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let file = dir.join("capture.toml");
    let text = if config.contains("[hooks]") {
        config.to_string()
    } else {
        format!("[hooks]\ndir = \"{}\"\n{config}", hooks.display())
    };
    std::fs::write(&file, text).unwrap();
    let repo = dir.join("repo");
    let mut args = vec![
        "capture",
        "--repo",
        repo.to_str().unwrap(),
        "--host",
        "snap-test",
        "--disk",
        &disk.dev,
        "--only",
        point.to_str().unwrap(),
        "--config",
        file.to_str().unwrap(),
        // The defaults (/tmp/* among them) apply: not inside a filesystem
        // mounted below /tmp, as these are.
    ];
    args.extend_from_slice(extra);
    let out = rewind(&args);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "capture failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn latest(dir: &Path) -> Manifest {
    let repo = rewind::repo::Repo::open(&dir.join("repo")).unwrap();
    repo.snapshots().unwrap().pop().expect("a snapshot")
}

fn read_mode(m: &Manifest, point: &Path) -> Option<ReadMode> {
    m.filesystems
        .iter()
        .find_map(|f| f.data.as_ref().filter(|d| Path::new(&d.from) == point))
        .and_then(|d| d.read)
}

fn restore(dir: &Path, point: &Path, target: &Path) {
    let repo = dir.join("repo");
    let out = rewind(&[
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        "latest",
        "--fs",
        point.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The capture's snapshots present in a btrfs mount.
fn snapshots_in(point: &Path) -> Vec<String> {
    std::fs::read_dir(point)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rewind-snap-"))
        .collect()
}

/// A process that commits numbered transactions to an SQLite database
/// (WAL) as fast as it can; `committed` is the last one sqlite3 reported
/// done.
struct Writer {
    child: std::process::Child,
    committed: Arc<AtomicU64>,
    feeder: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicU64>,
}

impl Writer {
    fn start(db: &Path) -> Writer {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sqlite3 (scripts/setup installs it)");
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let committed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicU64::new(0));
        let c = committed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("committed ") {
                    c.store(n.trim().parse().unwrap(), Ordering::SeqCst);
                }
            }
        });
        let s = stop.clone();
        let feeder = std::thread::spawn(move || {
            writeln!(
                stdin,
                "PRAGMA journal_mode=WAL;\nCREATE TABLE t(n INTEGER PRIMARY KEY, a BLOB, b BLOB);\nCREATE TABLE total(k INTEGER PRIMARY KEY, sum INTEGER);\nINSERT INTO total VALUES(1, 0);"
            )
            .unwrap();
            let mut n = 0u64;
            while s.load(Ordering::SeqCst) == 0 {
                n += 1;
                // Several pages per transaction, and one row every one updates.
                let r = writeln!(
                    stdin,
                    "BEGIN; INSERT INTO t VALUES({n}, randomblob(9000), randomblob(5000)); UPDATE total SET sum = sum + {n} WHERE k = 1; COMMIT;\n.print committed {n}"
                );
                if r.is_err() {
                    break;
                }
                if n.is_multiple_of(50) {
                    stdin.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            writeln!(stdin, ".quit").ok();
        });
        Writer {
            child,
            committed,
            feeder: Some(feeder),
            stop,
        }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    fn wait_for(&self, n: u64) {
        let start = Instant::now();
        while self.committed() < n {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "sqlite3 is stuck"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(1, Ordering::SeqCst);
        self.feeder.take().unwrap().join().unwrap();
        self.child.wait().unwrap();
        self.committed()
    }
}

fn sqlite(db: &Path, sql: &str) -> String {
    sh("sqlite3", &[db.to_str().unwrap(), sql])
        .trim()
        .to_string()
}

#[test]
fn a_btrfs_under_a_sqlite_writer_is_captured_from_a_snapshot() {
    if !root_or_skip("a_btrfs_under_a_sqlite_writer_is_captured_from_a_snapshot") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, m) = btrfs(dir.path(), "data");
    let point = m.point.clone();
    // A nested subvolume (not mounted): its files are in the capture too.
    sh(
        "btrfs",
        &[
            "subvolume",
            "create",
            point.join("nested").to_str().unwrap(),
        ],
    );
    std::fs::write(point.join("nested/inside"), b"in a nested subvolume").unwrap();
    std::fs::create_dir(point.join("app")).unwrap();
    let db = point.join("app/app.db");
    let writer = Writer::start(&db);
    writer.wait_for(200);
    let before = writer.committed();
    let started = Instant::now();
    let out = capture(dir.path(), &disk, &point, "", &[]);
    let capture_secs = started.elapsed().as_secs_f64();
    let during = writer.committed();
    ok(&out);
    let m1 = latest(dir.path());
    assert_eq!(read_mode(&m1, &point), Some(ReadMode::BtrfsSnapshot));
    assert_eq!(m1.schema, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("read from a btrfs snapshot"), "{stderr}");
    // The snapshot is gone, and was never part of the tree.
    assert!(
        snapshots_in(&point).is_empty(),
        "{:?}",
        snapshots_in(&point)
    );

    // The same tree, live, while the writer goes on.
    let out = capture(dir.path(), &disk, &point, "", &["--live"]);
    ok(&out);
    let m2 = latest(dir.path());
    assert_eq!(read_mode(&m2, &point), Some(ReadMode::Live));
    // And the configuration switch does the same.
    let out = capture(dir.path(), &disk, &point, "[capture]\nlive = true\n", &[]);
    ok(&out);
    assert_eq!(read_mode(&latest(dir.path()), &point), Some(ReadMode::Live));
    let total = writer.stop();
    eprintln!(
        "committed {before} before the snapshot capture, {during} when it ended ({capture_secs:.1}s), {total} in all"
    );

    // Restore the snapshot capture (the first): intact, and a prefix.
    let repo = rewind::repo::Repo::open(&dir.path().join("repo")).unwrap();
    let snaps = repo.snapshots().unwrap();
    let first = &snaps[0].snapshot.id;
    let target = dir.path().join("restored");
    let out = rewind(&[
        "restore",
        "--repo",
        dir.path().join("repo").to_str().unwrap(),
        first,
        "--fs",
        point.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rdb = target.join("app/app.db");
    assert_eq!(sqlite(&rdb, "PRAGMA integrity_check;"), "ok");
    let rows: Vec<u64> = sqlite(&rdb, "SELECT count(*), coalesce(max(n), 0) FROM t;")
        .split('|')
        .map(|v| v.parse().unwrap())
        .collect();
    let (count, max) = (rows[0], rows[1]);
    assert_eq!(count, max, "the restored rows are 1..={max}, without a gap");
    assert!(
        (before..=during).contains(&max),
        "the restored database holds {max} transactions; {before} were committed before the capture and {during} when it ended"
    );
    let sum: u64 = sqlite(&rdb, "SELECT sum FROM total;").parse().unwrap();
    assert_eq!(sum, max * (max + 1) / 2, "each transaction is whole");
    assert_eq!(
        std::fs::read(target.join("nested/inside")).unwrap(),
        b"in a nested subvolume"
    );
    assert!(std::fs::read_dir(&target).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".rewind-snap")
    }),);
    // The nested subvolume's snapshot went with the outer one.
    let list = sh("btrfs", &["subvolume", "list", point.to_str().unwrap()]);
    assert!(!list.contains(".rewind-snap"), "{list}");
}

#[test]
fn a_failing_pre_hook_stops_the_capture_with_its_message() {
    if !root_or_skip("a_failing_pre_hook_stops_the_capture_with_its_message") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, m) = btrfs(dir.path(), "data");
    let point = m.point.clone();
    std::fs::write(point.join("f"), b"x").unwrap();
    let marker = dir.path().join("after-ran");
    let hooks_dir = dir.path().join("hooks.d");
    std::fs::create_dir(&hooks_dir).unwrap();
    // A drop-in's post-hook: runs although the pre-hook failed.
    std::fs::write(
        hooks_dir.join("50-after.toml"),
        format!(
            "[[hook]]\nwhen = \"after-snapshot\"\nrun = \"echo $REWIND_MOUNT_POINT > {}\"\n",
            marker.display()
        ),
    )
    .unwrap();
    let config = format!(
        r#"[hooks]
dir = "{}"

[[hook]]
name = "flush-db"
when = "before-snapshot"
run = "echo 'database refuses to flush' >&2; exit 4"
"#,
        hooks_dir.display()
    );
    let out = capture(dir.path(), &disk, &point, &config, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("before-snapshot hook flush-db")
            && stderr.contains("failed (exit status: 4): database refuses to flush"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        point.to_str().unwrap()
    );
    let repo = rewind::repo::Repo::open(&dir.path().join("repo")).unwrap();
    assert!(
        repo.snapshots().unwrap().is_empty(),
        "nothing was committed"
    );
    assert!(snapshots_in(&point).is_empty());

    // The same hook allowed to fail: the capture goes on, warning.
    let config = config.replace("exit 4\"", "exit 4\"\non-failure = \"continue\"");
    let out = capture(dir.path(), &disk, &point, &config, &[]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("database refuses to flush"));
}

#[test]
fn exclusions_leave_excluded_directories_empty() {
    if !root_or_skip("exclusions_leave_excluded_directories_empty") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, m) = btrfs(dir.path(), "data");
    let p = m.point.clone();
    let w = |rel: &str, data: &[u8]| {
        let f = p.join(rel);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    };
    w("keep/a", b"kept");
    w("keep/b.tmp", b"by name");
    w("scratch/big", b"by the command line's pattern");
    w("scratch/sub/deeper", b"x");
    w("build/out.o", b"by the configuration's pattern");
    w(
        "cache/CACHEDIR.TAG",
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    w("cache/blob", b"cached");
    w("not-a-cache/CACHEDIR.TAG", b"Signature: wrong\n");
    w("not-a-cache/kept", b"kept");
    w("nodump-dir/secret", b"nodump");
    w("nodump-file", b"nodump");
    w("keep/other", b"kept");
    sh("chattr", &["+d", p.join("nodump-dir").to_str().unwrap()]);
    sh("chattr", &["+d", p.join("nodump-file").to_str().unwrap()]);
    for d in ["scratch/sub", "build", "cache", "nodump-dir"] {
        std::fs::set_permissions(
            p.join(d),
            std::os::unix::fs::PermissionsExt::from_mode(0o750),
        )
        .unwrap();
        sh("chown", &["123:456", p.join(d).to_str().unwrap()]);
    }
    let config = format!(
        "[exclude]\npatterns = [\"{}/build\", \"*.tmp\"]\n",
        p.display()
    );
    let scratch = format!("{}/scratch/*", p.display());
    let out = capture(dir.path(), &disk, &p, &config, &["--exclude", &scratch]);
    ok(&out);
    let target = dir.path().join("restored");
    restore(dir.path(), &p, &target);
    let exists = |rel: &str| target.join(rel).exists();
    for kept in [
        "keep/a",
        "keep/other",
        "not-a-cache/kept",
        "not-a-cache/CACHEDIR.TAG",
    ] {
        assert!(exists(kept), "{kept} was restored");
    }
    for gone in ["keep/b.tmp", "nodump-file"] {
        assert!(!exists(gone), "{gone} is excluded");
    }
    // `scratch/*` matched its subdirectory too: kept, empty.
    let in_scratch: Vec<_> = std::fs::read_dir(target.join("scratch"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(in_scratch, ["sub"]);
    for empty in ["scratch/sub", "build", "cache", "nodump-dir"] {
        let d = target.join(empty);
        let md = std::fs::metadata(&d).unwrap_or_else(|e| panic!("{empty}: {e}"));
        assert!(md.is_dir());
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            0,
            "{empty} is empty"
        );
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!(md.permissions().mode() & 0o7777, 0o750, "{empty}");
        assert_eq!((md.uid(), md.gid()), (123, 456), "{empty}");
    }
}

#[test]
fn snapshots_left_behind_are_removed_by_the_next_capture() {
    if !root_or_skip("snapshots_left_behind_are_removed_by_the_next_capture") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, m) = btrfs(dir.path(), "data");
    let point = m.point.clone();
    std::fs::write(point.join("f"), b"x").unwrap();

    // One left by a capture whose process is gone.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let leftover = point.join(format!(".rewind-snap-{dead_pid}"));
    sh(
        "btrfs",
        &[
            "subvolume",
            "snapshot",
            "-r",
            point.to_str().unwrap(),
            leftover.to_str().unwrap(),
        ],
    );
    let out = capture(dir.path(), &disk, &point, "", &[]);
    ok(&out);
    assert!(!leftover.exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a snapshot left by an earlier capture"));

    // A capture killed (SIGKILL) while it holds its snapshot: an
    // after-snapshot hook holds it there.
    let hook_pid = dir.path().join("hook.pid");
    let config = format!(
        "[[hook]]\nwhen = \"after-snapshot\"\nrun = \"echo $$ > {}; exec sleep 60\"\n",
        hook_pid.display()
    );
    let hooks = dir.path().join("no-hooks.d");
    let file = dir.path().join("killed.toml");
    std::fs::write(
        &file,
        format!("[hooks]\ndir = \"{}\"\n{config}", hooks.display()),
    )
    .unwrap();
    let repo = dir.path().join("repo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args([
            "capture",
            "--repo",
            repo.to_str().unwrap(),
            "--host",
            "snap-test",
            "--disk",
            &disk.dev,
            "--only",
            point.to_str().unwrap(),
            "--config",
            file.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !hook_pid.exists()
        || std::fs::read_to_string(&hook_pid)
            .unwrap()
            .trim()
            .is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the hook never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let expected = format!(".rewind-snap-{}", child.id());
    assert_eq!(snapshots_in(&point), std::slice::from_ref(&expected));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    let sleeper: i32 = std::fs::read_to_string(&hook_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sleeper),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(
        snapshots_in(&point),
        std::slice::from_ref(&expected),
        "left behind"
    );
    let out = capture(dir.path(), &disk, &point, "", &[]);
    ok(&out);
    assert!(
        snapshots_in(&point).is_empty(),
        "{:?}",
        snapshots_in(&point)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&expected), "{stderr}");
    // The machine is probed again after the clean-up: the snapshot it
    // removed is not described as one of the machine's subvolumes.
    let subvolumes: Vec<String> = latest(dir.path())
        .filesystems
        .iter()
        .flat_map(|f| f.subvolumes.iter().map(|s| s.path.clone()))
        .collect();
    assert!(
        !subvolumes.iter().any(|s| s.contains(".rewind-snap-")),
        "{subvolumes:?}"
    );
    // Read from a snapshot, an unchanged file is still not read again.
    assert!(stderr.contains("(0 files read, 1 unchanged)"), "{stderr}");
}

#[test]
fn a_mounted_subvolume_is_captured_with_its_nested_subvolumes() {
    if !root_or_skip("a_mounted_subvolume_is_captured_with_its_nested_subvolumes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, top) = btrfs(dir.path(), "top");
    let t = top.point.clone();
    for sub in ["@root", "@root/inner", "@root/d", "@root/d/deep", "other"] {
        if sub == "@root/d" {
            std::fs::create_dir(t.join(sub)).unwrap();
            continue;
        }
        sh(
            "btrfs",
            &["subvolume", "create", t.join(sub).to_str().unwrap()],
        );
    }
    std::fs::write(t.join("@root/inner/a"), b"inner").unwrap();
    std::fs::write(t.join("@root/d/deep/b"), b"deep").unwrap();
    std::fs::write(t.join("other/c"), b"not below @root").unwrap();
    // Only the subvolume is mounted (as / would be), not the top level.
    drop(top);
    let m = Mounted::new(&disk.part(1), &dir.path().join("root"), &["subvol=@root"]);
    let point = m.point.clone();
    let out = capture(dir.path(), &disk, &point, "", &[]);
    ok(&out);
    assert_eq!(
        read_mode(&latest(dir.path()), &point),
        Some(ReadMode::BtrfsSnapshot)
    );
    let target = dir.path().join("restored");
    restore(dir.path(), &point, &target);
    assert_eq!(std::fs::read(target.join("inner/a")).unwrap(), b"inner");
    assert_eq!(std::fs::read(target.join("d/deep/b")).unwrap(), b"deep");
    assert!(!target.join("other").exists());
    assert!(snapshots_in(&point).is_empty());
    let list = sh("btrfs", &["subvolume", "list", point.to_str().unwrap()]);
    assert!(!list.contains(".rewind-snap"), "{list}");
}
