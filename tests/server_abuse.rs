//! Tier 1 (no root): the server under hostile or broken input (issue 16).
//! Packs whose numbers lie, stored packs damaged on the server's disk,
//! stray files in a repository: each answers an error and the server keeps
//! serving.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod server_util;

use reqwest::StatusCode;
use reqwest::blocking::Client;
use server_util::*;

fn http() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder().build().unwrap()
}

fn put(s: &ServerProc, token: &str, host: &str, name: &str, body: Vec<u8>) -> (StatusCode, String) {
    let resp = http()
        .put(format!("{}/v1/hosts/{host}/files/{name}", s.url))
        .bearer_auth(token)
        .body(body)
        .send()
        .unwrap();
    (resp.status(), resp.text().unwrap())
}

fn alive(s: &ServerProc) {
    let resp = http().get(format!("{}/v1/version", s.url)).send().unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.status());
}

/// A pack whose one index entry has its offset replaced, renamed after its
/// new BLAKE3 (so that only the numbers are wrong).
fn pack_with_offset(offset: u64) -> (String, Vec<u8>) {
    let (_, mut bytes, _) = a_pack();
    let n = bytes.len();
    let entry = n - 12 - 49;
    bytes[entry + 33..entry + 41].copy_from_slice(&offset.to_le_bytes());
    (blake3::hash(&bytes).to_hex().to_string(), bytes)
}

#[test]
fn lying_and_damaged_packs_never_take_the_server_down() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let token = s.host_token("web1");

    // Offsets that wrap around u64, point into the magic or past the blobs.
    for offset in [u64::MAX - 1, 2, 1 << 40] {
        let (name, bytes) = pack_with_offset(offset);
        let (status, body) = put(
            &s,
            &token,
            "web1",
            &format!("packs/{}/{name}.pack", &name[..2]),
            bytes,
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "offset {offset}: {body}");
        assert!(body.contains("outside the pack"), "{body}");
        alive(&s);
    }

    // A good pack, then damaged on the server's disk: truncated, or with a
    // trailer that claims 4 GiB of index.
    let (name, bytes, index) = a_pack();
    let pack_file = format!("packs/{}/{name}.pack", &name[..2]);
    let idx_file = format!("index/{name}.idx");
    let (status, body) = put(&s, &token, "web1", &pack_file, bytes.clone());
    assert!(status.is_success(), "{body}");
    let host_dir = s.data.join("hosts/web1");
    std::fs::remove_file(host_dir.join(&idx_file)).unwrap();
    for damaged in [bytes[..5].to_vec(), {
        let mut b = bytes.clone();
        let n = b.len();
        b[n - 12..n - 8].copy_from_slice(&u32::MAX.to_le_bytes());
        b
    }] {
        std::fs::write(host_dir.join(&pack_file), &damaged).unwrap();
        let (status, body) = put(&s, &token, "web1", &idx_file, index.clone());
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert!(body.contains("is damaged"), "{body}");
        alive(&s);
        // Reading it whole or by range answers, whatever its size.
        let resp = http()
            .get(format!("{}/v1/hosts/web1/files/{pack_file}", s.url))
            .bearer_auth(&token)
            .header("Range", "bytes=18446744073709551614-")
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        alive(&s);
    }

    // A stored index whose entry lies (a wrapped offset) and a prune over it:
    // an error answer, not a crash.
    std::fs::write(host_dir.join(&pack_file), &bytes).unwrap();
    let (_, lying) = pack_with_offset(u64::MAX - 1);
    std::fs::write(host_dir.join(&idx_file), &lying[lying.len() - 61..]).unwrap();
    let resp = http()
        .post(format!("{}/v1/prune", s.url))
        .bearer_auth(&s.admin)
        .body(r#"{"host": "web1", "grace": "0s"}"#)
        .send()
        .unwrap();
    let status = resp.status();
    let text = resp.text().unwrap();
    // With no snapshot the pack is unused: prune retires it.
    assert!(status.is_success(), "{status}: {text}");
    alive(&s);

    // A restart over the damage (a pack without index, a stray file where
    // a packs/XX directory belongs) starts and says what it skipped.
    std::fs::write(host_dir.join(&pack_file), &bytes[..5]).unwrap();
    let _ = std::fs::remove_file(host_dir.join(&idx_file));
    std::fs::write(host_dir.join("packs/zz"), b"stray").unwrap();
    let mut s = s;
    s.restart();
    alive(&s);
    assert!(s.log_text().contains("refused"), "{}", s.log_text());
}
