//! Who may start a recovery, on which machine, once (issue 15, points 1
//! and 3), against a real `rewind serve` on 127.0.0.1: each test performs
//! the attack or the failure and shows it refused, with the running
//! recovery undisturbed and nothing committed lost.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod server_util;

use reqwest::StatusCode;
use rewind::api::{ApiError, ClaimRequest, MachineIdentity};
use rewind::client::api_error;
use server_util::*;

const MAC_A: &str = "52:54:00:00:00:0a";
const MAC_X: &str = "52:54:00:00:00:99";
const UUID_X: &str = "11111111-2222-3333-4444-555555555555";

fn printed_token(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split("request only): ").nth(1))
        .expect("no recovery token printed")
        .trim()
        .to_string()
}

fn boot_token(s: &ServerProc) -> String {
    rewind_ok(s, &s.admin, &["token", "create", "--boot"])
        .lines()
        .find(|l| l.starts_with("rwd_"))
        .unwrap()
        .to_string()
}

fn script(s: &ServerProc, boot: &str, mac: &str) -> String {
    http_client()
        .get(format!("{}/boot/ipxe?mac={mac}&token={boot}", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

fn claim_with(
    s: &ServerProc,
    token: &str,
    host: Option<&str>,
    machine: MachineIdentity,
) -> anyhow::Result<rewind::api::Claimed> {
    let mut c = s.client(token);
    c.retry_for = std::time::Duration::from_secs(2);
    c.claim(&ClaimRequest {
        request: None,
        host: host.map(str::to_string),
        machine,
    })
}

fn status_of(e: &anyhow::Error) -> Option<u16> {
    api_error(e).map(ApiError::status)
}

fn an_intruder() -> MachineIdentity {
    let dmi = rewind::manifest::Dmi {
        system_uuid: Some(UUID_X.into()),
        ..Default::default()
    };
    MachineIdentity::new(Some(&dmi), &[MAC_X.to_string()])
}

fn last_request(s: &ServerProc) -> serde_json::Value {
    let list = s
        .client(&s.admin)
        .get_json("/v1/requests?host=web1")
        .unwrap();
    list.as_array().unwrap().last().cloned().unwrap()
}

/// The attack of issue 15 point 1: anyone with the boot token and the
/// victim's MAC used to mint a recovery token from the boot script, which
/// revoked the running recovery's token (its restore died with 401). Now
/// a script mints nothing, the request is claimed once by the machine it
/// allows, another machine's claim is refused (409, reported in the
/// request and the audit log), and the running recovery goes on.
#[test]
fn a_running_recovery_cannot_be_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let web = s.host_token("web1");
    let (st, text) = put_snapshot(&s, &web, "web1", "s1", "2026-11-24T06:00:00Z", MAC_A);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let boot = boot_token(&s);
    let armed = rewind_ok(&s, &s.admin, &["request", "web1"]);
    assert!(
        armed.contains("only this machine may claim it: uuid=4c4c4544"),
        "{armed}"
    );
    let printed = printed_token(&armed);

    // The victim claims with the printed token and its identity.
    let victim = example_machine(MAC_A);
    let claimed = claim_with(&s, &printed, None, victim.clone()).unwrap();
    let rc = s.client(&claimed.token);
    assert_eq!(claimed.lease_secs, 15 * 60);
    rc.report_progress(rewind::stage::Stage::Restore, 1 << 20, 8 << 20, "/")
        .unwrap();

    // The attacker asks for the boot script with the victim's MAC: it
    // carries the boot token only, and serving it changes nothing.
    let sc = script(&s, &boot, MAC_A);
    assert!(sc.contains("rewind.host=web1"), "{sc}");
    assert!(sc.contains(&format!("rewind.token={boot} ")), "{sc}");
    // No recovery token reaches a kernel command line: neither the
    // printed one nor the claim's (docs/security.md, "Tokens in logs").
    assert_eq!(sc.matches("rewind.token=").count(), 1, "{sc}");
    assert!(
        !sc.contains(&printed) && !sc.contains(&claimed.token),
        "a recovery token in the boot script: {sc}"
    );
    assert!(rc.my_request().is_ok(), "the running token still works");

    // The attacker claims: with the boot token, with the printed token;
    // with its own identity, with the victim's MAC and no DMI: all 409.
    let copied_mac = MachineIdentity::new(None, &[MAC_A.to_string()]);
    for (token, machine) in [
        (&boot, an_intruder()),
        (&printed, an_intruder()),
        (&boot, copied_mac.clone()),
        (&printed, copied_mac),
    ] {
        let e = claim_with(&s, token, Some("web1"), machine)
            .map(|c| c.token)
            .expect_err("a second machine's claim was granted");
        assert_eq!(status_of(&e), Some(409), "{e:#}");
        assert!(
            format!("{e:#}").contains("claimed by another machine"),
            "{e:#}"
        );
    }
    // The recovery goes on, undisturbed: reads, reports.
    let (id, _) = rc.manifest_at("web1", "latest").unwrap();
    assert_eq!(id, "s1");
    rc.report_progress(rewind::stage::Stage::Restore, 4 << 20, 8 << 20, "/")
        .unwrap();
    // The refusals are reported: on the request, in status, in the audit log.
    let req = last_request(&s);
    assert_eq!(req["state"], "running");
    assert_eq!(req["refused_claims"].as_array().unwrap().len(), 4, "{req}");
    let status = rewind_ok(&s, &s.admin, &["status"]);
    assert!(status.contains("REFUSED claim"), "{status}");
    let audit = rewind_ok(&s, &s.admin, &["audit", "--json"]);
    assert_eq!(audit.matches("claim_refused").count(), 4, "{audit}");

    // The victim reboots and claims again: the claim is renewed (same
    // request, still running), the previous token ends.
    let again = claim_with(&s, &boot, Some("web1"), victim.clone()).unwrap();
    assert_eq!(again.request.claim.as_ref().unwrap().claims, 2);
    assert_eq!(again.request.state, rewind::api::RequestState::Running);
    let e = rc.my_request().unwrap_err();
    assert_eq!(status_of(&e), Some(401), "{e:#}");
    let rc = s.client(&again.token);
    rc.report_result(true, rewind::stage::Stage::Finish, "recovered")
        .unwrap();

    // Succeeded: never another recovery from this request.
    let e = claim_with(&s, &printed, None, victim.clone()).unwrap_err();
    assert_eq!(status_of(&e), Some(401), "{e:#}");
    let e = claim_with(&s, &boot, Some("web1"), victim).unwrap_err();
    assert_eq!(status_of(&e), Some(404), "no live request: {e:#}");
    let req = last_request(&s);
    assert_eq!(req["state"], "succeeded");
    let e = s
        .client(&boot)
        .claim(&ClaimRequest {
            request: Some(req["id"].as_str().unwrap().to_string()),
            host: None,
            machine: example_machine(MAC_A),
        })
        .unwrap_err();
    assert!(format!("{e:#}").contains("already succeeded"), "{e:#}");
    assert!(script(&s, &boot, MAC_A).ends_with("exit\n"));
    // Nothing committed was touched.
    assert_eq!(s.committed("web1"), ["s1.xml"]);
}

/// The request's own (printed) token reads the request and claims; it
/// reads no data, reports nothing. A claim's token reads only the
/// request's snapshot, and never writes.
#[test]
fn the_printed_token_only_claims_and_a_claim_reads_its_snapshot_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let web = s.host_token("web1");
    for (id, t) in [
        ("s1", "2026-11-24T06:00:00Z"),
        ("s2", "2026-11-25T06:00:00Z"),
    ] {
        let (st, text) = put_snapshot(&s, &web, "web1", id, t, MAC_A);
        assert_eq!(st, StatusCode::CREATED, "{text}");
    }
    let printed = printed_token(&rewind_ok(
        &s,
        &s.admin,
        &["request", "web1", "--at", "2026-11-24T12:00:00Z"],
    ));
    let pc = s.client(&printed);
    assert_eq!(pc.my_request().unwrap().snapshot, "s1");
    let e = pc.manifest_at("web1", "latest").unwrap_err();
    assert_eq!(status_of(&e), Some(403), "{e:#}");
    let e = pc
        .report_progress(rewind::stage::Stage::Fetch, 0, 0, "")
        .unwrap_err();
    assert_eq!(status_of(&e), Some(403), "{e:#}");
    let claim_token = claim_with(&s, &printed, None, example_machine(MAC_A))
        .unwrap()
        .token;
    let rc = s.client(&claim_token);
    // Whatever it asks for, the claim gets its request's snapshot.
    assert_eq!(rc.manifest_at("web1", "latest").unwrap().0, "s1");
    let (st, _) = put_snapshot(
        &s,
        &claim_token,
        "web1",
        "s9",
        "2026-11-26T06:00:00Z",
        MAC_A,
    );
    assert_eq!(st, StatusCode::FORBIDDEN);
}

/// The claim's token reads its request's snapshot file, and no other,
/// through the repository's file routes too (the manifest route was
/// limited already): the other snapshot's XML is refused, the listings
/// show its own snapshot only, and its snapshot still restores.
#[test]
fn a_claim_reads_no_other_snapshot_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let web = s.host_token("web1");
    for (id, t) in [
        ("s1", "2026-11-24T06:00:00Z"),
        ("s2", "2026-11-25T06:00:00Z"),
    ] {
        let (st, text) = put_snapshot(&s, &web, "web1", id, t, MAC_A);
        assert_eq!(st, StatusCode::CREATED, "{text}");
    }
    let printed = printed_token(&rewind_ok(
        &s,
        &s.admin,
        &["request", "web1", "--at", "2026-11-24T12:00:00Z"],
    ));
    let claim_token = claim_with(&s, &printed, None, example_machine(MAC_A))
        .unwrap()
        .token;
    let get = |path: &str| {
        let resp = http_client()
            .get(format!("{}/v1/hosts/web1/{path}", s.url))
            .bearer_auth(&claim_token)
            .send()
            .unwrap();
        (resp.status(), resp.text().unwrap())
    };
    // The attack: read the newer snapshot's manifest as a file.
    let (st, text) = get("files/snapshots/s2.xml");
    assert_eq!(st, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("its request's snapshot (s1) only"), "{text}");
    let (st, text) = get("files/snapshots/s1.xml");
    assert_eq!(st, StatusCode::OK, "{text}");
    assert!(text.contains("id=\"s1\""), "{text}");
    // Listings name its own snapshot only.
    let (st, text) = get("files?prefix=snapshots/");
    assert_eq!(st, StatusCode::OK, "{text}");
    let names: Vec<String> = serde_json::from_str(&text).unwrap();
    assert_eq!(names, ["snapshots/s1.xml"], "{text}");
    let (st, text) = get("snapshots");
    assert_eq!(st, StatusCode::OK, "{text}");
    assert!(
        text.contains("\"s1\"") && !text.contains("\"s2\""),
        "{text}"
    );
    // The host's own token still reads both.
    let resp = http_client()
        .get(format!("{}/v1/hosts/web1/files/snapshots/s2.xml", s.url))
        .bearer_auth(&web)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Replacement hardware: the captured machine's identity does not match,
/// so the claim is refused and says how to name the new machine; a
/// request naming it (`--machine`), or allowing any (`--any-machine`),
/// is claimed.
#[test]
fn a_new_machine_must_be_named_or_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let web = s.host_token("web1");
    let (st, text) = put_snapshot(&s, &web, "web1", "s1", "2026-11-24T06:00:00Z", MAC_A);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let boot = boot_token(&s);
    let printed = printed_token(&rewind_ok(&s, &s.admin, &["request", "web1"]));
    let e = claim_with(&s, &printed, None, an_intruder()).unwrap_err();
    assert_eq!(status_of(&e), Some(409), "{e:#}");
    assert!(format!("{e:#}").contains("--machine"), "{e:#}");
    // The new machine named by its UUID: it is identified by the boot
    // token (iPXE's ${uuid}) and claims; the old machine is not identified.
    rewind_ok(
        &s,
        &s.admin,
        &[
            "request",
            "web1",
            "--machine",
            &format!("uuid={}", UUID_X.to_uppercase()),
        ],
    );
    let found = s.client(&boot).identify_machine(&an_intruder()).unwrap();
    assert_eq!(found.host, "web1");
    assert!(found.request.is_some());
    let old = s
        .client(&boot)
        .identify_machine(&example_machine(MAC_A))
        .unwrap();
    assert!(
        old.request.is_none(),
        "the old machine is not the one named"
    );
    claim_with(&s, &boot, Some("web1"), an_intruder()).unwrap();
    rewind_ok(&s, &s.admin, &["request", "web1", "--cancel"]);
    // Any machine, explicitly.
    let printed = printed_token(&rewind_ok(
        &s,
        &s.admin,
        &["request", "web1", "--any-machine"],
    ));
    let nobody = MachineIdentity::new(None, &["52:54:00:00:00:77".to_string()]);
    claim_with(&s, &printed, None, nobody.clone()).unwrap();
    // ... but once claimed, only by that machine.
    let e = claim_with(&s, &printed, None, an_intruder()).unwrap_err();
    assert_eq!(status_of(&e), Some(409), "{e:#}");
    let bad = rewind_fails(&s, &s.admin, &["request", "web1", "--machine", "uuid=nope"]);
    assert!(bad.contains("uuid=nope"), "{bad}");
}

