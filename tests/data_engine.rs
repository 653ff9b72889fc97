//! Tier 2 (root): the data engine through the real command line, on ext4
//! filesystems on loop devices — point in time, deduplication without
//! reading unchanged files, damage detection, and crash safety.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn rewind(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(args)
        .output()
        .unwrap()
}

/// Run rewind; panic with its output unless it succeeds. Returns stdout + stderr.
fn rewind_ok(args: &[&str]) -> String {
    let out = rewind(args);
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

fn rewind_fails(args: &[&str]) -> String {
    let out = rewind(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "rewind {} succeeded:\n{text}",
        args.join(" ")
    );
    text
}

fn capture(repo: &Path, fs: &TestFs) -> String {
    rewind_ok(&[
        "capture",
        "--repo",
        repo.to_str().unwrap(),
        "--disk",
        &fs.disk.dev,
    ])
}

/// The newest snapshot id.
fn latest(repo: &Path) -> String {
    let out = rewind_ok(&["snapshots", "--repo", repo.to_str().unwrap()]);
    out.lines()
        .rfind(|l| !l.starts_with("rewind:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn restore(repo: &Path, snapshot: &str, fs: &TestFs, target: &Path) {
    rewind_ok(&[
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        snapshot,
        "--fs",
        fs.point(),
        "--target",
        target.to_str().unwrap(),
    ]);
}

#[test]
fn each_snapshot_restores_exactly_its_own_state() {
    if !root_or_skip("each_snapshot_restores_exactly_its_own_state") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let fs = TestFs::new(dir.path(), "src", 64);
    let w = |rel: &str, data: &[u8]| {
        let p = fs.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };

    // State 1.
    w("a.txt", b"alpha\n");
    w("b.txt", b"bravo\n");
    w("dir/c.txt", b"charlie\n");
    w("big.bin", &noise(1, 3 << 20));
    std::fs::create_dir(fs.path("empty")).unwrap();
    capture(&repo, &fs);
    let snap1 = latest(&repo);
    reference_copy(&fs.mount.point, &dir.path().join("ref1"));

    // State 2: an edit, a deletion, a rename, a new hard link.
    std::thread::sleep(std::time::Duration::from_millis(20));
    w("a.txt", b"alpha, edited\n");
    std::fs::remove_file(fs.path("b.txt")).unwrap();
    std::fs::rename(fs.path("dir/c.txt"), fs.path("dir/d.txt")).unwrap();
    std::fs::hard_link(fs.path("a.txt"), fs.path("dir/a-link")).unwrap();
    capture(&repo, &fs);
    let snap2 = latest(&repo);
    reference_copy(&fs.mount.point, &dir.path().join("ref2"));

    // State 3: big.bin deleted, b.txt back with other content, another link.
    std::fs::remove_file(fs.path("big.bin")).unwrap();
    w("b.txt", b"bravo again\n");
    std::fs::hard_link(fs.path("dir/d.txt"), fs.path("d-link")).unwrap();
    capture(&repo, &fs);
    let snap3 = latest(&repo);
    reference_copy(&fs.mount.point, &dir.path().join("ref3"));

    assert!(snap1 != snap2 && snap2 != snap3);
    for (snap, reference) in [(&snap1, "ref1"), (&snap2, "ref2"), (&snap3, "ref3")] {
        let out = dir.path().join(format!("out-{reference}"));
        restore(&repo, snap, &fs, &out);
        assert_same_tree(&dir.path().join(reference), &out);
    }
    // Spelled out: what was deleted before snapshot 3 does not come back in it.
    assert!(!dir.path().join("out-ref3/big.bin").exists());
    assert!(dir.path().join("out-ref1/big.bin").exists());
    assert!(!dir.path().join("out-ref2/b.txt").exists());
    assert!(!dir.path().join("out-ref2/dir/c.txt").exists());
    assert_eq!(
        std::fs::read(dir.path().join("out-ref3/b.txt")).unwrap(),
        b"bravo again\n"
    );
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().ino();
    assert_eq!(
        ino("out-ref3/d-link"),
        ino("out-ref3/dir/d.txt"),
        "hard link restored as a link"
    );

    // The catalog: which snapshots hold big.bin.
    let found = rewind_ok(&["find", "--repo", repo.to_str().unwrap(), "big.bin"]);
    let holders: Vec<&str> = found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(holders, [snap1.as_str(), snap2.as_str()]);
    // ls of a directory of the first snapshot.
    let listing = rewind_ok(&[
        "ls",
        "--repo",
        repo.to_str().unwrap(),
        &snap1,
        &format!("{}/dir", fs.point()),
    ]);
    assert!(
        listing.contains("/dir/c.txt") && !listing.contains("d.txt"),
        "{listing}"
    );
    // An empty directory lists as nothing; a missing path is an error.
    let empty = rewind_ok(&[
        "ls",
        "--repo",
        repo.to_str().unwrap(),
        &snap1,
        &format!("{}/empty", fs.point()),
    ]);
    assert!(!empty.contains("/empty/"), "{empty}");
    let missing = rewind_fails(&[
        "ls",
        "--repo",
        repo.to_str().unwrap(),
        &snap1,
        &format!("{}/nothing", fs.point()),
    ]);
    assert!(missing.contains("no such file or directory"), "{missing}");
    // Single files.
    let single = dir.path().join("single");
    rewind_ok(&[
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        &snap2,
        "--fs",
        fs.point(),
        "--target",
        single.to_str().unwrap(),
        &format!("{}/a.txt", fs.point()),
    ]);
    assert_eq!(
        std::fs::read(single.join("a.txt")).unwrap(),
        b"alpha, edited\n"
    );
    assert!(!single.join("dir").exists());
}

#[test]
fn unchanged_gigabyte_is_neither_read_nor_stored_again() {
    if !root_or_skip("unchanged_gigabyte_is_neither_read_nor_stored_again") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let fs = TestFs::new(dir.path(), "src", 1400);
    // 1 GiB of distinct content in 60 files, plus a 64 MiB file and its copy.
    for i in 0..60u64 {
        let sub = fs.path(&format!("d{}", i % 6));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}.bin")), noise(100 + i, 16 << 20)).unwrap();
    }
    let big = noise(7, 64 << 20);
    std::fs::write(fs.path("copy-a.bin"), &big).unwrap();
    std::fs::write(fs.path("copy-b.bin"), &big).unwrap();
    drop(big);
    let unique: u64 = 60 * (16 << 20) + (64 << 20);

    capture(&repo, &fs);
    let after_first = du_bytes(&repo);
    // Incompressible data: stored once means about its size, not 64 MiB more.
    assert!(
        after_first < unique + unique / 50,
        "repository is {after_first} bytes for {unique} unique"
    );
    assert!(
        after_first > unique - unique / 50,
        "repository is {after_first} bytes for {unique} unique"
    );

    // Second capture, traced: strace, not rewind, says which files were opened.
    let trace = dir.path().join("trace");
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=open,openat,openat2",
            "-o",
            trace.to_str().unwrap(),
        ])
        .arg(env!("CARGO_BIN_EXE_rewind"))
        .args([
            "capture",
            "--repo",
            repo.to_str().unwrap(),
            "--disk",
            &fs.disk.dev,
        ])
        .output()
        .expect("strace is needed (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(&trace).unwrap();
    let mount = fs.point().to_string();
    // Files are opened relative to their directory's fd, so look for any
    // non-directory open of a name that is one of our files.
    let file_opens: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("O_DIRECTORY"))
        .filter(|l| l.contains(".bin\"") || (l.contains(&mount) && !l.contains("ENOENT")))
        .collect();
    assert!(
        file_opens.is_empty(),
        "unchanged files were opened:\n{}",
        file_opens.join("\n")
    );
    let after_second = du_bytes(&repo);
    assert!(
        after_second - after_first < 1 << 20,
        "the second capture stored {} bytes",
        after_second - after_first
    );
    assert_eq!(
        sh("ls", &[repo.join("snapshots").to_str().unwrap()])
            .lines()
            .count(),
        2,
        "both captures committed a snapshot"
    );
}

