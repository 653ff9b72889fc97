//! Tier 2 (root): capture and restore through the real `rewind serve` on
//! loopback, from ext4 filesystems on loop devices — incremental uploads
//! (bytes counted by the server), eight hosts at once, the server killed
//! during an upload and during a restore, forget + prune — each restore
//! checked by rsync.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;
mod server_util;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use server_util::*;

fn capture(s: &ServerProc, token: &str, host: &str, fs: &TestFs) -> String {
    let out = rewind_ok(
        s,
        token,
        &["capture", "--disk", &fs.disk.dev, "--host", host],
    );
    out.lines()
        .find_map(|l| l.strip_prefix("snapshot "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no snapshot id in:\n{out}"))
        .to_string()
}

fn restore(
    s: &ServerProc,
    token: &str,
    host: &str,
    snap: &str,
    fs: &TestFs,
    target: &Path,
) -> String {
    rewind_ok(
        s,
        token,
        &[
            "restore",
            "--host",
            host,
            snap,
            "--fs",
            fs.point(),
            "--target",
            target.to_str().unwrap(),
        ],
    )
}

#[test]
fn capture_incrementally_and_restore_each_snapshot_over_https() {
    if !root_or_skip("capture_incrementally_and_restore_each_snapshot_over_https") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), true);
    let token = s.host_token("alpha");
    let fs = TestFs::new(dir.path(), "src", 96);

    fs.write("a.txt", b"alpha\n");
    fs.write("dir/c.txt", b"charlie\n");
    fs.write("big.bin", &noise(1, 24 << 20));
    std::os::unix::fs::symlink("a.txt", fs.path("link")).unwrap();
    std::fs::hard_link(fs.path("a.txt"), fs.path("dir/a-hard")).unwrap();
    let before = s.stat("pack_bytes_received");
    let snap1 = capture(&s, &token, "alpha", &fs);
    let first = s.stat("pack_bytes_received") - before;
    reference_copy(&fs.mount.point, &dir.path().join("ref1"));

    // Second state: 2 MiB of new data, an edit, a deletion.
    std::thread::sleep(Duration::from_millis(20));
    fs.write("new.bin", &noise(2, 2 << 20));
    fs.write("a.txt", b"alpha, edited\n");
    std::fs::remove_file(fs.path("dir/c.txt")).unwrap();
    let before = s.stat("pack_bytes_received");
    let snap2 = capture(&s, &token, "alpha", &fs);
    let second = s.stat("pack_bytes_received") - before;
    reference_copy(&fs.mount.point, &dir.path().join("ref2"));
    eprintln!("pack bytes received: first capture {first}, second capture {second}");
    assert!(
        first >= 24 << 20,
        "first capture sent {first} bytes of packs"
    );
    // Only the new chunks (2 MiB of noise, a few bytes of text) and the new
    // tree cross the wire: not the 24 MiB already on the server.
    assert!(
        ((2 << 20)..(2 << 20) + (256 << 10)).contains(&second),
        "second capture sent {second} bytes of packs"
    );

    for (snap, reference) in [(&snap1, "ref1"), (&snap2, "ref2")] {
        let out = dir.path().join(format!("out-{reference}"));
        let report = restore(&s, &token, "alpha", snap, &fs, &out);
        eprintln!("{}", report.trim());
        assert_same_tree(&dir.path().join(reference), &out);
    }
    // The catalog commands work against the server as against a directory.
    let listing = rewind_ok(&s, &token, &["snapshots", "--host", "alpha"]);
    assert!(
        listing.contains(&snap1) && listing.contains(&snap2),
        "{listing}"
    );
    let found = rewind_ok(&s, &token, &["find", "--host", "alpha", "c.txt"]);
    assert!(found.contains(&snap1) && !found.contains(&snap2), "{found}");
    let ls = rewind_ok(&s, &token, &["ls", "--host", "alpha", &snap2, fs.point()]);
    assert!(ls.contains("new.bin"), "{ls}");
    rewind_ok(&s, &token, &["check", "--host", "alpha"]);
    // Another host's token sees nothing of alpha.
    let beta = s.host_token("beta");
    let denied = rewind_fails(&s, &beta, &["snapshots", "--host", "alpha"]);
    assert!(denied.contains("403"), "{denied}");
}