/// Issue 15 point 3: an armed request forgotten for months used to wipe
/// the machine at its next network boot. A request expires: past it, its
/// boot script exits, its token and claims are refused, and it shows as
/// cancelled ("expired").
#[test]
fn an_expired_request_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let web = s.host_token("web1");
    let (st, text) = put_snapshot(&s, &web, "web1", "s1", "2026-11-24T06:00:00Z", MAC_A);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let boot = boot_token(&s);
    let out = rewind_ok(&s, &s.admin, &["request", "web1", "--expires", "2s"]);
    assert!(out.contains("startable until"), "{out}");
    let printed = printed_token(&out);
    assert!(script(&s, &boot, MAC_A).contains("rewind.host=web1"));
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let sc = script(&s, &boot, MAC_A);
    assert!(
        sc.contains("no recovery is armed for web1") && sc.ends_with("exit\n"),
        "{sc}"
    );
    let e = claim_with(&s, &printed, None, example_machine(MAC_A)).unwrap_err();
    assert_eq!(status_of(&e), Some(401), "{e:#}");
    assert!(format!("{e:#}").contains("expired"), "{e:#}");
    let id = last_request(&s)["id"].as_str().unwrap().to_string();
    let e = s
        .client(&boot)
        .claim(&ClaimRequest {
            request: Some(id),
            host: None,
            machine: example_machine(MAC_A),
        })
        .unwrap_err();
    assert_eq!(status_of(&e), Some(409), "{e:#}");
    let req = last_request(&s);
    assert_eq!(req["state"], "cancelled", "{req}");
    assert!(
        req["result"].as_str().unwrap().starts_with("expired at"),
        "{req}"
    );
    // A new request can be armed (and is startable again).
    rewind_ok(&s, &s.admin, &["request", "web1"]);
    assert!(script(&s, &boot, MAC_A).contains("rewind.host=web1"));
}

