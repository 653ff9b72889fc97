//! Tier 1 (no root): escrowed LUKS keys through the real `rewind serve`.
//! The attacks the issue names are performed — another host's token, the
//! boot token, the host's own token, recovery tokens of requests that are
//! not armed (replaced, cancelled, finished) — and refused; an armed
//! recovery of the host and an admin get the key, each release audited;
//! and the whole data directory is searched for the key's bytes (raw,
//! hex, base64) and holds none. The master key file's rules are checked
//! at start.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod server_util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use reqwest::StatusCode;
use rewind::api::{AuditAction, ClaimRequest, EscrowKey, NewRequest, NewToken, ResultReport};
use server_util::*;

const MAC_A: &str = "52:54:00:00:00:0a";
const MAC_B: &str = "52:54:00:00:00:0b";
const UUID: &str = "c0ffee00-1234-4abc-8def-0123456789ab";

fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if pad {
            out.push_str(&"=".repeat(3 - c.len()));
        }
    }
    out
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

fn token_of(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("rwd_"))
        .unwrap()
        .to_string()
}

#[test]
fn escrowed_keys_go_only_to_an_armed_recovery_of_their_host() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key_file = dir.path().join("master.key");
    let s = ServerProc::start_with(
        &data,
        "127.0.0.1:0",
        false,
        None,
        &[
            "--key-file",
            key_file.to_str().unwrap(),
            "--create-key-file",
        ],
    );
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let web1 = s.host_token("web1");
    let web2 = s.host_token("web2");
    for (h, t, mac) in [("web1", &web1, MAC_A), ("web2", &web2, MAC_B)] {
        let (st, body) = put_snapshot(&s, t, h, "s1", "2026-11-24T06:00:00Z", mac);
        assert_eq!(st, StatusCode::CREATED, "{body}");
    }
    let admin = s.client(&s.admin);
    let boot = token_of(&rewind_ok(&s, &s.admin, &["token", "create", "--boot"]));
    let monitor = admin
        .create_token(&NewToken {
            monitor: true,
            ..NewToken::default()
        })
        .unwrap()
        .token;

    // The volume key, as a capture reads it from the mapping.
    let mut key = [0u8; 64];
    blake3::Hasher::new()
        .update(b"the escrow test's volume key")
        .finalize_xof()
        .fill(&mut key);
    let body = EscrowKey {
        volume_uuid: UUID.into(),
        name: "cryptroot".into(),
        kind: "volume-key".into(),
        key: rewind::util::hex::encode(&key),
    };
    let put = s.client(&web1).escrow_key("web1", &body).unwrap();
    assert!(put.new);
    let again = s.client(&web1).escrow_key("web1", &body).unwrap();
    assert_eq!(
        (again.key_id.as_str(), again.new),
        (put.key_id.as_str(), false)
    );
    let id = put.key_id.clone();
    // Another host's token cannot put into web1.
    let e = s.client(&web2).escrow_key("web1", &body).unwrap_err();
    assert!(format!("{e:#}").contains("403"), "{e:#}");
    // The host lists what is escrowed, never the key.
    let listed = s.client(&web1).escrowed_keys("web1").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_id, id);

    let h = http_client();
    let get = |token: Option<&str>| {
        let mut rb = h.get(format!("{}/v1/hosts/web1/keys/{id}", s.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().unwrap();
        (resp.status(), resp.text().unwrap())
    };
    let refused = |who: &str, token: Option<&str>, want: StatusCode| {
        let (st, text) = get(token);
        assert_eq!(st, want, "{who}: {text}");
        assert!(!text.contains(&body.key), "{who} saw the key");
    };

    // Nothing armed: nobody but the admin gets it.
    refused("no token", None, StatusCode::UNAUTHORIZED);
    refused("web1's own token", Some(&web1), StatusCode::FORBIDDEN);
    refused("web2's token", Some(&web2), StatusCode::FORBIDDEN);
    refused("the boot token", Some(&boot), StatusCode::FORBIDDEN);
    refused("a monitor token", Some(&monitor), StatusCode::FORBIDDEN);
    let (st, text) = get(Some(&web1));
    assert!(text.contains("never read them back"), "{st}: {text}");

    // A request's recovery token works once the machine it allows has
    // claimed it (issue 15): the claim's token is the one that reads.
    let claim = |token: &str, mac: &str| {
        s.client(token)
            .claim(&ClaimRequest {
                request: None,
                host: None,
                machine: example_machine(mac),
            })
            .unwrap()
            .token
    };
    // Another host's armed recovery.
    let r2 = admin
        .create_request("web2", &NewRequest::default())
        .unwrap();
    refused(
        "web2's armed recovery",
        Some(&claim(&r2.token, MAC_B)),
        StatusCode::FORBIDDEN,
    );
    // web1's recovery tokens of requests that are not armed: replaced,
    // cancelled, finished.
    let replaced = admin
        .create_request("web1", &NewRequest::default())
        .unwrap();
    let cancelled = admin
        .create_request("web1", &NewRequest::default())
        .unwrap();
    refused(
        "a replaced request's token",
        Some(&replaced.token),
        StatusCode::UNAUTHORIZED,
    );
    admin.cancel_request(&cancelled.request.id).unwrap();
    refused(
        "a cancelled request's token",
        Some(&cancelled.token),
        StatusCode::UNAUTHORIZED,
    );
    let finished = admin
        .create_request("web1", &NewRequest::default())
        .unwrap();
    let finished_claim = claim(&finished.token, MAC_A);
    let c = s.client(&finished_claim);
    c.post::<_, serde_json::Value>(
        "/v1/recovery/result",
        &ResultReport {
            ok: false,
            stage: rewind::stage::Stage::Plan,
            message: "stopped".into(),
        },
    )
    .unwrap();
    refused(
        "a finished request's claim",
        Some(&finished_claim),
        StatusCode::UNAUTHORIZED,
    );
    refused(
        "a finished request's token",
        Some(&finished.token),
        StatusCode::UNAUTHORIZED,
    );

    // An armed recovery of web1 gets it; so does the admin.
    let armed = admin
        .create_request("web1", &NewRequest::default())
        .unwrap();
    refused(
        "an armed request's token before its claim",
        Some(&armed.token),
        StatusCode::FORBIDDEN,
    );
    let armed_claim = claim(&armed.token, MAC_A);
    let released = s.client(&armed_claim).escrowed_key("web1", &id).unwrap();
    assert_eq!(released.key, body.key);
    assert_eq!(released.volume_uuid, UUID);
    // ... but not another host's key with it.
    let e = s
        .client(&armed_claim)
        .escrowed_key("web2", &id)
        .unwrap_err();
    assert!(format!("{e:#}").contains("403"), "{e:#}");
    assert_eq!(admin.escrowed_key("web1", &id).unwrap().key, body.key);
    // A key id that is not one, or not there.
    let e = admin.escrowed_key("web1", "nope-1").unwrap_err();
    assert!(format!("{e:#}").contains("404"), "{e:#}");

    // Each release is in the audit log, naming who got it.
    let releases: Vec<_> = admin
        .audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == AuditAction::KeyReleased)
        .collect();
    assert_eq!(releases.len(), 2, "{releases:?}");
    assert!(
        releases[0]
            .detail
            .contains(&format!("recovery {}", armed.request.id))
    );
    assert!(releases[1].detail.ends_with("to admin"));
    assert!(releases.iter().all(|e| e.target == id));

    // The key is nowhere in the data directory (nor the server's log), in
    // any encoding.
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let hex = rewind::util::hex::encode(&key);
    let mut needles: Vec<(String, Vec<u8>)> = vec![
        ("raw".into(), key.to_vec()),
        ("hex".into(), hex.clone().into_bytes()),
        ("HEX".into(), hex.to_uppercase().into_bytes()),
    ];
    // Base64 of the key from each of the three alignments a longer
    // encoded text could start at: a 24-character run is enough.
    for skip in 0..3 {
        for (name, alphabet) in [("base64", STD), ("base64url", URL)] {
            let text = base64(&key[skip..], alphabet, false);
            needles.push((format!("{name}+{skip}"), text.as_bytes()[4..28].to_vec()));
        }
    }
    // The search finds what is there (a control, outside the data).
    assert_eq!(base64(b"Man", STD, true), "TWFu");
    assert_eq!(base64(b"Ma", STD, true), "TWE=");
    let control = dir.path().join("control");
    std::fs::create_dir_all(&control).unwrap();
    std::fs::write(
        control.join("leak.txt"),
        format!("x{}y", base64(&key[1..], STD, true)),
    )
    .unwrap();
    assert_eq!(files_containing(&control, &needles[5].1).len(), 1);
    for (what, needle) in &needles {
        let hits = files_containing(&data, needle);
        assert!(hits.is_empty(), "the key ({what}) is in {hits:?}");
        assert!(
            !s.log_text()
                .as_bytes()
                .windows(needle.len())
                .any(|w| w == needle),
            "the key ({what}) is in the server's log"
        );
    }
    // The record is there, wrapped.
    let records = std::fs::read_dir(data.join("keys/web1")).unwrap().count();
    assert_eq!(records, 1);
}

