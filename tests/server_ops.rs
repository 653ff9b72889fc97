//! Tier 1 (no root, but a capture on loop devices as root): operations
//! through the real `rewind serve` — capture reports and "recoverable now,
//! and why not" through the API, `status --check` and `/metrics` (and
//! `promtool check metrics` when it is installed); age limits; the
//! verification finding a flipped byte; the audit log recording each
//! action and refusing every way to rewrite it through the API; monitor
//! tokens.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;
mod server_util;

use std::process::Command;

use reqwest::StatusCode;
use server_util::*;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Commit a data-less snapshot of `host` taken `hours_ago`: web1 is the
/// machine with 52:54:00:00:00:0a, every other host a machine of its own.
fn commit(s: &ServerProc, token: &str, host: &str, id: &str, hours_ago: i64) {
    let time = rewind::time::format_utc(now() - hours_ago * 3600);
    let mac = match host {
        "web1" => "52:54:00:00:00:0a".to_string(),
        _ => host_mac(host),
    };
    let (status, text) = put_snapshot(s, token, host, id, &time, &mac);
    assert_eq!(status, StatusCode::CREATED, "{text}");
}

fn report(s: &ServerProc, token: &str, host: &str, body: serde_json::Value) -> StatusCode {
    http_client()
        .post(format!("{}/v1/hosts/{host}/captures", s.url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap()
        .status()
}

/// `rewind status --check ARGS`: (exit code, the line).
fn check(s: &ServerProc, token: &str, args: &[&str]) -> (i32, String) {
    let mut all = vec!["status", "--check"];
    all.extend_from_slice(args);
    let out = rewind_cmd(s, token, &all).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    (out.status.code().unwrap(), stdout.trim().to_string())
}

fn get(s: &ServerProc, token: &str, path: &str) -> (StatusCode, String) {
    let resp = http_client()
        .get(format!("{}{path}", s.url))
        .bearer_auth(token)
        .send()
        .unwrap();
    (resp.status(), resp.text().unwrap())
}

fn monitor_token(s: &ServerProc) -> String {
    let out = rewind_ok(s, &s.admin, &["token", "create", "--monitor"]);
    out.lines()
        .find(|l| l.starts_with("rwd_"))
        .unwrap()
        .to_string()
}

/// `promtool check metrics` on the text, when promtool is installed
/// (scripts/setup installs it).
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool is not installed: metrics format not checked by it");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_partial_capture_shows_as_not_recoverable_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let web = s.host_token("web1");
    let db = s.host_token("db1");
    commit(&s, &web, "web1", "w1", 30);
    commit(&s, &web, "web1", "w2", 1);
    commit(&s, &db, "db1", "d1", 2);
    let skipped = "no data for /dev/vg0/data (xfs): it is not mounted";
    let partial = serde_json::json!({
        "outcome": "partial", "snapshot": "w2", "started": rewind::time::format_utc(now() - 3600),
        "duration_secs": 42.5, "bytes": 1000, "bytes_stored": 10, "warnings": [skipped]
    });
    assert_eq!(
        report(&s, &web, "web1", partial.clone()),
        StatusCode::NO_CONTENT
    );
    // A host token reports only for its host.
    assert_eq!(report(&s, &db, "web1", partial), StatusCode::FORBIDDEN);
    let good = serde_json::json!({
        "outcome": "success", "snapshot": "d1", "started": rewind::time::format_utc(now() - 7200),
        "duration_secs": 3.0, "bytes": 500, "bytes_stored": 500
    });
    assert_eq!(report(&s, &db, "db1", good), StatusCode::NO_CONTENT);

    // The API: the host's own token and admin read it.
    let h: rewind::api::HostHealth = s.client(&web).get("/v1/hosts/web1/health").unwrap();
    assert!(!h.recoverable, "{h:?}");
    assert!(h.problems[0].message.contains(skipped), "{h:?}");
    // Its last good capture is the one before the partial one.
    let age = h.last_good_age_secs.unwrap();
    assert!((30 * 3600..31 * 3600).contains(&age), "{age}");
    assert_eq!(
        get(&s, &db, "/v1/hosts/web1/health").0,
        StatusCode::FORBIDDEN
    );
    let all: Vec<rewind::api::HostHealth> = s.client(&s.admin).get("/v1/health").unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().find(|h| h.host == "db1").unwrap().recoverable);

    // status --check: CRITICAL, the host and the reason on one line.
    let monitor = monitor_token(&s);
    let (code, line) = check(&s, &monitor, &[]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with("REWIND CRITICAL - 1 of 2 hosts not recoverable: web1: last capture")
            && line.contains(skipped),
        "{line}"
    );
    let (code, line) = check(&s, &monitor, &["--host", "db1"]);
    assert_eq!(
        (code, line.starts_with("REWIND OK - 1 hosts recoverable")),
        (0, true),
        "{line}"
    );
    // An unreachable server is UNKNOWN.
    let out = Command::new(BIN)
        .args([
            "status",
            "--check",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            &monitor,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("REWIND UNKNOWN - "));

    // status shows it to people, and as JSON.
    let text = rewind_ok(&s, &s.admin, &["status"]);
    assert!(
        text.contains("web1") && text.contains("NO") && text.contains(skipped),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&rewind_ok_stdout(&s, &s.admin, &["status", "--json"])).unwrap();
    assert_eq!(json["hosts"][1]["host"], "web1");
    assert_eq!(json["hosts"][1]["recoverable"], false);
    assert!(json["requests"].as_array().unwrap().is_empty());

    // /metrics: monitor and admin tokens, not host tokens.
    assert_eq!(get(&s, &web, "/metrics").0, StatusCode::FORBIDDEN);
    assert_eq!(get(&s, "", "/metrics").0, StatusCode::UNAUTHORIZED);
    let (st, metrics) = get(&s, &monitor, "/metrics");
    assert_eq!(st, StatusCode::OK);
    for line in [
        "rewind_host_recoverable{host=\"web1\"} 0",
        "rewind_host_recoverable{host=\"db1\"} 1",
        "rewind_host_snapshots{host=\"web1\"} 2",
        "rewind_host_last_capture_result{host=\"web1\",result=\"partial\"} 1",
        "rewind_host_last_capture_duration_seconds{host=\"web1\"} 42.5",
        "rewind_recovery_requests{state=\"armed\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.contains("rewind_storage_free_bytes "));
    assert!(metrics.contains(
        "rewind_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/hosts/{host}/health\"}"
    ));
    promtool_accepts(&metrics);
    // A monitor token reads health and metrics, nothing else.
    assert_eq!(get(&s, &monitor, "/v1/tokens").0, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&s, &monitor, "/v1/hosts/web1/snapshots").0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&s, &monitor, "/v1/identify?mac=52:54:00:00:00:0a").0,
        StatusCode::FORBIDDEN
    );

    // A good capture afterwards makes it recoverable again.
    commit(&s, &web, "web1", "w3", 0);
    let ok = serde_json::json!({
        "outcome": "success", "snapshot": "w3", "started": rewind::time::format_utc(now()),
        "duration_secs": 2.0
    });
    assert_eq!(report(&s, &web, "web1", ok), StatusCode::NO_CONTENT);
    assert_eq!(check(&s, &monitor, &[]).0, 0);
}