/// Issue 15 point 2, the boot side: a host whose manifest lists another
/// machine's MAC used to capture its network-boot recovery (the first
/// host by name won). A boot now identifies only among live requests,
/// and refuses when more than one names the machine.
#[test]
fn a_boot_identifies_only_among_live_requests() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let web = s.host_token("web1");
    let (st, text) = put_snapshot(&s, &web, "web1", "s1", "2026-11-24T06:00:00Z", MAC_A);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    // "aaa" sorts first and lists web1's MAC: its commit is refused
    // (one_machine_is_one_host_at_commit), so it is forged in its
    // directory, as a repository from before that check may hold it.
    let evil = s.host_token("aaa");
    let (st, text) = put_snapshot(&s, &evil, "aaa", "e1", "2026-11-24T07:00:00Z", MAC_A);
    assert_eq!(st, StatusCode::CONFLICT, "{text}");
    let aaa = s.data.join("hosts/aaa");
    std::fs::create_dir_all(aaa.join("snapshots")).unwrap();
    std::fs::write(aaa.join("config"), rewind::repo::CONFIG_TEXT).unwrap();
    std::fs::write(
        aaa.join("snapshots/e1.xml"),
        example_manifest("aaa", "e1", "2026-11-24T07:00:00Z", MAC_A),
    )
    .unwrap();
    let mut s = s;
    s.restart();
    let boot = boot_token(&s);
    rewind_ok(&s, &s.admin, &["request", "web1"]);
    let sc = script(&s, &boot, MAC_A);
    assert!(sc.contains("rewind.host=web1"), "{sc}");
    let found = s.client(&boot).identify(&[MAC_A.to_string()]).unwrap();
    assert_eq!(found.host, "web1");
    // Two live requests name the machine: refused, the script exits.
    let both = rewind::client::Client::new(&s.url, &s.admin, &s.trust()).unwrap();
    if both
        .create_request("aaa", &rewind::api::NewRequest::default())
        .is_ok()
    {
        let sc = script(&s, &boot, MAC_A);
        assert!(
            sc.contains("more than one armed recovery") && sc.ends_with("exit\n"),
            "{sc}"
        );
        let e = s.client(&boot).identify(&[MAC_A.to_string()]).unwrap_err();
        assert_eq!(status_of(&e), Some(409), "{e:#}");
    } else {
        panic!("the forged host's request could not be armed: the ambiguity went untested");
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Back-date a snapshot's commit on the server (its commit record and its
/// file's mtime), as if it had been committed `days` ago.
fn commit_days_ago(s: &ServerProc, id: &str, days: i64) {
    let file = s.data.join(format!("hosts/web1/snapshots/{id}.xml"));
    let when = format!("@{}", now() - days * 86_400);
    let st = std::process::Command::new("touch")
        .args(["-m", "-d", &when])
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    let record = s.data.join(format!("hosts/web1/commits/{id}"));
    assert!(record.exists(), "the server records each commit");
    std::fs::write(
        &record,
        format!("{}\n", rewind::time::format_utc(now() - days * 86_400)),
    )
    .unwrap();
}

/// Three snapshots of web1, taken and committed 30, 20 and 10 days ago.
fn three_old_snapshots(s: &ServerProc) {
    let web = s.host_token("web1");
    for (id, days) in [("s1", 30), ("s2", 20), ("s3", 10)] {
        let t = rewind::time::format_utc(now() - days * 86_400);
        let (st, text) = put_snapshot(s, &web, "web1", id, &t, MAC_A);
        assert_eq!(st, StatusCode::CREATED, "{text}");
        commit_days_ago(s, id, days);
    }
}

fn delete(s: &ServerProc, name: &str) -> StatusCode {
    http_client()
        .delete(format!("{}/v1/hosts/web1/files/{name}", s.url))
        .bearer_auth(&s.admin)
        .send()
        .unwrap()
        .status()
}

/// Issue 15 point 7: the snapshot being recovered used to be forgettable
/// (and its packs prunable) mid-restore. A snapshot an active request
/// restores is kept by forget and by a hand removal; prune's grace covers
/// the running restore, so a pack retired meanwhile stays served.
#[test]
fn forget_and_prune_spare_a_running_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    three_old_snapshots(&s);
    // An unreferenced pack, retired by a prune before the recovery starts.
    let web = s.host_token("web1");
    let (pack, bytes, _) = a_pack();
    let name = format!("packs/{}/{pack}.pack", &pack[..2]);
    let st = http_client()
        .put(format!("{}/v1/hosts/web1/files/{name}", s.url))
        .bearer_auth(&web)
        .body(bytes)
        .send()
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::CREATED);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = rewind_ok(&s, &s.admin, &["prune", "--grace", "1s", "--host", "web1"]);
    assert!(
        out.contains("retired 1 unused") && out.contains("0 retired packs deleted"),
        "{out}"
    );

    // Recover to the oldest snapshot; the restore is running.
    let at = rewind::time::format_utc(now() - 25 * 86_400);
    let printed = printed_token(&rewind_ok(&s, &s.admin, &["request", "web1", "--at", &at]));
    let claim = claim_with(&s, &printed, None, example_machine(MAC_A)).unwrap();
    let rc = s.client(&claim.token);
    rc.report_progress(rewind::stage::Stage::Restore, 1, 2, "/")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // forget --keep-last 1 would drop s1 and s2: s1 is pinned.
    let out = rewind_ok(
        &s,
        &s.admin,
        &["forget", "--keep-last", "1", "--host", "web1"],
    );
    assert!(out.contains("keeping 2 of 3"), "{out}");
    assert_eq!(s.committed("web1"), ["s1.xml", "s3.xml"]);
    let decided = s
        .client(&s.admin)
        .forget(&rewind::api::ForgetRequest {
            policy: rewind::repo::forget::Policy {
                last: 1,
                ..Default::default()
            },
            host: Some("web1".into()),
            dry_run: true,
            min_age_days: None,
        })
        .unwrap();
    let s1 = decided.hosts["web1"].iter().find(|d| d.id == "s1").unwrap();
    assert!(s1.keep && s1.reasons == ["recovery"], "{s1:?}");
    // Nor may an admin delete it by hand.
    assert_eq!(delete(&s, "snapshots/s1.xml"), StatusCode::CONFLICT);
    // Prune --grace 0s keeps the retired pack while the restore runs.
    let out = rewind_ok(&s, &s.admin, &["prune", "--grace", "0s", "--host", "web1"]);
    assert!(out.contains("0 retired packs deleted"), "{out}");
    assert_eq!(rc.manifest_at("web1", "latest").unwrap().0, "s1");
    let got = http_client()
        .get(format!("{}/v1/hosts/web1/files/{name}", s.url))
        .bearer_auth(&claim.token)
        .send()
        .unwrap()
        .status();
    assert_eq!(got, StatusCode::OK, "the retired pack is still served");
    // Over: the next prune deletes it, and s1 may go.
    rc.report_result(true, rewind::stage::Stage::Finish, "recovered")
        .unwrap();
    let out = rewind_ok(&s, &s.admin, &["prune", "--grace", "0s", "--host", "web1"]);
    assert!(out.contains("1 retired packs deleted"), "{out}");
    rewind_ok(
        &s,
        &s.admin,
        &["forget", "--keep-last", "1", "--host", "web1"],
    );
    assert_eq!(s.committed("web1"), ["s3.xml"]);
}

