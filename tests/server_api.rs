//! Tier 1 (no root): the server's API through the real `rewind serve` on
//! loopback — authentication and host scoping endpoint by endpoint, bad
//! input, `at=` selection, recovery requests and their tokens, boot scripts,
//! forget — and the operator commands.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod server_util;

use reqwest::StatusCode;
use server_util::*;

const MAC_A: &str = "52:54:00:00:00:0a";
const MAC_B: &str = "52:54:00:00:00:0b";

#[test]
fn tokens_scope_every_endpoint_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let ta = s.host_token("a");
    let tb = s.host_token("b");
    let h = http_client();

    // Host b's data: three snapshots and a pack.
    for (id, time) in [
        ("b1", "2026-11-24T06:00:00Z"),
        ("b2", "2026-11-25T06:00:00Z"),
        ("b3", "2026-11-26T06:00:00Z"),
    ] {
        let (st, body) = put_snapshot(&s, &tb, "b", id, time, MAC_B);
        assert_eq!(st, StatusCode::CREATED, "{body}");
    }
    let (pack, pack_bytes, index) = server_util::a_pack();
    let pack_path = format!("packs/{}/{pack}.pack", &pack[..2]);
    let put = |token: &str, name: &str, body: Vec<u8>| {
        h.put(format!("{}/v1/hosts/b/files/{name}", s.url))
            .bearer_auth(token)
            .body(body)
            .send()
            .unwrap()
    };
    assert_eq!(
        put(&tb, &pack_path, pack_bytes.clone()).status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put(&tb, &pack_path, pack_bytes.clone()).status(),
        StatusCode::OK,
        "idempotent"
    );
    assert_eq!(
        put(&tb, &format!("index/{pack}.idx"), index.clone()).status(),
        StatusCode::OK
    );

    // Every host-b endpoint, as (method, path, body).
    let b = |p: &str| format!("{}/v1/hosts/b/{p}", s.url);
    let endpoints: Vec<(&str, String, Vec<u8>)> = vec![
        ("GET", b("files?prefix=snapshots/"), vec![]),
        ("GET", b("files/snapshots/b1.xml"), vec![]),
        ("HEAD", b("files/config"), vec![]),
        ("GET", b(&format!("files/{pack_path}")), vec![]),
        ("PUT", b(&format!("files/{pack_path}")), pack_bytes.clone()),
        (
            "PUT",
            b("files/snapshots/b9.xml"),
            example_manifest("b", "b9", "2026-11-27T06:00:00Z", MAC_B).into_bytes(),
        ),
        ("DELETE", b("files/snapshots/b1.xml"), vec![]),
        ("GET", b("snapshots"), vec![]),
        ("GET", b("manifest?at=latest"), vec![]),
        ("POST", b("requests"), br#"{"at":"latest"}"#.to_vec()),
    ];
    let send = |method: &str, url: &str, body: &[u8], token: Option<&str>| {
        let mut rb = h.request(method.parse().unwrap(), url).body(body.to_vec());
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().unwrap();
        (resp.status(), resp.text().unwrap_or_default())
    };
    for (method, url, body) in &endpoints {
        let (st, text) = send(method, url, body, Some(&ta));
        assert_eq!(
            st,
            StatusCode::FORBIDDEN,
            "{method} {url} with a's token: {text}"
        );
        if *method != "HEAD" {
            assert!(text.contains("may not"), "{method} {url}: {text}");
        }
        let (st, _) = send(method, url, body, None);
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "{method} {url} without a token"
        );
        let bogus = format!("rwd_{}_{}", "0".repeat(16), "0".repeat(64));
        let (st, _) = send(method, url, body, Some(&bogus));
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "{method} {url} with an unknown token"
        );
    }
    // Admin-only endpoints refuse host tokens, even for their own host.
    for (method, path, body) in [
        ("DELETE", "/v1/hosts/b/files/snapshots/b1.xml", ""),
        ("POST", "/v1/hosts/b/requests", "{}"),
        ("GET", "/v1/requests", ""),
        ("GET", "/v1/tokens", ""),
        ("POST", "/v1/tokens", r#"{"host":"b"}"#),
        ("POST", "/v1/forget", r#"{"policy":{"last":1}}"#),
        ("POST", "/v1/prune", "{}"),
        ("GET", "/v1/stats", ""),
        ("GET", "/v1/hosts", ""),
    ] {
        let (st, text) = send(
            method,
            &format!("{}{path}", s.url),
            body.as_bytes(),
            Some(&tb),
        );
        assert_eq!(
            st,
            StatusCode::FORBIDDEN,
            "{method} {path} with b's own token: {text}"
        );
    }
    // b's own token reads its host; the data written above is intact.
    let (st, text) = send("GET", &b("files?prefix=snapshots/"), b"", Some(&tb));
    assert_eq!(st, StatusCode::OK);
    assert!(text.contains("snapshots/b1.xml"), "{text}");
    // Identify by MAC: a host token finds only its own host.
    let (st, _) = send(
        "GET",
        &format!("{}/v1/identify?mac={MAC_B}", s.url),
        b"",
        Some(&ta),
    );
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, text) = send(
        "GET",
        &format!("{}/v1/identify?mac={}", s.url, MAC_B.to_uppercase()),
        b"",
        Some(&s.admin),
    );
    assert_eq!(st, StatusCode::OK);
    assert!(text.contains("\"host\":\"b\""), "{text}");

    // Malformed and oversized input: 400/413 with a message; the server stays up.
    let bad: Vec<(&str, String, Vec<u8>, StatusCode)> = vec![
        (
            "POST",
            format!("{}/v1/tokens", s.url),
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            format!("{}/v1/tokens", s.url),
            br#"{"host":"../etc"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            format!("{}/v1/tokens", s.url),
            vec![b' '; 100_000],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "POST",
            format!("{}/v1/hosts/b/requests", s.url),
            br#"{"at":"yesterday"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            b("files/snapshots/x.xml"),
            b"<manifest".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            b("files/snapshots/x.xml"),
            example_manifest("a", "x", "2026-11-27T06:00:00Z", MAC_B).into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            b("files/snapshots/y.xml"),
            example_manifest("b", "x", "2026-11-27T06:00:00Z", MAC_B).into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            b(&format!("files/packs/{}/{pack}.pack", &pack[..2])),
            b"RWPACK01 garbage".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            b(&format!("files/index/{pack}.idx")),
            b"garbage".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            b("files/config"),
            b"rewind repository 9\n".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            b("files/other/file"),
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            b("files/snapshots/..%2F..%2Fcatalog%2Ftokens.json"),
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            format!("{}/v1/hosts/..%2Fcatalog/files/config", s.url),
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            b(&format!("files/{pack_path}")),
            vec![0u8; 65 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (method, url, body, want) in bad {
        let (st, text) = send(method, &url, &body, Some(&s.admin));
        assert_eq!(st, want, "{method} {url}: {text}");
        assert!(!text.trim().is_empty(), "{method} {url}: no message");
    }
    let (st, text) = send("GET", &b("files/packs/00/nothing.pack"), b"", Some(&tb));
    assert_eq!(st, StatusCode::BAD_REQUEST, "{text}");
    // Ranges.
    let resp = h
        .get(b(&format!("files/{pack_path}")))
        .bearer_auth(&tb)
        .header("Range", "bytes=0-7")
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&resp.bytes().unwrap()[..], b"RWPACK01");
    let resp = h
        .get(b(&format!("files/{pack_path}")))
        .bearer_auth(&tb)
        .header("Range", "bytes=999999-")
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // A snapshot whose tree is not stored is refused: commits are atomic.
    let dangling = example_manifest("b", "b8", "2026-11-27T06:00:00Z", MAC_B).replace(
        "<mount point=\"/\" options=\"rw,relatime,errors=remount-ro\"/>",
        "<mount point=\"/\" options=\"rw,relatime,errors=remount-ro\"/>\n    <data tree=\"5b8c1d0e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e\" from=\"/\" entries=\"1\" bytes=\"0\"/>",
    );
    let (st, text) = send(
        "PUT",
        &b("files/snapshots/b8.xml"),
        dangling.as_bytes(),
        Some(&tb),
    );
    assert_eq!(st, StatusCode::CONFLICT, "{text}");
    assert!(!s.committed("b").contains(&"b8.xml".to_string()));
    // Still up.
    let (st, _) = send("GET", &format!("{}/v1/whoami", s.url), b"", Some(&ta));
    assert_eq!(st, StatusCode::OK);
}

#[test]
fn at_selects_recovery_requests_and_boot_scripts_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = ServerProc::start(&data, false);
    let tb = s.host_token("web1");
    for (id, time) in [
        ("s1", "2026-11-24T06:00:00Z"),
        ("s2", "2026-11-25T06:00:00Z"),
        ("s3", "2026-11-26T06:00:00Z"),
    ] {
        let (st, body) = put_snapshot(&s, &tb, "web1", id, time, MAC_A);
        assert_eq!(st, StatusCode::CREATED, "{body}");
    }
    let c = s.client(&tb);
    for (at, want) in [
        ("latest", "s3"),
        ("2026-11-25T06:00:00Z", "s2"),
        ("2026-11-25T12:00:00+02:00", "s2"),
        ("2026-11-26T05:59:59Z", "s2"),
        ("2030-01-01T00:00:00Z", "s3"),
    ] {
        let (id, xml) = c.manifest_at("web1", at).unwrap();
        assert_eq!(id, want, "at={at}");
        assert!(xml.contains(&format!("id=\"{want}\"")));
    }
    let err = c.manifest_at("web1", "2026-11-23T00:00:00Z").unwrap_err();
    assert!(format!("{err:#}").contains("404"), "{err:#}");

    // Snapshots over the CLI, as from a local repository.
    let out = rewind_ok(&s, &tb, &["snapshots", "--host", "web1"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with('s')).count(),
        3,
        "{out}"
    );

    // Boot assets and a boot token.
    std::fs::write(data.join("boot/vmlinuz"), b"kernel").unwrap();
    std::fs::write(data.join("boot/initrd.img"), b"initrd").unwrap();
    std::fs::write(data.join("boot/cmdline"), "console=ttyS0,115200\n").unwrap();
    let boot = rewind_ok(&s, &s.admin, &["token", "create", "--boot"]);
    let boot = boot
        .lines()
        .find(|l| l.starts_with("rwd_"))
        .unwrap()
        .to_string();
    let h = http_client();
    let script = |mac: &str| {
        h.get(format!("{}/boot/ipxe?mac={mac}&token={boot}", s.url))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    // Nothing armed: the script exits (the machine boots its disk).
    let idle = script(MAC_A);
    assert!(
        idle.starts_with("#!ipxe\n")
            && idle.contains("no recovery is armed for web1")
            && idle.ends_with("exit\n"),
        "{idle}"
    );
    assert!(script("00:00:00:00:00:01").contains("not known"));
    assert_eq!(
        h.get(format!("{}/boot/ipxe?mac={MAC_A}", s.url))
            .send()
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.get(format!("{}/boot/ipxe?mac={MAC_A}&token={tb}", s.url))
            .send()
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN,
        "a host token is not a boot token"
    );
    let kernel = h
        .get(format!("{}/boot/vmlinuz?token={boot}", s.url))
        .send()
        .unwrap();
    assert_eq!(kernel.status(), StatusCode::OK);
    assert_eq!(&kernel.bytes().unwrap()[..], b"kernel");
    assert_eq!(
        h.get(format!("{}/boot/vmlinuz", s.url))
            .send()
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // A request with a malformed override is refused before anything is armed.
    let bad = server_util::rewind_fails(
        &s,
        &s.admin,
        &["request", "web1", "--address", "lan0:10.0.0.300/24"],
    );
    assert!(bad.contains("address") && bad.contains("400"), "{bad}");

    // Arm a recovery to a point in time, to another site's name and address.
    let out = rewind_ok(
        &s,
        &s.admin,
        &[
            "request",
            "web1",
            "--at",
            "2026-11-25T18:00:00Z",
            "--hostname",
            "web1-dr",
            "--address",
            "lan0:192.0.2.10/24:192.0.2.1",
        ],
    );
    assert!(out.contains("snapshot s2"), "{out}");
    assert!(
        out.contains("named web1-dr") && out.contains("lan0:192.0.2.10/24:192.0.2.1"),
        "{out}"
    );
    let listed = s
        .client(&s.admin)
        .get_json("/v1/requests?host=web1")
        .unwrap();
    let armed_req = listed.as_array().unwrap().last().unwrap().clone();
    assert_eq!(armed_req["hostname"], "web1-dr");
    assert_eq!(armed_req["addresses"][0], "lan0:192.0.2.10/24:192.0.2.1");
    let token = out
        .lines()
        .find_map(|l| l.split("request only): ").nth(1))
        .unwrap()
        .trim()
        .to_string();
    let status = rewind_ok(&s, &s.admin, &["status"]);
    assert!(
        status.contains("armed") && status.contains("web1"),
        "{status}"
    );

    // The boot script now boots the recovery; it carries the boot token,
    // which only identifies: the image claims the request itself.
    let armed = script(MAC_A);
    assert!(
        armed.contains("rewind.host=web1 rewind.at=2026-11-25T06:00:00Z"),
        "{armed}"
    );
    assert!(
        armed.contains(&format!(
            "kernel --name vmlinuz {}/boot/vmlinuz?token={boot}",
            s.url
        )),
        "{armed}"
    );
    assert!(
        armed.contains(&format!("rewind.server={}", s.url))
            && armed.contains("console=ttyS0,115200"),
        "{armed}"
    );
    let from_script = armed
        .split("rewind.token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        from_script, boot,
        "no recovery token is minted for a script"
    );
    // The token printed by `request` reads its request, but no data until
    // a machine claims the request (issue 15: it used to be revoked here).
    assert!(s.client(&token).get_json("/v1/recovery").is_ok());
    assert!(s.client(&token).manifest_at("web1", "latest").is_err());
    let boot_recovery = s
        .client(&boot)
        .claim(&rewind::api::ClaimRequest {
            request: None,
            host: Some("web1".into()),
            machine: server_util::example_machine(MAC_A),
        })
        .unwrap()
        .token;
    let rc = s.client(&boot_recovery);
    let me = rc.get_json("/v1/recovery").unwrap();
    assert_eq!(me["snapshot"], "s2");
    // The recovery token reads its host, only reads, and only its host.
    assert_eq!(
        rc.manifest_at("web1", me["snapshot_time"].as_str().unwrap())
            .unwrap()
            .0,
        "s2"
    );
    let (st, _) = put_snapshot(
        &s,
        &boot_recovery,
        "web1",
        "s9",
        "2026-11-27T06:00:00Z",
        MAC_A,
    );
    assert_eq!(st, StatusCode::FORBIDDEN);
    let other = s.host_token("other");
    let (st, _) = put_snapshot(
        &s,
        &other,
        "other",
        "o1",
        "2026-11-27T06:00:00Z",
        "52:54:00:00:00:99",
    );
    assert_eq!(st, StatusCode::CREATED);
    assert!(rc.manifest_at("other", "latest").is_err());

    // Progress shows in `rewind status`; the result ends the token.
    rc.report_progress(rewind::stage::Stage::Restore, 3 << 30, 8 << 30, "")
        .unwrap();
    let status = rewind_ok(&s, &s.admin, &["status"]);
    assert!(
        status.contains("running") && status.contains("restore 3.0 GiB / 8.0 GiB (37%)"),
        "{status}"
    );
    rc.report_result(true, rewind::stage::Stage::Finish, "recovered in 2m")
        .unwrap();
    let status = rewind_ok(&s, &s.admin, &["status"]);
    assert!(
        status.contains("succeeded") && status.contains("recovered in 2m"),
        "{status}"
    );
    let gone = rc.get_json("/v1/recovery").unwrap_err();
    assert!(format!("{gone:#}").contains("401"), "{gone:#}");
    // Recovered: the machine boots its own disk again.
    assert!(script(MAC_A).ends_with("exit\n"));

    // Cancel.
    rewind_ok(&s, &s.admin, &["request", "web1"]);
    let out = rewind_ok(&s, &s.admin, &["request", "web1", "--cancel"]);
    assert!(out.contains("cancelled"), "{out}");
    assert!(script(MAC_A).ends_with("exit\n"));

    // Forget through the server.
    let out = rewind_ok(
        &s,
        &s.admin,
        &["forget", "--keep-last", "2", "--host", "web1"],
    );
    assert!(out.contains("keeping 2 of 3"), "{out}");
    assert_eq!(s.committed("web1"), ["s2.xml", "s3.xml"]);
    rewind_fails(&s, &s.admin, &["forget", "--host", "web1"]);

    // Token management.
    let list = rewind_ok(&s, &s.admin, &["token", "list"]);
    assert!(
        list.contains("host web1") && list.contains("boot") && list.contains("admin"),
        "{list}"
    );
    let id = &tb[4..20];
    rewind_ok(&s, &s.admin, &["token", "revoke", id]);
    assert!(s.client(&tb).get_json("/v1/whoami").is_err());
}

#[test]
fn tls_with_a_pinned_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), true);
    assert!(s.url.starts_with("https://"));
    let pin = s.pin.clone().unwrap();
    let ok = rewind::client::Client::new(&s.url, &s.admin, &rewind::client::Trust::pinned(&[&pin]))
        .unwrap();
    assert_eq!(ok.get_json("/v1/whoami").unwrap()["scope"]["kind"], "admin");
    let zeros = "00".repeat(32);
    let mut wrong =
        rewind::client::Client::new(&s.url, &s.admin, &rewind::client::Trust::pinned(&[&zeros]))
            .unwrap();
    wrong.retry_for = std::time::Duration::from_secs(1);
    let e = wrong.get_json("/v1/whoami").unwrap_err();
    assert!(format!("{e:#}").contains("not the pinned one"), "{e:#}");
    // Same certificate after a restart: the pin stays valid.
    let first_pin = pin.clone();
    let mut s = s;
    s.restart();
    assert_eq!(s.pin.as_deref(), Some(first_pin.as_str()));
}