/// stdout only.
fn rewind_ok_stdout(s: &ServerProc, token: &str, args: &[&str]) -> String {
    let out = rewind_cmd(s, token, args).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn old_captures_warn_then_are_critical() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let t = s.host_token("old");
    commit(&s, &t, "old", "o1", 30);
    let (code, line) = check(&s, &s.admin, &[]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("old: no good capture for 1d 6h (limit 1d 2h)"),
        "{line}"
    );
    let (code, line) = check(&s, &s.admin, &["--max-age", "10h", "--critical-age", "20h"]);
    assert_eq!(code, 2, "{line}");
    assert_eq!(check(&s, &s.admin, &["--max-age", "2d"]).0, 0);
    // A host token made, no capture yet: not recoverable.
    s.host_token("new");
    let (code, line) = check(&s, &s.admin, &["--host", "new"]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("new: no snapshot"), "{line}");
    // A failed capture warns (the previous one still recovers).
    let failed = serde_json::json!({
        "outcome": "failed", "started": rewind::time::format_utc(now()), "duration_secs": 1.0,
        "error": "cannot read /dev/sda: No such device"
    });
    assert_eq!(report(&s, &t, "old", failed), StatusCode::NO_CONTENT);
    let (code, line) = check(&s, &s.admin, &["--host", "old", "--max-age", "2d"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("failed: cannot read /dev/sda"), "{line}");
}

#[test]
fn a_failed_capture_is_reported_by_the_capture_command() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let t = s.host_token("lost");
    let text = rewind_fails(
        &s,
        &t,
        &["capture", "--host", "lost", "--disk", "/dev/no-such-disk"],
    );
    assert!(text.contains("no-such-disk"), "{text}");
    let h: rewind::api::HostHealth = s.client(&s.admin).get("/v1/hosts/lost/health").unwrap();
    let last = h.last_capture.expect("the failure was reported");
    assert_eq!(last.report.outcome, rewind::api::CaptureOutcome::Failed);
    assert!(
        last.report
            .error
            .as_deref()
            .unwrap()
            .contains("no-such-disk"),
        "{last:?}"
    );
}