/// Issue 15 point 8: a stolen admin token could erase recent history at
/// once. `forget --min-age` keeps what is younger; `serve --retention-lock
/// DAYS` keeps it whatever the admin asks (forget, or a hand removal of a
/// snapshot or a pack); a host cannot date snapshots around it.
#[test]
fn a_retention_lock_holds_against_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    three_old_snapshots(&s);
    let out = rewind_ok(
        &s,
        &s.admin,
        &[
            "forget",
            "--keep-last",
            "1",
            "--min-age",
            "25",
            "--host",
            "web1",
        ],
    );
    assert!(out.contains("keeping 2 of 3"), "{out}");
    assert_eq!(s.committed("web1"), ["s2.xml", "s3.xml"]);
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        false,
        None,
        &["--retention-lock", "15"],
    );
    three_old_snapshots(&s);
    // A host back-dates a snapshot (to push real ones out of keep-N, or
    // to make it forgettable at once): refused at commit.
    let web = s.host_token("web1");
    let old = rewind::time::format_utc(now() - 400 * 86_400);
    let (st, text) = put_snapshot(&s, &web, "web1", "s0", &old, MAC_A);
    assert_eq!(st, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("before web1's newest"), "{text}");
    let future = rewind::time::format_utc(now() + 3600);
    let (st, text) = put_snapshot(&s, &web, "web1", "s9", &future, MAC_A);
    assert_eq!(st, StatusCode::BAD_REQUEST, "{text}");
    let (st, text) = put_snapshot(
        &s,
        &web,
        "web1",
        "s4",
        &rewind::time::format_utc(now()),
        MAC_A,
    );
    assert_eq!(st, StatusCode::CREATED, "{text}");
    // Older than the lock: an admin may still remove it by hand.
    assert_eq!(delete(&s, "snapshots/s1.xml"), StatusCode::NO_CONTENT);
    // s4 is the last; s3 is younger than the lock; s2 older.
    let out = rewind_ok(
        &s,
        &s.admin,
        &["forget", "--keep-last", "1", "--host", "web1"],
    );
    assert!(out.contains("keeping 2 of 3"), "{out}");
    assert!(out.contains("s3  (retention-lock)"), "{out}");
    assert_eq!(s.committed("web1"), ["s3.xml", "s4.xml"]);
    assert_eq!(delete(&s, "snapshots/s3.xml"), StatusCode::CONFLICT);
    assert_eq!(delete(&s, "config"), StatusCode::CONFLICT);
    // Its own time is young too: an old commit time alone does not free it.
    commit_days_ago(&s, "s3", 400);
    assert_eq!(delete(&s, "snapshots/s3.xml"), StatusCode::CONFLICT);
    assert_eq!(s.committed("web1"), ["s3.xml", "s4.xml"]);
}