#[test]
fn damage_is_detected_and_named() {
    if !root_or_skip("damage_is_detected_and_named") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let fs = TestFs::new(dir.path(), "src", 64);
    // "victim" sorts before "zz-other": its first chunk is the first blob written.
    std::fs::write(fs.path("victim.bin"), noise(3, 8 << 20)).unwrap();
    std::fs::write(fs.path("zz-other.txt"), b"unharmed\n").unwrap();
    capture(&repo, &fs);
    rewind_ok(&["check", "--repo", repo.to_str().unwrap()]);

    let packs: Vec<PathBuf> = walk_files(&repo.join("packs"));
    let first = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(first).unwrap();
    bytes[8 + 1000] ^= 0x40;
    std::fs::write(first, &bytes).unwrap();

    let check = rewind_fails(&["check", "--repo", repo.to_str().unwrap()]);
    assert!(
        check.contains(&format!("{}/victim.bin", fs.point())),
        "check does not name the file:\n{check}"
    );
    assert!(!check.contains("zz-other"), "{check}");

    let snap = latest(&repo);
    let out = dir.path().join("out");
    let failed = rewind_fails(&[
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        &snap,
        "--fs",
        fs.point(),
        "--target",
        out.to_str().unwrap(),
    ]);
    assert!(
        failed.contains("victim.bin"),
        "restore does not name the file:\n{failed}"
    );
    // The rest of the filesystem still comes back.
    assert_eq!(
        std::fs::read(out.join("zz-other.txt")).unwrap(),
        b"unharmed\n"
    );
}

