//! Golden fixtures of the HTTP API (tests/fixtures/api/): the request bodies
//! the client code sends and the response bodies the real `rewind serve`
//! answers, normalised (tokens, request ids, clock times). They were first
//! recorded from the code before the API had shared types; this test keeps
//! the wire format readable: today's server answers with the same shapes,
//! and today's client sends the same bodies.
//!
//! Re-record (only with a deliberate, documented change of the API):
//! `REWIND_RECORD_API_FIXTURES=1 cargo test --test api_fixtures`.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod server_util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::Value;
use server_util::*;

const MAC: &str = "52:54:00:00:00:0a";
const HOST: &str = "web1";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/api")
}

fn recording() -> bool {
    std::env::var_os("REWIND_RECORD_API_FIXTURES").is_some()
}

// ---- normalisation ----

/// Replace what changes from run to run: tokens, token and request ids,
/// clock times, rates.
fn normalize(v: &mut Value) {
    normalize_in(v, "", "");
}

fn normalize_in(v: &mut Value, key: &str, parent: &str) {
    match v {
        Value::Object(m) => {
            let kind = m
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            for (k, x) in m.iter_mut() {
                let p = if key.is_empty() { kind.as_str() } else { key };
                normalize_in(x, k, p);
            }
        }
        Value::Array(a) => {
            for x in a {
                normalize_in(x, key, parent);
            }
        }
        Value::String(s) => {
            let clock = matches!(
                key,
                "created"
                    | "updated"
                    | "stage_started"
                    | "expires"
                    | "claimed"
                    | "renewed"
                    | "lease_until"
            ) || (key == "time" && parent == "progress");
            if clock {
                *s = "2026-01-01T00:00:00Z".into();
            } else if (key == "id" || (key == "token" && parent == "claim")) && is_hex(s, 16) {
                *s = "0".repeat(16);
            } else {
                *s = normalize_text(s);
            }
        }
        Value::Number(_) if key == "rate" => *v = serde_json::json!(0.0),
        _ => {}
    }
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Tokens (`rwd_<16>_<64>`) and request ids (`req-<12>`) inside any text.
fn normalize_text(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    loop {
        let next = [rest.find("rwd_"), rest.find("req-")]
            .into_iter()
            .flatten()
            .min();
        let Some(i) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.len() >= 85 && is_hex(&tail[4..20], 16) && is_hex(&tail[21..85], 64) {
            out.push_str(&format!("rwd_{}_{}", "0".repeat(16), "0".repeat(64)));
            rest = &tail[85..];
        } else if tail.len() >= 16 && tail.starts_with("req-") && is_hex(&tail[4..16], 12) {
            out.push_str(&format!("req-{}", "0".repeat(12)));
            rest = &tail[16..];
        } else {
            out.push_str(&tail[..4]);
            rest = &tail[4..];
        }
    }
}

/// The shape of a JSON value: field names and value types (not values).
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) if n.is_f64() => "float".into(),
        Value::Number(_) => "integer".into(),
        Value::String(_) => "string".into(),
        Value::Array(a) => {
            let mut shapes: Vec<Value> = a.iter().map(shape).collect();
            shapes.dedup();
            Value::Array(shapes)
        }
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), shape(x))).collect()),
    }
}

// ---- the fixture files ----

/// Recorded (or checked) fixtures of one run.
#[derive(Default)]
struct Book {
    json: BTreeMap<String, Value>,
    text: BTreeMap<String, String>,
}

impl Book {
    fn json(&mut self, name: &str, mut v: Value) -> Value {
        normalize(&mut v);
        self.json.insert(name.to_string(), v.clone());
        v
    }

    fn text(&mut self, name: &str, t: &str) {
        self.text.insert(name.to_string(), normalize_text(t));
    }