/// As root: a real capture of a disk whose second filesystem is not
/// mounted is partial, and the server says so.
#[test]
fn a_capture_that_skips_a_filesystem_is_reported_partial() {
    if !common::root_or_skip("a_capture_that_skips_a_filesystem_is_reported_partial") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let t = s.host_token("half");
    let disk = common::LoopDisk::new(
        dir.path(),
        "half",
        64,
        "label: gpt\nsize=24MiB, type=linux\nsize=24MiB, type=linux\n",
    );
    common::sh("mkfs.ext4", &["-q", &disk.part(1)]);
    common::sh("mkfs.ext4", &["-q", &disk.part(2)]);
    let point = dir.path().join("mnt");
    std::fs::create_dir_all(&point).unwrap();
    let _mounted = common::Mounted::new(&disk.part(1), &point, &[]);
    std::fs::write(point.join("a.txt"), b"hello").unwrap();
    let text = rewind_ok(&s, &t, &["capture", "--host", "half", "--disk", &disk.dev]);
    let h: rewind::api::HostHealth = s.client(&t).get("/v1/hosts/half/health").unwrap();
    assert!(!h.recoverable, "{h:?}\n{text}");
    let last = h.last_capture.unwrap();
    assert_eq!(last.report.outcome, rewind::api::CaptureOutcome::Partial);
    let p2 = disk.part(2);
    assert!(
        h.problems
            .iter()
            .any(|p| p.message.contains(&p2) && p.message.contains("not mounted")),
        "{:?}",
        h.problems
    );
    assert!(last.report.bytes >= 5 && last.report.duration_secs > 0.0);
    let (code, line) = check(&s, &t, &["--host", "half"]);
    assert_eq!(code, 2, "{line}");
}