/// A manifest of `host` as the example machine with `mac`, whose DMI is
/// replaced: `uuid`/`serial` given, or the machine's own.
fn manifest_with(host: &str, id: &str, time: &str, mac: &str, dmi: (&str, &str)) -> String {
    let (uuid, serial) = example_dmi(mac);
    example_manifest(host, id, time, mac)
        .replace(&uuid, dmi.0)
        .replace(&serial, dmi.1)
}

/// Issue 15 point 2, the commit side: a host whose manifest lists another
/// machine's MAC, DMI UUID or serial would be recognised as that machine
/// when it boots for a recovery (and, with a request armed for the
/// intruder, claim it and be overwritten). Such a commit is refused,
/// naming the host that holds the id and what the operator does, and
/// nothing of either host changes; an id the operator declares shared
/// passes, and an id the other host no longer lists is free.
#[test]
fn one_machine_is_one_host_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = ServerProc::start(&data, false);
    let web = s.host_token("web1");
    let (st, text) = put_snapshot(&s, &web, "web1", "s1", "2026-11-24T06:00:00Z", MAC_A);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let (web_uuid, web_serial) = example_dmi(MAC_A);
    let evil = s.host_token("evil");
    let own_mac = host_mac("evil");
    let (own_uuid, own_serial) = example_dmi(&own_mac);
    let t = "2026-11-24T07:00:00Z";
    for (xml, kind, value) in [
        // web1's MAC, its own DMI.
        (
            manifest_with("evil", "e1", t, MAC_A, (&own_uuid, &own_serial)),
            "MAC address",
            MAC_A.to_string(),
        ),
        // Its own MAC, web1's UUID (in capitals: ids are compared
        // normalized), its own serial.
        (
            manifest_with(
                "evil",
                "e1",
                t,
                &own_mac,
                (&web_uuid.to_uppercase(), &own_serial),
            ),
            "DMI system UUID",
            web_uuid.clone(),
        ),
        // Its own MAC and UUID, web1's serial.
        (
            manifest_with("evil", "e1", t, &own_mac, (&own_uuid, &web_serial)),
            "DMI serial number",
            web_serial.clone(),
        ),
    ] {
        let (st, text) = put_snapshot_xml(&s, &evil, "evil", "e1", xml);
        assert_eq!(st, StatusCode::CONFLICT, "{kind}: {text}");
        for want in [
            kind,
            value.as_str(),
            "host web1's latest snapshot (s1)",
            "DELETE /v1/hosts/web1/files/snapshots/s1.xml",
            "rewind serve --shared-identity",
        ] {
            assert!(text.contains(want), "{want:?} missing: {text}");
        }
    }
    // Nothing committed for the intruder, nothing changed for web1.
    assert!(s.committed("evil").is_empty());
    assert!(!data.join("hosts/evil/commits/e1").exists());
    assert_eq!(s.committed("web1"), ["s1.xml"]);
    let boot = boot_token(&s);
    rewind_ok(&s, &s.admin, &["request", "web1"]);
    let found = s.client(&boot).identify(&[MAC_A.to_string()]).unwrap();
    assert_eq!(found.host, "web1");
    claim_with(&s, &boot, Some("web1"), example_machine(MAC_A)).unwrap();
    // Its own machine: committed.
    let (st, text) = put_snapshot(&s, &evil, "evil", "e1", t, &own_mac);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    // A retry of the same bytes is still accepted (not a second claim).
    let (st, text) = put_snapshot(&s, &evil, "evil", "e1", t, &own_mac);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    // The machine renamed: "web2" is web1's old hardware. Refused while
    // web1's latest lists it; once web1 captured its new hardware, free.
    let web2 = s.host_token("web2");
    let (st, text) = put_snapshot(&s, &web2, "web2", "n1", t, MAC_A);
    assert_eq!(st, StatusCode::CONFLICT, "{text}");
    rewind_ok(&s, &s.admin, &["request", "web1", "--cancel"]);
    let new_hw = host_mac("web1-new");
    let (st, text) = put_snapshot(&s, &web, "web1", "s2", "2026-11-25T06:00:00Z", &new_hw);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let (st, text) = put_snapshot(&s, &web2, "web2", "n1", t, MAC_A);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    // ... and web1 may not take it back.
    let (st, text) = put_snapshot(&s, &web, "web1", "s3", "2026-11-26T06:00:00Z", MAC_A);
    assert_eq!(st, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("host web2's latest snapshot (n1)"), "{text}");
    assert_eq!(s.committed("web1"), ["s1.xml", "s2.xml"]);
    drop(s);

    // An id really shared (a VRRP MAC on two routers): the operator
    // declares it, and both hosts commit.
    let dir = tempfile::tempdir().unwrap();
    let vrrp = "00:00:5e:00:01:33";
    let s = ServerProc::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        false,
        None,
        &["--shared-identity", &format!("mac={}", vrrp.to_uppercase())],
    );
    for host in ["r1", "r2"] {
        let token = s.host_token(host);
        let mac = host_mac(host);
        let xml = example_manifest(host, "x1", t, &mac).replace(
            "</interface>",
            &format!("</interface>\n    <interface name=\"vrrp.51\" mac=\"{vrrp}\" mtu=\"1500\"/>"),
        );
        assert!(xml.contains(vrrp), "{xml}");
        let (st, text) = put_snapshot_xml(&s, &token, host, "x1", xml);
        assert_eq!(st, StatusCode::CREATED, "{host}: {text}");
    }
}