    /// Write (recording) or compare shapes with the files.
    fn finish(self) {
        let dir = fixtures();
        if recording() {
            for (name, v) in &self.json {
                let path = dir.join(format!("{name}.json"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, serde_json::to_string_pretty(v).unwrap() + "\n").unwrap();
            }
            for (name, t) in &self.text {
                std::fs::write(dir.join(name), t).unwrap();
            }
            return;
        }
        for (name, v) in &self.json {
            let recorded = read_fixture(name);
            if name.starts_with("requests/") {
                assert_eq!(v, &recorded, "{name}: the client sends another body");
                continue;
            }
            assert_eq!(
                shape(v),
                shape(&recorded),
                "{name}: the live answer's shape differs from the recorded one\nlive: {v}\nrecorded: {recorded}"
            );
        }
        for (name, t) in &self.text {
            let recorded = std::fs::read_to_string(dir.join(name)).unwrap();
            assert_eq!(t, &recorded, "{name}");
        }
    }
}

/// The recorded answers, for the recorder to give (a fixture not recorded
/// yet: `{}`).
fn recorded_replies() -> BTreeMap<String, Value> {
    [
        ("/v1/recovery/progress", "responses/recovery_progress"),
        ("/v1/recovery/result", "responses/recovery_result"),
        ("/v1/claim", "responses/claim"),
        ("/v1/hosts/web1/requests", "responses/request_create"),
        ("/v1/tokens", "responses/token_create"),
        ("/v1/forget", "responses/forget"),
        ("/v1/prune", "responses/prune"),
    ]
    .into_iter()
    .filter(|(_, name)| fixtures().join(format!("{name}.json")).exists())
    .map(|(path, name)| (path.to_string(), read_fixture(name)))
    .collect()
}

fn read_fixture(name: &str) -> Value {
    let path = fixtures().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (record with REWIND_RECORD_API_FIXTURES=1)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

// ---- a fake server that records what the client sends ----

/// Requests seen: method, path with query, body.
type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

struct Recorder {
    url: String,
    seen: Seen,
}

impl Recorder {
    /// Answers every request with 200 and `replies[path without query]`,
    /// else `{}`.
    fn start(replies: BTreeMap<String, Value>) -> Recorder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if head.is_empty() {
                        head = line;
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or("").to_string();
                let target = words.next().unwrap_or("").to_string();
                let path = target.split('?').next().unwrap_or("").to_string();
                let reply = replies
                    .get(&path)
                    .map_or_else(|| "{}".to_string(), Value::to_string);
                seen2.lock().unwrap().push((method, target, body));
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        Recorder { url, seen }
    }

    /// The JSON body of the last request to `method` `path` (query included).
    fn body(&self, method: &str, path: &str) -> Value {
        let seen = self.seen.lock().unwrap();
        let (_, _, body) = seen
            .iter()
            .rev()
            .find(|(m, p, _)| m == method && p == path)
            .unwrap_or_else(|| {
                panic!(
                    "no {method} {path} was sent; sent: {:?}",
                    seen.iter()
                        .map(|(m, p, _)| format!("{m} {p}"))
                        .collect::<Vec<_>>()
                )
            });
        serde_json::from_slice(body).unwrap()
    }

    /// Run a `rewind` client command against the recorder (its outcome does
    /// not matter: the recorder's answers are not real ones).
    fn cli(&self, args: &[&str]) {
        let _ = std::process::Command::new(BIN)
            .args(args)
            .env("REWIND_SERVER", &self.url)
            .env("REWIND_TOKEN", fake_token())
            .env("REWIND_RETRY_SECS", "1")
            .env("REWIND_INSECURE_HTTP", "1")
            .env_remove("REWIND_REPO")
            .env_remove("REWIND_PIN")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
    }
}

fn fake_token() -> String {
    format!("rwd_{}_{}", "1".repeat(16), "2".repeat(64))
}

// ---- what the client code sends ----

/// The request bodies, sent by the client code to the recorder.
fn client_bodies(book: &mut Book) {
    let r = Recorder::start(recorded_replies());
    let c = rewind::client::Client::new(
        &r.url,
        &fake_token(),
        &rewind::client::Trust::insecure_http(),
    )
    .unwrap();
    c.report_progress(rewind::stage::Stage::Restore, 3 << 30, 8 << 30, "/ (ext4)")
        .unwrap();
    book.json(
        "requests/recovery_progress",
        r.body("POST", "/v1/recovery/progress"),
    );
    c.report_result(
        false,
        rewind::stage::Stage::Format,
        "mkfs.xfs /dev/sda2: exit status 1",
    )
    .unwrap();
    book.json(
        "requests/recovery_result_failed",
        r.body("POST", "/v1/recovery/result"),
    );
    c.report_result(true, rewind::stage::Stage::Finish, "recovered web1")
        .unwrap();
    book.json(
        "requests/recovery_result_ok",
        r.body("POST", "/v1/recovery/result"),
    );

    // The recorder's answer is the recorded claim (absent the first time).
    let _ = c.claim(&rewind::api::ClaimRequest {
        request: None,
        host: Some(HOST.into()),
        machine: server_util::example_machine(MAC),
    });
    book.json("requests/claim", r.body("POST", "/v1/claim"));

    r.cli(&[
        "request",
        HOST,
        "--at",
        "2025-06-02T12:00:00Z",
        "--hostname",
        "web1-dr",
        "--address",
        "lan0:192.0.2.10/24:192.0.2.1",
    ]);
    book.json(
        "requests/request_create_overrides",
        r.body("POST", "/v1/hosts/web1/requests"),
    );
    r.cli(&["request", HOST]);
    book.json(
        "requests/request_create",
        r.body("POST", "/v1/hosts/web1/requests"),
    );
    r.cli(&["token", "create", HOST, "--note", "web1's capture"]);
    book.json("requests/token_create_host", r.body("POST", "/v1/tokens"));
    r.cli(&["token", "create", "--boot"]);
    book.json("requests/token_create_boot", r.body("POST", "/v1/tokens"));
    r.cli(&[
        "forget",
        "--keep-last",
        "2",
        "--keep-daily",
        "7",
        "--host",
        HOST,
        "--dry-run",
    ]);
    book.json("requests/forget", r.body("POST", "/v1/forget"));
    r.cli(&["prune", "--host", HOST, "--dry-run"]);
    book.json("requests/prune_host", r.body("POST", "/v1/prune"));
    r.cli(&["prune"]);
    book.json("requests/prune", r.body("POST", "/v1/prune"));
}

// ---- what the server answers ----

struct Api {
    http: reqwest::blocking::Client,
    url: String,
}

impl Api {
    fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (StatusCode, String) {
        let mut rb = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        let resp = rb.send().unwrap();
        (resp.status(), resp.text().unwrap())
    }

    /// A JSON answer with the status expected.
    fn json(
        &self,
        want: StatusCode,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Value {
        let (st, text) = self.call(method, path, token, body);
        assert_eq!(st, want, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }
}

fn token_of(v: &Value) -> String {
    v["token"].as_str().unwrap().to_string()
}

fn server_answers(book: &mut Book) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = ServerProc::start(&data, false);
    std::fs::write(data.join("boot/vmlinuz"), b"kernel").unwrap();
    std::fs::write(data.join("boot/initrd.img"), b"initrd").unwrap();
    std::fs::write(data.join("boot/cmdline"), "console=ttyS0,115200\n").unwrap();
    let api = Api {
        http: reqwest::blocking::Client::new(),
        url: s.url.clone(),
    };
    let admin = s.admin.clone();
    let ok = StatusCode::OK;
    let created = StatusCode::CREATED;

    book.json(
        "responses/whoami_admin",
        api.json(ok, "GET", "/v1/whoami", &admin, None),
    );
    let body = read_fixture_or_live("requests/token_create_host", book);
    let host_token = api.json(created, "POST", "/v1/tokens", &admin, Some(&body));
    book.json("responses/token_create", host_token.clone());
    let host_token = token_of(&host_token);
    let body = read_fixture_or_live("requests/token_create_boot", book);
    let boot = token_of(&api.json(created, "POST", "/v1/tokens", &admin, Some(&body)));
    book.json(
        "responses/whoami_host",
        api.json(ok, "GET", "/v1/whoami", &host_token, None),
    );
    book.json(
        "responses/whoami_boot",
        api.json(ok, "GET", "/v1/whoami", &boot, None),
    );

    // A capture's uploads and commits.
    let (pack, bytes, _) = server_util::a_pack();
    let put = |name: &str, body: Vec<u8>| {
        let resp = api
            .http
            .put(format!("{}/v1/hosts/{HOST}/files/{name}", s.url))
            .bearer_auth(&host_token)
            .body(body)
            .send()
            .unwrap();
        let st = resp.status();
        (
            st,
            serde_json::from_str::<Value>(&resp.text().unwrap()).unwrap(),
        )
    };
    let pack_path = format!("packs/{}/{pack}.pack", &pack[..2]);
    let (st, v) = put(&pack_path, bytes.clone());
    assert_eq!(st, created);
    book.json("responses/file_put_new", v);
    let (st, v) = put(&pack_path, bytes);
    assert_eq!(st, ok);
    book.json("responses/file_put_again", v);
    for (id, time) in [
        ("s1", "2025-06-01T06:00:00Z"),
        ("s2", "2025-06-02T06:00:00Z"),
        ("s3", "2025-06-03T06:00:00Z"),
    ] {
        let xml = example_manifest(HOST, id, time, MAC);
        let (st, v) = put(&format!("snapshots/{id}.xml"), xml.into_bytes());
        assert_eq!(st, created, "{v}");
        book.json("responses/snapshot_commit", v);
    }
    book.json(
        "responses/files_list",
        api.json(
            ok,
            "GET",
            "/v1/hosts/web1/files?prefix=snapshots/",
            &host_token,
            None,
        ),
    );
    book.json(
        "responses/snapshots",
        api.json(ok, "GET", "/v1/hosts/web1/snapshots", &host_token, None),
    );
    book.json(
        "responses/hosts",
        api.json(ok, "GET", "/v1/hosts", &admin, None),
    );
    let resp = api
        .http
        .get(format!(
            "{}/v1/hosts/{HOST}/manifest?at=2025-06-02T12:00:00Z",
            s.url
        ))
        .bearer_auth(&host_token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), ok);
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map_or(Value::Null, |v| v.to_str().unwrap().into())
    };
    book.json(
        "responses/manifest_headers",
        serde_json::json!({
            "content-type": header("content-type"),
            "x-rewind-snapshot": header("x-rewind-snapshot"),
        }),
    );

    // Identification before anything is armed.
    let identify = format!("/v1/identify?mac={MAC}");
    book.json(
        "responses/identify_idle",
        api.json(ok, "GET", &identify, &admin, None),
    );
    let other = token_of(&api.json(
        created,
        "POST",
        "/v1/tokens",
        &admin,
        Some(&serde_json::json!({"host": "other", "note": ""})),
    ));
    book.json(
        "responses/error_not_found",
        api.json(StatusCode::NOT_FOUND, "GET", &identify, &other, None),
    );
    // The client sees the status as a typed error, and reads the versions.
    let c = rewind::client::Client::new(&s.url, &other, &s.trust()).unwrap();
    let e = c.identify(&[MAC.to_string()]).unwrap_err();
    assert!(
        matches!(
            rewind::client::api_error(&e),
            Some(rewind::api::ApiError::NotFound(_))
        ),
        "{e:#}"
    );
    assert!(format!("{e:#}").contains("404 Not Found"), "{e:#}");
    assert_eq!(c.versions().unwrap(), rewind::api::Versions::this_build());
    book.json(
        "responses/error_forbidden",
        api.json(StatusCode::FORBIDDEN, "GET", "/v1/hosts", &host_token, None),
    );

    // Arm a recovery; the image identifies, boots, reads and reports.
    let body = read_fixture_or_live("requests/request_create_overrides", book);
    book.json(
        "responses/request_create",
        api.json(
            created,
            "POST",
            "/v1/hosts/web1/requests",
            &admin,
            Some(&body),
        ),
    );
    book.json(
        "responses/requests_armed",
        api.json(ok, "GET", "/v1/requests?host=web1", &admin, None),
    );
    book.json(
        "responses/identify_armed",
        api.json(ok, "GET", &identify, &boot, None),
    );
    let script = api
        .http
        .get(format!("{}/boot/ipxe?mac={MAC}&token={boot}", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    book.text(
        "boot_ipxe_armed.txt",
        &script.replace(&s.url, "http://SERVER"),
    );
    let from_script = script
        .split("rewind.token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    // The script carries the boot token (it only identifies); the image
    // claims the request with its machine identity for a recovery token.
    assert_eq!(from_script, boot);
    let body = read_fixture_or_live("requests/claim", book);
    let claimed = api.json(ok, "POST", "/v1/claim", &boot, Some(&body));
    let recovery = token_of(&claimed);
    book.json("responses/claim", claimed);
    book.json(
        "responses/whoami_recovery",
        api.json(ok, "GET", "/v1/whoami", &recovery, None),
    );
    let me = book.json(
        "responses/recovery",
        api.json(ok, "GET", "/v1/recovery", &recovery, None),
    );
    let _ = me;
    let id = api.json(ok, "GET", "/v1/recovery", &recovery, None)["id"]
        .as_str()
        .unwrap()
        .to_string();
    book.json(
        "responses/request_get",
        api.json(ok, "GET", &format!("/v1/requests/{id}"), &recovery, None),
    );
    let body = read_fixture_or_live("requests/recovery_progress", book);
    book.json(
        "responses/recovery_progress",
        api.json(ok, "POST", "/v1/recovery/progress", &recovery, Some(&body)),
    );
    book.json(
        "responses/requests_running",
        api.json(ok, "GET", "/v1/requests?host=web1", &admin, None),
    );
    let body = read_fixture_or_live("requests/recovery_result_ok", book);
    book.json(
        "responses/recovery_result",
        api.json(ok, "POST", "/v1/recovery/result", &recovery, Some(&body)),
    );
    book.json(
        "responses/error_unauthorized",
        api.json(
            StatusCode::UNAUTHORIZED,
            "GET",
            "/v1/recovery",
            &recovery,
            None,
        ),
    );
    let idle = api
        .http
        .get(format!("{}/boot/ipxe?mac={MAC}&token={boot}", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    book.text("boot_ipxe_exit.txt", &idle);

    // Cancel.
    let body = read_fixture_or_live("requests/request_create", book);
    let armed = api.json(
        created,
        "POST",
        "/v1/hosts/web1/requests",
        &admin,
        Some(&body),
    );
    let id = armed["request"]["id"].as_str().unwrap().to_string();
    book.json(
        "responses/request_cancel",
        api.json(ok, "DELETE", &format!("/v1/requests/{id}"), &admin, None),
    );
    book.json(
        "responses/error_conflict",
        api.json(
            StatusCode::CONFLICT,
            "DELETE",
            &format!("/v1/requests/{id}"),
            &admin,
            None,
        ),
    );
    book.json(
        "responses/requests_finished",
        api.json(ok, "GET", "/v1/requests", &admin, None),
    );

    // Operators.
    book.json(
        "responses/tokens_list",
        api.json(ok, "GET", "/v1/tokens", &admin, None),
    );
    let body = read_fixture_or_live("requests/forget", book);
    book.json(
        "responses/forget",
        api.json(ok, "POST", "/v1/forget", &admin, Some(&body)),
    );
    let body = read_fixture_or_live("requests/prune_host", book);
    book.json(
        "responses/prune",
        api.json(ok, "POST", "/v1/prune", &admin, Some(&body)),
    );
    book.json(
        "responses/stats",
        api.json(ok, "GET", "/v1/stats", &admin, None),
    );
    // No token needed.
    let (st, text) = api.call("GET", "/v1/version", "", None);
    assert_eq!(st, ok, "{text}");
    book.json("responses/version", serde_json::from_str(&text).unwrap());
}

/// A request body: the one the client just sent (in this run's book).
fn read_fixture_or_live(name: &str, book: &Book) -> Value {
    book.json
        .get(name)
        .cloned()
        .unwrap_or_else(|| read_fixture(name))
}

/// A fixture read as `T` and written again is the fixture: every field is
/// known to the type, with its name and type.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(name: &str) {
    let recorded = read_fixture(name);
    let typed: T = serde_json::from_value(recorded.clone()).unwrap_or_else(|e| {
        panic!(
            "{name} does not parse as {}: {e}",
            std::any::type_name::<T>()
        )
    });
    let again = serde_json::to_value(&typed).unwrap();
    assert_eq!(again, recorded, "{name} as {}", std::any::type_name::<T>());
}

#[test]
fn every_fixture_reads_as_its_api_type() {
    use rewind::api::*;
    round_trip::<ForgetRequest>("requests/forget");
    round_trip::<PruneRequest>("requests/prune");
    round_trip::<PruneRequest>("requests/prune_host");
    round_trip::<ProgressReport>("requests/recovery_progress");
    round_trip::<ResultReport>("requests/recovery_result_failed");
    round_trip::<ResultReport>("requests/recovery_result_ok");
    round_trip::<NewRequest>("requests/request_create");
    round_trip::<ClaimRequest>("requests/claim");
    round_trip::<Claimed>("responses/claim");
    round_trip::<NewRequest>("requests/request_create_overrides");
    round_trip::<NewToken>("requests/token_create_boot");
    round_trip::<NewToken>("requests/token_create_host");
    for e in ["conflict", "forbidden", "not_found", "unauthorized"] {
        round_trip::<ErrorBody>(&format!("responses/error_{e}"));
    }
    round_trip::<Stored>("responses/file_put_again");
    round_trip::<Stored>("responses/file_put_new");
    round_trip::<Stored>("responses/snapshot_commit");
    round_trip::<Vec<String>>("responses/files_list");
    round_trip::<ForgetAnswer>("responses/forget");
    round_trip::<Vec<HostSummary>>("responses/hosts");
    round_trip::<Identified>("responses/identify_armed");
    round_trip::<Identified>("responses/identify_idle");
    round_trip::<PruneAnswer>("responses/prune");
    for r in [
        "recovery",
        "recovery_progress",
        "recovery_result",
        "request_cancel",
        "request_get",
    ] {
        round_trip::<RecoveryRequest>(&format!("responses/{r}"));
    }
    round_trip::<CreatedRequest>("responses/request_create");
    for r in ["armed", "finished", "running"] {
        round_trip::<Vec<RecoveryRequest>>(&format!("responses/requests_{r}"));
    }
    round_trip::<Vec<SnapshotSummary>>("responses/snapshots");
    round_trip::<Stats>("responses/stats");
    round_trip::<CreatedToken>("responses/token_create");
    round_trip::<Vec<TokenInfo>>("responses/tokens_list");
    round_trip::<Versions>("responses/version");
    for w in ["admin", "boot", "host", "recovery"] {
        round_trip::<WhoAmI>(&format!("responses/whoami_{w}"));
    }
    // Every fixture is read above (but the manifest's headers, not JSON
    // of the API).
    let mut names = Vec::new();
    for sub in ["requests", "responses"] {
        for e in std::fs::read_dir(fixtures().join(sub)).unwrap() {
            names.push(format!(
                "{sub}/{}",
                e.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    let source = include_str!("api_fixtures.rs");
    for n in names {
        let n = n.trim_end_matches(".json");
        let base = n.rsplit('_').next().unwrap_or(n);
        assert!(
            source.contains(&format!("\"{n}\"")) || source.contains(&format!("\"{base}\"")),
            "fixture {n} is not read by every_fixture_reads_as_its_api_type"
        );
    }
    // The recovery image's request states and token kinds are the enums'.
    let running: Vec<RecoveryRequest> =
        serde_json::from_value(read_fixture("responses/requests_running")).unwrap();
    assert_eq!(running[0].state, RequestState::Running);
    let who: WhoAmI = serde_json::from_value(read_fixture("responses/whoami_recovery")).unwrap();
    assert_eq!(who.scope.kind(), TokenKind::Recovery);
}

#[test]
fn the_api_speaks_as_recorded() {
    let mut book = Book::default();
    client_bodies(&mut book);
    server_answers(&mut book);
    book.finish();
}
