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

/// Six concurrent 64 MiB uploads, without a token and then with a valid
/// one to a name they do not match: how much the server's peak memory
/// (VmHWM) grows. Unauthenticated bodies are never read; authenticated
/// ones are bounded by the upload concurrency limit. Figures in
/// docs/security.md.
#[test]
fn big_uploads_do_not_grow_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start(&dir.path().join("data"), false);
    let token = s.host_token("web1");
    alive(&s);
    let base = s.status_kib("VmHWM");
    let body = std::sync::Arc::new(vec![7u8; 64 << 20]);
    let name = "packs/ab/ab00000000000000000000000000000000000000000000000000000000000000.pack";
    let upload_all = |token: Option<&str>| {
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (url, body) = (
                    format!("{}/v1/hosts/web1/files/{name}", s.url),
                    body.clone(),
                );
                let token = token.map(str::to_string);
                std::thread::spawn(move || {
                    let mut req = http().put(url).body(body.to_vec());
                    if let Some(t) = token {
                        req = req.bearer_auth(t);
                    }
                    // A server that refuses before reading may close early.
                    req.send().map(|r| r.status()).ok()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    };
    let answers = upload_all(None);
    let unauthenticated = s.status_kib("VmHWM").saturating_sub(base);
    for a in answers.iter().flatten() {
        assert_eq!(*a, StatusCode::UNAUTHORIZED);
    }
    alive(&s);
    let answers = upload_all(Some(&token));
    let authenticated = s.status_kib("VmHWM").saturating_sub(base);
    for a in answers.iter().flatten() {
        assert_eq!(*a, StatusCode::BAD_REQUEST, "not its name");
    }
    alive(&s);
    eprintln!(
        "server peak memory growth: unauthenticated {} MiB, authenticated {} MiB",
        unauthenticated / 1024,
        authenticated / 1024
    );
    assert!(unauthenticated < 32 << 10, "{unauthenticated} KiB");
    // At most --max-uploads (4) bodies of 64 MiB are held at once.
    assert!(authenticated < 300 << 10, "{authenticated} KiB");
}

/// Send raw bytes on a new connection and return what the server answers
/// (its status line), waiting at most `wait`.
fn raw(s: &ServerProc, request: &[u8], wait: std::time::Duration) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    c.write_all(request).unwrap();
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn bodies_are_limited_per_route_and_may_not_stall() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = ServerProc::start_with(&data, "127.0.0.1:0", false, None, &["--body-timeout", "2"]);
    let token = s.host_token("web1");

    // Declared too large for its kind: refused before a byte is read.
    let (status, body) = put(&s, &token, "web1", "config", vec![b'x'; 5000]);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // The headers alone get the answer: the body is never awaited.
    let req = format!(
        "PUT /v1/hosts/web1/files/snapshots/s1.xml HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        17 << 20
    );
    let answer = raw(&s, req.as_bytes(), std::time::Duration::from_secs(5));
    assert!(answer.contains(" 413 "), "{answer}");

    // Not declared (chunked): refused as soon as it passes the JSON limit.
    let chunk = vec![b' '; 40 << 10];
    let mut req = format!(
        "POST /v1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        s.admin
    )
    .into_bytes();
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(&s, &req, std::time::Duration::from_secs(10));
    assert!(answer.contains(" 413 "), "{answer}");

    // A body that stops coming (slowloris): 408 after --body-timeout.
    let started = std::time::Instant::now();
    let req = format!(
        "PUT /v1/hosts/web1/files/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 100\r\n\r\nabc"
    );
    let answer = raw(&s, req.as_bytes(), std::time::Duration::from_secs(20));
    assert!(answer.contains(" 408 "), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    alive(&s);
}

#[test]
fn a_host_over_its_quota_gets_507_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = ServerProc::start_with(&data, "127.0.0.1:0", false, None, &["--quota", "2K"]);
    let web1 = s.host_token("web1");
    let web2 = s.host_token("web2");
    let (name, bytes, _) = a_pack();
    let pack_file = format!("packs/{}/{name}.pack", &name[..2]);
    let (status, body) = put(&s, &web1, "web1", &pack_file, bytes.clone());
    assert!(status.is_success(), "{body}");
    // web1's repository now takes more than 2 KiB? Fill it with packs
    // until the quota answers.
    let mut refused = None;
    for i in 0..64u32 {
        let mut b = rewind::repo::pack::PackBuilder::new();
        let data = format!("chunk {i} {}", "x".repeat(200));
        let stored = zstd::bulk::compress(data.as_bytes(), 1).unwrap();
        b.add(
            rewind::tree::ChunkId::of(data.as_bytes()),
            rewind::repo::pack::BlobKind::Data,
            data.len() as u32,
            &stored,
        );
        let (name, bytes, _, _) = b.finish();
        let (status, body) = put(
            &s,
            &web1,
            "web1",
            &format!("packs/{}/{name}.pack", &name[..2]),
            bytes,
        );
        if status == StatusCode::INSUFFICIENT_STORAGE {
            refused = Some(body);
            break;
        }
        assert!(status.is_success(), "{body}");
    }
    let body = refused.expect("the quota never answered 507");
    assert!(body.contains("host web1 is at its quota"), "{body}");
    assert!(body.contains("--quota"), "{body}");
    // Another host is not affected; the server serves on.
    let (status, body) = put(&s, &web2, "web2", &pack_file, bytes);
    assert!(status.is_success(), "{body}");
    alive(&s);
}