/// Issue 15 point 2, time: a host's snapshot dated into the future (within
/// the 5 minutes of allowed clock skew) used to win `latest` and `--at`
/// and keep-N over later commits (which were refused meanwhile as "before
/// the newest"). The server records its own commit time: a snapshot
/// stands no later than its commit, so the later commit is accepted and
/// is the latest, `--at` and a request select it, forget keeps it and
/// forgets the future-dated one, and all of this holds after a restart
/// (the order comes from the records on disk).
#[test]
fn a_future_dated_snapshot_wins_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = ServerProc::start(&data, false);
    let web = s.host_token("web1");
    let t0 = now();
    let ahead = rewind::time::format_utc(t0 + 240);
    for (id, time) in [
        ("s1", Some(rewind::time::format_utc(t0 - 3600))),
        // The host's clock (or the host) is four minutes ahead.
        ("s-ahead", Some(ahead.clone())),
        // A later commit, dated honestly: the clock when it is sent (the
        // one before may have been committed a second after t0).
        ("s2", None),
    ] {
        let time = time.unwrap_or_else(|| rewind::time::format_utc(now()));
        let (st, text) = put_snapshot(&s, &web, "web1", id, &time, MAC_A);
        assert_eq!(st, StatusCode::CREATED, "{id}: {text}");
    }
    // The server recorded each commit, at its clock.
    let record = std::fs::read_to_string(data.join("hosts/web1/commits/s-ahead")).unwrap();
    let committed = rewind::time::parse_rfc3339(record.trim()).unwrap();
    assert!((t0 - 5..=now()).contains(&committed), "{record}");
    for round in 0..2 {
        let c = s.client(&s.admin);
        for at in ["latest", ahead.as_str()] {
            assert_eq!(c.manifest_at("web1", at).unwrap().0, "s2", "{at} ({round})");
        }
        assert_eq!(
            c.manifest_at("web1", &rewind::time::format_utc(t0 - 60))
                .unwrap()
                .0,
            "s1",
            "{round}"
        );
        // The host list's newest, and a request armed for `latest`.
        let out = rewind_ok(&s, &s.admin, &["request", "web1"]);
        assert!(out.contains("s2"), "{out}");
        rewind_ok(&s, &s.admin, &["request", "web1", "--cancel"]);
        s.restart();
    }
    // Keep-N: the later commit is kept, the future-dated one goes.
    let out = rewind_ok(
        &s,
        &s.admin,
        &["forget", "--keep-last", "1", "--host", "web1"],
    );
    assert!(out.contains("keeping 1 of 3"), "{out}");
    assert_eq!(s.committed("web1"), ["s2.xml"]);
    let mut records: Vec<String> = std::fs::read_dir(data.join("hosts/web1/commits"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    records.sort();
    assert_eq!(
        records,
        ["s2"],
        "a forgotten snapshot's record goes with it"
    );
    // Further ahead than the skew: refused, as before.
    let far = rewind::time::format_utc(now() + 3600);
    let (st, text) = put_snapshot(&s, &web, "web1", "s9", &far, MAC_A);
    assert_eq!(st, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(s.committed("web1"), ["s2.xml"]);
}

/// Commit snapshot `id` of web1 dated `time` through the client library
/// (as a capture does), its `/` holding one file, `marker`, with `content`.
fn commit_with_marker(s: &ServerProc, token: &str, id: &str, time: &str, content: &[u8]) {
    use rewind::repo::backend::Backend;
    let backend = rewind::client::HttpBackend::new(std::sync::Arc::new(s.client(token)), "web1");
    if !backend.exists("config").unwrap() {
        backend
            .put("config", rewind::repo::CONFIG_TEXT.as_bytes())
            .unwrap();
    }
    let mut repo = rewind::repo::Repo::open_backend(std::sync::Arc::new(backend)).unwrap();
    let chunk = repo
        .add_blob(rewind::repo::pack::BlobKind::Data, content)
        .unwrap();
    let chunks = vec![rewind::tree::ChunkRef {
        id: chunk,
        len: content.len() as u32,
    }];
    let tree = repo
        .add_one_file_tree(b"marker", chunks, content.len() as u64)
        .unwrap();
    repo.flush().unwrap();
    let root = r#"<mount point="/" options="rw,relatime,errors=remount-ro"/>"#;
    let xml = example_manifest("web1", id, time, MAC_A);
    assert!(xml.contains(root));
    let xml = xml.replace(
        root,
        &format!(
            "{root}\n    <data tree=\"{}\" from=\"/\" entries=\"1\" bytes=\"{}\"/>",
            tree.to_hex(),
            content.len()
        ),
    );
    let (st, text) = put_snapshot_xml(s, token, "web1", id, xml);
    assert_eq!(st, StatusCode::CREATED, "{id}: {text}");
}

/// Point 2 on the client side: `rewind snapshots`, `ls latest` and
/// `restore latest` read a server's repository file by file; they used to
/// order its snapshots by their own (host-written) times, so a snapshot
/// dated ahead won `latest` on the client while the server chose the later
/// commit. They follow the server's order now; a local repository keeps
/// ordering by the snapshots' own times.
#[test]
fn a_client_orders_a_servers_snapshots_as_the_server_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = ServerProc::start(&data, false);
    let web = s.host_token("web1");
    let t0 = now();
    commit_with_marker(
        &s,
        &web,
        "s1",
        &rewind::time::format_utc(t0 - 3600),
        b"first\n",
    );
    // The host (or its clock) four minutes ahead.
    commit_with_marker(
        &s,
        &web,
        "s-ahead",
        &rewind::time::format_utc(t0 + 240),
        b"dated ahead of its commit\n",
    );
    // A later capture, dated honestly.
    commit_with_marker(
        &s,
        &web,
        "s2",
        &rewind::time::format_utc(now()),
        b"the real latest\n",
    );
    assert_eq!(
        s.client(&s.admin).manifest_at("web1", "latest").unwrap().0,
        "s2",
        "the server's choice"
    );

    for token in [&web, &s.admin] {
        let out = rewind_ok(&s, token, &["snapshots", "--host", "web1"]);
        let ids: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with("rewind:"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(ids, ["s1", "s-ahead", "s2"], "{out}");
        let ahead = out.lines().find(|l| l.starts_with("s-ahead")).unwrap();
        assert!(
            ahead.contains("dated after its commit at"),
            "the list says why it stands there: {out}"
        );
        let json = rewind_ok(&s, token, &["snapshots", "--host", "web1", "--json"]);
        let list: Vec<rewind::api::SnapshotSummary> = serde_json::from_str(&json).unwrap();
        let ids: Vec<&str> = list.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["s1", "s-ahead", "s2"], "{json}");
        assert!(list.iter().all(|x| x.committed.is_some()), "{json}");

        let ls = rewind_ok(&s, token, &["ls", "--host", "web1", "latest", "/"]);
        assert!(
            ls.contains("marker") && ls.contains(&"the real latest\n".len().to_string()),
            "{ls}"
        );
        let target = dir.path().join(format!("restored-{}", token.len()));
        let restore_args = [
            "restore",
            "--host",
            "web1",
            "latest",
            "--fs",
            "/",
            "--target",
            target.to_str().unwrap(),
        ];
        rewind_ok(&s, token, &restore_args);
        assert_eq!(
            std::fs::read(target.join("marker")).unwrap(),
            b"the real latest\n",
            "restore latest restored s2"
        );
    }

    // The same files read as a local repository: no commit records, so
    // by the snapshots' own times, as before (the dated one is last).
    let local = data.join("hosts/web1");
    let out = rewind_cmd(&s, &web, &["snapshots", "--repo", local.to_str().unwrap()])
        .output()
        .unwrap();
    let text = output_text(&out);
    let ids: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("rewind:"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["s1", "s2", "s-ahead"], "{text}");
    assert!(!text.contains("dated after"), "{text}");
}

/// A recovery cut before its restore started (no resume journal yet) left
/// its blank target half-made; its next boot needs to know which disks it
/// chose. The claimed machine records them (`POST /v1/recovery/disks`)
/// and its next claim of the same request is answered with them; the
/// printed token cannot record, another machine never sees them, and a
/// request that is over takes no more.
#[test]
fn a_claim_remembers_the_disks_its_run_chose() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let web = s.host_token("web1");
    let (st, text) = put_snapshot(&s, &web, "web1", "s1", "2026-11-24T06:00:00Z", MAC_A);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let printed = printed_token(&rewind_ok(&s, &s.admin, &["request", "web1"]));
    let chosen = vec![
        rewind::api::DiskChoice {
            captured: "vda".into(),
            serial: Some("S3Z9NB0K123456".into()),
            wwn: None,
            size: 20 << 30,
            ..Default::default()
        },
        // A virtio disk without serial: its place and the table written.
        rewind::api::DiskChoice {
            captured: "vdb".into(),
            size: 8 << 30,
            hw_path: Some("devices/pci0000:00/0000:00:05.0/virtio2".into()),
            table_id: Some("5c1e0d6a-2b7f-4e11-9a3c-0123456789ab".into()),
            ..Default::default()
        },
    ];
    let mut pc = s.client(&printed);
    pc.retry_for = std::time::Duration::from_secs(2);
    let e = pc.record_disks(&chosen).unwrap_err();
    assert_eq!(status_of(&e), Some(403), "{e:#}");

    let victim = example_machine(MAC_A);
    let first = claim_with(&s, &printed, None, victim.clone()).unwrap();
    assert!(first.request.claim.as_ref().unwrap().disks.is_empty());
    let rc = s.client(&first.token);
    let r = rc.record_disks(&chosen).unwrap();
    assert_eq!(r.claim.unwrap().disks, chosen);
    let unknowable = rewind::api::DiskChoice {
        captured: "vdb".into(),
        size: 1,
        ..Default::default()
    };
    let placed_only = rewind::api::DiskChoice {
        hw_path: Some("devices/pci0000:00/0000:00:05.0/virtio2".into()),
        ..unknowable.clone()
    };
    for bad in [unknowable, placed_only] {
        let e = rc.record_disks(&[bad]).unwrap_err();
        assert_eq!(status_of(&e), Some(400), "{e:#}");
    }

    // Reset while formatting: the same machine boots and claims again.
    let again = claim_with(&s, &printed, None, victim.clone()).unwrap();
    assert_eq!(again.request.claim.as_ref().unwrap().claims, 2);
    assert_eq!(again.request.claim.unwrap().disks, chosen);
    // Another machine is refused and learns nothing of them.
    let e = claim_with(&s, &printed, None, an_intruder())
        .map(|c| c.token)
        .unwrap_err();
    assert_eq!(status_of(&e), Some(409), "{e:#}");
    assert!(!format!("{e:#}").contains("S3Z9NB0K123456"), "{e:#}");

    // Over: no more records.
    let rc2 = s.client(&again.token);
    rc2.report_result(false, rewind::stage::Stage::Format, "cut")
        .unwrap();
    let mut rc2 = s.client(&again.token);
    rc2.retry_for = std::time::Duration::from_secs(2);
    assert!(rc2.record_disks(&chosen).is_err());
}