#[test]
fn eight_hosts_capture_at_once_and_each_restores_exactly() {
    if !root_or_skip("eight_hosts_capture_at_once_and_each_restores_exactly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Eight hosts captured from this one machine: its ids are declared
    // shared (in a fleet, each host is a machine of its own).
    let shared = this_machine_shared();
    let shared: Vec<&str> = shared.iter().map(String::as_str).collect();
    let s = ServerProc::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        false,
        None,
        &shared,
    );
    let hosts: Vec<(String, String, TestFs)> = (0..8)
        .map(|i| {
            let host = format!("host{i}");
            let fs = TestFs::new(dir.path(), &host, 24);
            fs.write("etc/hostname", format!("{host}\n").as_bytes());
            fs.write("data/unique.bin", &noise(100 + i, 3 << 20));
            fs.write("data/shared.bin", &noise(7, 1 << 20));
            for j in 0..20 {
                fs.write(
                    &format!("small/{j}.txt"),
                    format!("{host} file {j}\n").as_bytes(),
                );
            }
            (host.clone(), s.host_token(&host), fs)
        })
        .collect();
    let started = Instant::now();
    let children: Vec<_> = hosts
        .iter()
        .map(|(host, token, fs)| {
            rewind_cmd(
                &s,
                token,
                &["capture", "--disk", &fs.disk.dev, "--host", host],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for (child, (host, _, _)) in children.into_iter().zip(&hosts) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "capture of {host} failed:\n{}\n{}",
            output_text(&out),
            s.log_text()
        );
    }
    eprintln!(
        "eight concurrent captures took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for (host, token, fs) in &hosts {
        assert_eq!(s.committed(host).len(), 1, "{host}");
        let out = dir.path().join(format!("out-{host}"));
        restore(&s, token, host, "latest", fs, &out);
        assert_same_tree(&fs.mount.point, &out);
    }
}

#[test]
fn killed_server_loses_no_snapshot_and_restores_resume() {
    if !root_or_skip("killed_server_loses_no_snapshot_and_restores_resume") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = ServerProc::start(&dir.path().join("data"), false);
    let token = s.host_token("crash");
    let fs = TestFs::new(dir.path(), "src", 400);
    fs.write("first.txt", b"before the crash\n");
    let snap1 = capture(&s, &token, "crash", &fs);
    reference_copy(&fs.mount.point, &dir.path().join("ref1"));

    // Kill the server while a capture uploads 240 MiB.
    for i in 0..12u64 {
        fs.write(&format!("new{i:02}.bin"), &noise(200 + i, 20 << 20));
    }
    let packs = s.data.join("hosts/crash/packs");
    let count = |p: &Path| walk_files(p).len();
    let packs_before = count(&packs);
    let mut child = rewind_cmd(
        &s,
        &token,
        &["capture", "--disk", &fs.disk.dev, "--host", "crash"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&packs) < packs_before + 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the capture finished before the server could be killed"
        );
        assert!(Instant::now() < deadline, "no packs uploaded within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.kill();
    let packs_at_kill = count(&packs);
    // The client keeps retrying; it dies too (as if it gave up).
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the capture should be retrying"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        packs_at_kill < packs_before + 14,
        "the upload was not interrupted: {packs_at_kill} packs"
    );
    assert_eq!(
        s.committed("crash"),
        [format!("{snap1}.xml")],
        "no partial snapshot"
    );

    s.restart();
    rewind_ok(&s, &token, &["check", "--host", "crash"]);
    let out1 = dir.path().join("out1");
    restore(&s, &token, "crash", &snap1, &fs, &out1);
    assert_same_tree(&dir.path().join("ref1"), &out1);
    // The rerun completes; the packs uploaded before the crash are reused.
    let before = s.stat("pack_bytes_received");
    let snap2 = capture(&s, &token, "crash", &fs);
    let resent = s.stat("pack_bytes_received") - before;
    eprintln!(
        "rerun after the crash sent {resent} bytes of packs ({} packs were stored before the kill)",
        packs_at_kill - packs_before
    );
    assert!(
        resent < 240 << 20,
        "the rerun sent everything again ({resent} bytes)"
    );

    // Kill it during a restore: the client retries and finishes once it is back.
    let out2 = dir.path().join("out2");
    let mut restoring = rewind_cmd(
        &s,
        &token,
        &[
            "restore",
            "--host",
            "crash",
            &snap2,
            "--fs",
            fs.point(),
            "--target",
            out2.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out2.exists() || du_bytes(&out2) < 30 << 20 {
        assert!(
            restoring.try_wait().unwrap().is_none(),
            "the restore finished before the server could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "restore made no progress within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    s.kill();
    let at_kill = du_bytes(&out2);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        restoring.try_wait().unwrap().is_none(),
        "the restore gave up while the server was down"
    );
    s.restart();
    let out = restoring.wait_with_output().unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "the restore did not finish after the server came back:\n{text}"
    );
    assert!(text.contains("retrying"), "{text}");
    eprintln!("restore: server killed with {at_kill} bytes written; finished after the restart");
    assert_same_tree(&fs.mount.point, &out2);
}

#[test]
fn forget_and_prune_shrink_storage_and_kept_snapshots_restore() {
    if !root_or_skip("forget_and_prune_shrink_storage_and_kept_snapshots_restore") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let token = s.host_token("gc");
    let fs = TestFs::new(dir.path(), "src", 128);
    // Four snapshots; each replaces a big file, so old data becomes garbage.
    let mut snaps = Vec::new();
    fs.write("keep.txt", b"always here\n");
    for i in 0..4u64 {
        if i > 0 {
            std::fs::remove_file(fs.path(&format!("big{}.bin", i - 1))).unwrap();
        }
        fs.write(&format!("big{i}.bin"), &noise(300 + i, 16 << 20));
        snaps.push(capture(&s, &token, "gc", &fs));
        reference_copy(&fs.mount.point, &dir.path().join(format!("ref{i}")));
        std::thread::sleep(Duration::from_millis(1100)); // distinct snapshot times
    }
    let host_dir = s.data.join("hosts/gc");
    let before = du_bytes(&host_dir);
    let out = rewind_ok(
        &s,
        &s.admin,
        &["forget", "--keep-last", "2", "--host", "gc"],
    );
    assert!(out.contains("keeping 2 of 4"), "{out}");
    // A grace period protects young packs: nothing goes yet.
    let out = rewind_ok(&s, &s.admin, &["prune", "--host", "gc"]);
    assert!(out.contains("retired 0 unused and repacked 0"), "{out}");
    assert!(du_bytes(&host_dir) >= before - (1 << 20));
    let out = rewind_ok(&s, &s.admin, &["prune", "--host", "gc", "--grace", "0s"]);
    eprintln!("{}", out.trim());
    let after = du_bytes(&host_dir);
    eprintln!("host repository: {before} bytes before forget + prune, {after} after");
    assert!(
        after < before - (24 << 20),
        "storage did not shrink: {before} -> {after}"
    );
    rewind_ok(&s, &token, &["check", "--host", "gc"]);
    for i in [2, 3] {
        let out = dir.path().join(format!("out{i}"));
        restore(&s, &token, "gc", &snaps[i], &fs, &out);
        assert_same_tree(&dir.path().join(format!("ref{i}")), &out);
    }
    let listing = rewind_ok(&s, &token, &["snapshots", "--host", "gc"]);
    assert!(
        !listing.contains(&snaps[0]) && listing.contains(&snaps[3]),
        "{listing}"
    );
}
