//! Tier 1: the `--json` output of the listing commands on a repository
//! (snapshots, ls, find, check) parses into the documented shapes
//! (docs/api.md, "JSON output"); the server's commands (status, token
//! list, audit, verify) are parsed in tests/server_ops.rs.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rewind::api::SnapshotSummary;
use rewind::browse::EntryJson;

/// A copy of the golden repository (reading it may write an index).
fn golden_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/repo-v1");
    let repo = dir.path().join("repo");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&repo)
            .status()
            .unwrap()
            .success()
    );
    (dir, repo)
}

/// Run rewind; its stdout, and whether it succeeded.
fn rewind(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(args)
        .env_remove("REWIND_SERVER")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

fn json_of<T: serde::de::DeserializeOwned>(args: &[&str]) -> T {
    let (ok, out) = rewind(args);
    assert!(ok, "rewind {} failed: {out}", args.join(" "));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn listing_commands_print_json_that_parses() {
    let (_dir, repo) = golden_copy();
    let r = repo.to_str().unwrap();

    let snaps: Vec<SnapshotSummary> = json_of(&["snapshots", "--repo", r, "--json"]);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].host, "golden");
    assert_eq!(snaps[0].filesystems[0].from, "/");

    let etc: Vec<EntryJson> = json_of(&["ls", "--repo", r, "latest", "/etc", "--json"]);
    let names: Vec<&str> = etc.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["/etc/empty", "/etc/hostname", "/etc/hostname.bak"]);
    assert_eq!(etc[0].mode, "0600");
    assert_eq!(etc[2].hardlink_to.as_deref(), Some("etc/hostname"));
    let usr: Vec<EntryJson> = json_of(&["ls", "--repo", r, "latest", "/usr", "--json"]);
    let link = usr.iter().find(|e| e.kind == "symlink").unwrap();
    assert_eq!(link.link_target.as_deref(), Some("../etc/hostname"));
    let tool: Vec<EntryJson> = json_of(&["ls", "--repo", r, "latest", "/usr/bin/tool", "--json"]);
    assert_eq!((tool[0].mode.as_str(), tool[0].size), ("4755", 20));
    assert!(tool[0].mtime.ends_with('Z') && tool[0].mtime.contains('.'));

    let found: Vec<EntryJson> = json_of(&["find", "--repo", r, "hostname*", "--json"]);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found
            .iter()
            .all(|e| e.snapshot.as_deref() == Some("20261130T120000Z-golden"))
    );
    // Nothing found is an empty list, not an error.
    let none: Vec<EntryJson> = json_of(&["find", "--repo", r, "nothing-like-this", "--json"]);
    assert!(none.is_empty());

    let check: serde_json::Value = json_of(&["check", "--repo", r, "--json"]);
    assert_eq!(check["clean"], true);
    assert_eq!(check["snapshots"], 1);
    assert!(check["packs"].as_u64().unwrap() >= 1);
    assert!(check["damage"].as_array().unwrap().is_empty());

    // Damage: the JSON says so, and the command fails.
    let packs = repo.join("packs");
    let sub = std::fs::read_dir(&packs).unwrap().next().unwrap().unwrap();
    let pack = std::fs::read_dir(sub.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[12] ^= 0xff;
    std::fs::write(&pack, &bytes).unwrap();
    let (ok, out) = rewind(&["check", "--repo", r, "--json"]);
    assert!(!ok);
    let check: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(check["clean"], false);
    assert!(!check["damage"].as_array().unwrap().is_empty(), "{check}");
}
