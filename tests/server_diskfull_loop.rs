//! Tier 2 (root): the server's disk fills during a capture (issue 16,
//! point 6). The server keeps its data on a small ext4 filesystem on a loop
//! device; a capture larger than the space left fails with a clear error
//! (507, not retried forever), the earlier snapshot and the catalog are
//! intact (checked, restored byte for byte by rsync), and the server keeps
//! serving, reads and catalog changes alike, once space is freed.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;
mod server_util;

use common::*;
use server_util::*;

#[test]
fn a_full_disk_fails_the_capture_and_keeps_everything_else() {
    if !root_or_skip("a_full_disk_fails_the_capture_and_keeps_everything_else") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The server's filesystem: 48 MiB (about 40 MiB free once made).
    let store = TestFs::new(dir.path(), "store", 48);
    let data = store.mount.point.join("data");
    let s = ServerProc::start(&data, false);
    let token = s.host_token("full");
    let src = TestFs::new(dir.path(), "src", 200);
    src.write("small.txt", b"before the disk filled\n");
    src.write("some.bin", &noise(1, 4 << 20));
    let out = rewind_ok(
        &s,
        &token,
        &["capture", "--disk", &src.disk.dev, "--host", "full"],
    );
    let snap1 = out
        .lines()
        .find_map(|l| l.strip_prefix("snapshot "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    reference_copy(&src.mount.point, &dir.path().join("ref1"));
    let _armed = rewind_ok(&s, &s.admin, &["request", "full", "--at", "latest"]);
    let requests_before = std::fs::read(data.join("catalog/requests.json")).unwrap();

    // 80 MiB that does not compress: more than the disk has left.
    for i in 0..4u64 {
        src.write(&format!("big{i}.bin"), &noise(100 + i, 20 << 20));
    }
    let started = std::time::Instant::now();
    let text = rewind_fails(
        &s,
        &token,
        &["capture", "--disk", &src.disk.dev, "--host", "full"],
    );
    let took = started.elapsed();
    eprintln!(
        "the capture failed after {:.1}s:\n{text}",
        took.as_secs_f64()
    );
    assert!(
        text.contains("507") || text.contains("disk is full"),
        "{text}"
    );
    assert!(text.contains("disk is full"), "a clear error: {text}");
    assert!(
        took < std::time::Duration::from_secs(120),
        "it gave up in time"
    );
    assert_eq!(
        s.committed("full"),
        [format!("{snap1}.xml")],
        "no partial snapshot"
    );

    // Full to the last block (the failed upload's temporary file is gone:
    // fill what it freed).
    let filler = store.mount.point.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
    }

    // While full: reads answer, the catalog is as it was, and a catalog
    // change fails whole: the request stays armed, in memory and on disk.
    rewind_ok(&s, &s.admin, &["status"]);
    let cat = std::fs::read(data.join("catalog/requests.json")).unwrap();
    assert_eq!(cat, requests_before, "the catalog is intact");
    let text = rewind_fails(&s, &s.admin, &["request", "full", "--cancel"]);
    eprintln!("cancel while full:\n{text}");
    assert!(text.contains("disk is full"), "{text}");
    let status = rewind_ok(&s, &s.admin, &["status"]);
    assert!(status.contains("armed"), "still armed: {status}");
    let cat = std::fs::read(data.join("catalog/requests.json")).unwrap();
    assert_eq!(cat, requests_before, "the catalog is intact");
    std::fs::remove_file(&filler).unwrap();

    // The operator frees space: prune drops the failed capture's packs.
    let free_before = sh("df", &["--output=avail", "-B1", data.to_str().unwrap()]);
    rewind_ok(&s, &s.admin, &["prune", "--host", "full", "--grace", "0s"]);
    let free_after = sh("df", &["--output=avail", "-B1", data.to_str().unwrap()]);
    eprintln!("free before prune: {free_before} after: {free_after}");

    // Everything works again: the repository checks, the first snapshot
    // restores exactly, a capture succeeds.
    rewind_ok(&s, &token, &["check", "--host", "full"]);
    let out1 = dir.path().join("out1");
    rewind_ok(
        &s,
        &token,
        &[
            "restore",
            "--host",
            "full",
            &snap1,
            "--fs",
            src.point(),
            "--target",
            out1.to_str().unwrap(),
        ],
    );
    assert_same_tree(&dir.path().join("ref1"), &out1);
    for i in 1..4u64 {
        std::fs::remove_file(src.path(&format!("big{i}.bin"))).unwrap();
    }
    rewind_ok(
        &s,
        &token,
        &["capture", "--disk", &src.disk.dev, "--host", "full"],
    );
    assert_eq!(s.committed("full").len(), 2);
}
