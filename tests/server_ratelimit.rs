//! Per-token rate limits (issue 16): a token that floods the server gets
//! 429 with Retry-After, and every other token is served meanwhile.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod server_util;

use std::time::{Duration, Instant};

use server_util::*;

#[test]
fn a_flooding_token_gets_429_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProc::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        false,
        None,
        &["--rate-limit", "5"],
    );
    let flood = s.host_token("flood");
    let calm = s.host_token("calm");
    let (status, body) = put_snapshot(
        &s,
        &flood,
        "flood",
        "20261130T120000Z-flood",
        "2026-11-30T12:00:00Z",
        "52:54:00:00:00:16",
    );
    assert!(status.is_success(), "{status}: {body}");
    let http = http_client();
    let get = |token: &str, host: &str| {
        http.get(format!("{}/v1/hosts/{host}/snapshots", s.url))
            .bearer_auth(token)
            .send()
            .unwrap()
    };

    // The burst (twice the rate) passes, then 429 with Retry-After.
    let started = Instant::now();
    let mut ok = 0;
    let mut limited = None;
    for _ in 0..40 {
        let resp = get(&flood, "flood");
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => {
                limited = Some(resp);
                break;
            }
            other => panic!("unexpected {other}: {}", resp.text().unwrap()),
        }
    }
    let resp = limited.expect("the flood was never limited");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the test sent too slowly to flood"
    );
    // The burst is 10; the snapshot above took one, time refilled a few.
    assert!((9..=12).contains(&ok), "{ok} requests before the limit");
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    let body = resp.text().unwrap();
    assert!(body.contains("slow down"), "{body}");

    // Another host's token and the admin are served while the flood goes on.
    for _ in 0..5 {
        assert_eq!(get(&flood, "flood").status().as_u16(), 429);
        assert_eq!(get(&calm, "calm").status().as_u16(), 200);
    }
    let admin = http
        .get(format!("{}/v1/hosts", s.url))
        .bearer_auth(&s.admin)
        .send()
        .unwrap();
    assert_eq!(admin.status().as_u16(), 200);

    // Requests without a valid token are not counted (they get 401, as
    // before), and a wrong secret cannot spend the flood token's budget.
    let last = if flood.ends_with('0') { "1" } else { "0" };
    let forged = format!("{}{last}", &flood[..flood.len() - 1]);
    assert_eq!(get(&forged, "flood").status().as_u16(), 401);

    // After the wait the token is served again, at the rate.
    std::thread::sleep(Duration::from_secs(retry_after) + Duration::from_millis(300));
    assert_eq!(get(&flood, "flood").status().as_u16(), 200);

    // The client waits and retries on 429: a command with the limited
    // token still succeeds.
    for _ in 0..20 {
        let _ = get(&flood, "flood");
    }
    let out = rewind_ok(&s, &flood, &["snapshots", "--host", "flood"]);
    assert!(out.contains("20261130T120000Z-flood"), "{out}");
}