/// Disk settings armed on the request (`rewind request --disk --overwrite`)
/// travel to the image over the pinned connection, where a signed image's
/// command line, which an unsigned iPXE script carries, gives none. A
/// mapping that is not `CAPTURED=PRESENT` with a /dev path is refused by
/// the command and, sent by hand, by the server.
#[test]
fn a_request_carries_its_disk_settings() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let web = s.host_token("web1");
    let (st, text) = put_snapshot(&s, &web, "web1", "s1", "2026-11-24T06:00:00Z", MAC_A);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let out = rewind_ok(
        &s,
        &s.admin,
        &[
            "request",
            "web1",
            "--disk",
            "vda=/dev/sdb",
            "--disk",
            "vdb=/dev/disk/by-id/wwn-0x5000c500a1b2c3d4",
            "--overwrite",
        ],
    );
    assert!(out.contains("  disk vda=/dev/sdb"), "{out}");
    assert!(out.contains("any disk may be overwritten"), "{out}");
    let req = last_request(&s);
    assert_eq!(
        req["disks"],
        serde_json::json!(["vda=/dev/sdb", "vdb=/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"]),
        "{req}"
    );
    assert_eq!(req["overwrite"], true, "{req}");
    // As the image gets it with the request's own token.
    let printed = printed_token(&out);
    let claimed = claim_with(&s, &printed, None, example_machine(MAC_A)).unwrap();
    assert_eq!(claimed.request.disks.len(), 2);
    assert!(claimed.request.overwrite);

    for bad in [
        "vda",
        "vda=sdb",
        "vda=/dev/sd b",
        "a/b=/dev/sdb",
        "vda=/dev/../etc/x",
    ] {
        let out = rewind_fails(&s, &s.admin, &["request", "web1", "--disk", bad]);
        assert!(out.contains("CAPTURED=PRESENT"), "{bad}: {out}");
        let r = s
            .client(&s.admin)
            .post::<_, serde_json::Value>(
                "/v1/hosts/web1/requests",
                &serde_json::json!({ "disks": [bad] }),
            )
            .unwrap_err();
        assert_eq!(status_of(&r), Some(400), "{bad}: {r:#}");
    }
}