#[test]
fn the_master_key_file_is_required_private_and_outside_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Without a key file: nothing is escrowed, and the answer says why.
    let s = ServerProc::start(&data, false);
    let t = s.host_token("web1");
    let e = s
        .client(&t)
        .escrow_key(
            "web1",
            &EscrowKey {
                volume_uuid: UUID.into(),
                name: "cryptroot".into(),
                kind: "volume-key".into(),
                key: "ab".repeat(64),
            },
        )
        .unwrap_err();
    assert!(format!("{e:#}").contains("--key-file"), "{e:#}");
    drop(s);

    let start = |key_file: &Path, create: bool| {
        let mut c = std::process::Command::new(BIN);
        c.args(["serve", "--data", data.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--key-file", key_file.to_str().unwrap()]);
        if create {
            c.arg("--create-key-file");
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = dir.path().join("missing.key");
    assert!(start(&missing, false).contains("--create-key-file"));
    let open = dir.path().join("open.key");
    std::fs::write(&open, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = start(&open, false);
    assert!(
        e.contains("group or others may read it") && e.contains("chmod 600"),
        "{e}"
    );
    let inside = data.join("master.key");
    let e = start(&inside, true);
    assert!(e.contains("inside the data directory"), "{e}");
    assert!(!inside.exists());
}