#[test]
fn killed_capture_leaves_earlier_snapshots_intact() {
    if !root_or_skip("killed_capture_leaves_earlier_snapshots_intact") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let fs = TestFs::new(dir.path(), "src", 700);
    std::fs::write(fs.path("first.txt"), b"before the crash\n").unwrap();
    capture(&repo, &fs);
    let snap1 = latest(&repo);
    reference_copy(&fs.mount.point, &dir.path().join("ref1"));

    for i in 0..24u64 {
        std::fs::write(fs.path(&format!("new{i:02}.bin")), noise(200 + i, 20 << 20)).unwrap();
    }
    let packs_before = walk_files(&repo.join("packs")).len();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args([
            "capture",
            "--repo",
            repo.to_str().unwrap(),
            "--disk",
            &fs.disk.dev,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has written some packs, halfway through.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while walk_files(&repo.join("packs")).len() < packs_before + 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the capture finished before it could be killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no packs written within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert_eq!(latest(&repo), snap1, "no partial snapshot is visible");
    rewind_ok(&["check", "--repo", repo.to_str().unwrap()]);
    let out1 = dir.path().join("out1");
    restore(&repo, &snap1, &fs, &out1);
    assert_same_tree(&dir.path().join("ref1"), &out1);

    // The next capture completes, and restores exactly.
    capture(&repo, &fs);
    let snap2 = latest(&repo);
    assert_ne!(snap2, snap1);
    let out2 = dir.path().join("out2");
    restore(&repo, &snap2, &fs, &out2);
    assert_same_tree(&fs.mount.point, &out2);
}

#[test]
fn only_limits_the_capture_to_the_named_filesystems() {
    if !root_or_skip("only_limits_the_capture_to_the_named_filesystems") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let disk = LoopDisk::new(
        dir.path(),
        "two.img",
        96,
        "label: gpt\nstart=2048, size=65536, type=linux\nstart=67584, type=linux\n",
    );
    sh("mkfs.ext4", &["-q", "-F", &disk.part(1)]);
    sh("mkfs.ext4", &["-q", "-F", &disk.part(2)]);
    let a = Mounted::new(&disk.part(1), &dir.path().join("a"), &[]);
    let b = Mounted::new(&disk.part(2), &dir.path().join("b"), &[]);
    std::fs::write(a.point.join("in-a"), b"a").unwrap();
    std::fs::write(b.point.join("in-b"), b"b").unwrap();
    let (pa, pb) = (a.point.to_str().unwrap(), b.point.to_str().unwrap());

    rewind_ok(&[
        "capture",
        "--repo",
        repo.to_str().unwrap(),
        "--disk",
        &disk.dev,
        "--only",
        pb,
    ]);
    let snap = latest(&repo);
    let manifest = rewind::manifest::load(&repo.join(format!("snapshots/{snap}.xml"))).unwrap();
    let with_data: Vec<&str> = manifest
        .filesystems
        .iter()
        .filter_map(|f| f.data.as_ref())
        .map(|d| d.from.as_str())
        .collect();
    assert_eq!(with_data, [pb], "only {pb} was backed up");
    assert_eq!(
        manifest.filesystems.len(),
        2,
        "the manifest still records both filesystems"
    );
    let failed = rewind_fails(&[
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        &snap,
        "--fs",
        pa,
        "--target",
        "/tmp/unused",
    ]);
    assert!(
        failed.contains("has no data for a filesystem mounted at"),
        "{failed}"
    );
    let bad = rewind_fails(&[
        "capture",
        "--repo",
        repo.to_str().unwrap(),
        "--disk",
        &disk.dev,
        "--only",
        "/nowhere",
    ]);
    assert!(bad.contains("--only /nowhere"), "{bad}");
}