#[test]
fn verification_finds_a_flipped_byte_and_marks_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = ServerProc::start_with(&data, "127.0.0.1:0", false, None, &["--verify-every", "2s"]);
    let t = s.host_token("rot");
    let (pack, bytes, index) = server_util::a_pack();
    let h = http_client();
    for (name, body) in [
        (format!("packs/{}/{pack}.pack", &pack[..2]), bytes),
        (format!("index/{pack}.idx"), index),
    ] {
        let resp = h
            .put(format!("{}/v1/hosts/rot/files/{name}", s.url))
            .bearer_auth(&t)
            .body(body)
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{name}: {}", resp.status());
    }
    commit(&s, &t, "rot", "r1", 1);
    // On demand: clean.
    let out = rewind_ok(&s, &s.admin, &["verify", "--host", "rot"]);
    assert!(
        out.contains("rot: 1 packs, 1 chunks, 1 snapshots verified, 0 damaged"),
        "{out}"
    );

    // Flip a byte of the stored pack (inside its one chunk).
    let path = data.join(format!("hosts/rot/packs/{}/{pack}.pack", &pack[..2]));
    let mut stored = std::fs::read(&path).unwrap();
    stored[10] ^= 0x01;
    std::fs::write(&path, &stored).unwrap();

    // The schedule finds it within seconds: the host is marked, the pack named.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let health = loop {
        let h: rewind::api::HostHealth = s.client(&s.admin).get("/v1/hosts/rot/health").unwrap();
        if !h.recoverable || std::time::Instant::now() > deadline {
            break h;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(!health.recoverable, "{health:?}");
    assert!(
        health
            .problems
            .iter()
            .any(|p| p.message.contains(&format!("{pack}.pack"))),
        "{:?}",
        health.problems
    );
    let (code, line) = check(&s, &s.admin, &["--host", "rot"]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains(&pack), "{line}");
    // On demand, the command fails and names the pack.
    let out = rewind_fails(&s, &s.admin, &["verify", "--host", "rot"]);
    assert!(out.contains(&format!("{pack}.pack")), "{out}");
    let json: Vec<rewind::api::VerifyResult> = serde_json::from_str(
        &String::from_utf8(
            rewind_cmd(&s, &s.admin, &["verify", "--json"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap(),
    )
    .unwrap();
    assert!(!json[0].damage.is_empty());
    let (_, metrics) = get(&s, &s.admin, "/metrics");
    assert!(
        metrics.contains("rewind_host_recoverable{host=\"rot\"} 0"),
        "{metrics}"
    );
    promtool_accepts(&metrics);
}

#[test]
fn the_audit_log_records_each_action_and_cannot_be_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = ServerProc::start(&data, false);
    let admin_id = &s.admin[4..20];
    let web = s.host_token("web1");
    commit(&s, &web, "web1", "s1", 2);
    let boot = rewind_ok(&s, &s.admin, &["token", "create", "--boot"]);
    let boot_id = boot
        .lines()
        .find_map(|l| l.strip_prefix("rewind: token "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    rewind_ok(&s, &s.admin, &["token", "revoke", &boot_id]);
    rewind_ok(&s, &s.admin, &["request", "web1"]);
    rewind_ok(&s, &s.admin, &["request", "web1", "--cancel"]);
    let armed = rewind_ok(&s, &s.admin, &["request", "web1"]);
    let recovery = armed
        .lines()
        .find_map(|l| l.split("request only): ").nth(1))
        .unwrap()
        .trim()
        .to_string();
    // The image claims the request for its machine, then reports with the
    // claim's token.
    let recovery = s
        .client(&recovery)
        .claim(&rewind::api::ClaimRequest {
            request: None,
            host: None,
            machine: server_util::example_machine("52:54:00:00:00:0a"),
        })
        .unwrap()
        .token;
    s.client(&recovery)
        .report_result(true, rewind::stage::Stage::Finish, "recovered")
        .unwrap();
    rewind_ok(
        &s,
        &s.admin,
        &["forget", "--keep-last", "1", "--host", "web1"],
    );
    rewind_ok(&s, &s.admin, &["prune", "--grace", "0s"]);
    rewind_ok(&s, &s.admin, &["verify"]);

    let events: Vec<rewind::api::AuditEvent> = s.client(&s.admin).get("/v1/audit").unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "token_created",
            "token_created",
            "token_revoked",
            "request_armed",
            "request_cancelled",
            "request_armed",
            "request_claimed",
            "request_finished",
            "forget",
            "prune",
            "verify"
        ],
        "{events:#?}"
    );
    assert_eq!(events[0].actor, format!("token {admin_id}"));
    assert_eq!(events[1].target, boot_id);
    assert_eq!(events[2].target, boot_id);
    let recovery_id = &recovery[4..20];
    assert_eq!(events[7].actor, format!("token {recovery_id}"));
    assert!(events[7].detail.contains("succeeded"), "{:?}", events[7]);

    // `rewind token list --json` parses.
    let tokens: Vec<rewind::api::TokenInfo> = serde_json::from_str(&rewind_ok_stdout(
        &s,
        &s.admin,
        &["token", "list", "--json"],
    ))
    .unwrap();
    assert!(tokens.iter().any(|t| t.scope
        == rewind::api::Scope::Host {
            host: "web1".into()
        }));
    assert!(!tokens.iter().any(|t| t.id == boot_id), "revoked");

    // `rewind audit` shows it; its --json is the same list.
    let text = rewind_ok(&s, &s.admin, &["audit"]);
    assert!(text.contains("request_finished"), "{text}");
    let json: Vec<rewind::api::AuditEvent> =
        serde_json::from_str(&rewind_ok_stdout(&s, &s.admin, &["audit", "--json"])).unwrap();
    assert_eq!(json, events);

    // Nothing rewrites it through the API.
    let log = data.join("audit/audit.jsonl");
    let before = std::fs::read(&log).unwrap();
    let h = http_client();
    let url = |p: &str| format!("{}{p}", s.url);
    for (method, path) in [
        (reqwest::Method::PUT, "/v1/audit"),
        (reqwest::Method::POST, "/v1/audit"),
        (reqwest::Method::DELETE, "/v1/audit"),
        (
            reqwest::Method::PUT,
            "/v1/hosts/web1/files/../../audit/audit.jsonl",
        ),
        (
            reqwest::Method::PUT,
            "/v1/hosts/web1/files/..%2F..%2Faudit%2Faudit.jsonl",
        ),
        (
            reqwest::Method::DELETE,
            "/v1/hosts/web1/files/..%2F..%2Faudit%2Faudit.jsonl",
        ),
        (reqwest::Method::PUT, "/v1/hosts/..%2Faudit/files/config"),
        (reqwest::Method::PUT, "/v1/hosts/audit/files/config"),
    ] {
        let resp = h
            .request(method.clone(), url(path))
            .bearer_auth(&s.admin)
            .body("{}")
            .send()
            .unwrap();
        assert!(
            !resp.status().is_success() || path == "/v1/hosts/audit/files/config",
            "{method} {path}: {}",
            resp.status()
        );
    }
    // Host "audit" is a repository of its own, beside the log.
    let after = std::fs::read(&log).unwrap();
    assert_eq!(after, before, "the audit log changed");
    // Only admin reads it.
    assert_eq!(get(&s, &web, "/v1/audit").0, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&s, &monitor_token(&s), "/v1/audit").0,
        StatusCode::FORBIDDEN
    );
}
