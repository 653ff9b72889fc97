//! Prometheus metrics: the request-latency histograms the router feeds
//! ([`observe`]), and the text exposition format (version 0.0.4) of
//! everything `GET /metrics` shows, written by hand: a few gauges and one
//! histogram do not need a metrics crate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::Server;
use crate::api::{HostHealth, RequestState};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket (not cumulative), plus +Inf last.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

/// Request latencies by method and route (the route's pattern, so that a
/// host or a file name never becomes a label value of its own).
#[derive(Debug, Default)]
pub struct Latencies {
    by_route: Mutex<BTreeMap<(String, String), Histogram>>,
}

impl Latencies {
    pub fn observe(&self, method: &str, route: &str, secs: f64) {
        let mut map = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        let h = map
            .entry((method.to_string(), route.to_string()))
            .or_default();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        h.counts[i] += 1;
        h.sum += secs;
    }
}

/// Middleware: time every request into the server's [`Latencies`].
pub async fn observe(State(s): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    s.latencies
        .observe(&method, &route, started.elapsed().as_secs_f64());
    resp
}

/// One host's figures.
#[derive(Debug, Clone)]
pub struct HostFigures {
    pub health: HostHealth,
    pub stored_bytes: u64,
}

/// The server's figures.
#[derive(Debug, Clone, Default)]
pub struct ServerFigures {
    pub requests_by_state: BTreeMap<&'static str, usize>,
    pub storage_used_bytes: u64,
    pub storage_free_bytes: u64,
}

/// A label value, escaped as the format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Every recovery-request state, so that each series exists at zero.
pub const REQUEST_STATES: [RequestState; 5] = [
    RequestState::Armed,
    RequestState::Running,
    RequestState::Succeeded,
    RequestState::Failed,
    RequestState::Cancelled,
];

/// The exposition text.
pub fn render(hosts: &[HostFigures], server: &ServerFigures, latencies: &Latencies) -> String {
    let mut out = String::new();
    let per_host = |out: &mut String,
                    name: &str,
                    kind: &str,
                    help: &str,
                    value: &dyn Fn(&HostFigures) -> Option<String>| {
        header(out, name, kind, help);
        for h in hosts {
            if let Some(v) = value(h) {
                let _ = writeln!(out, "{name}{{host=\"{}\"}} {v}", label(&h.health.host));
            }
        }
    };
    per_host(
        &mut out,
        "rewind_host_recoverable",
        "gauge",
        "1 if the host is recoverable now (a good, recent, verified snapshot), else 0.",
        &|h| Some(u8::from(h.health.recoverable).to_string()),
    );
    per_host(
        &mut out,
        "rewind_host_snapshots",
        "gauge",
        "Snapshots the host has on the server.",
        &|h| Some(h.health.snapshots.to_string()),
    );
    per_host(
        &mut out,
        "rewind_host_stored_bytes",
        "gauge",
        "Bytes the host's repository takes on the server's disk.",
        &|h| Some(h.stored_bytes.to_string()),
    );
    per_host(
        &mut out,
        "rewind_host_last_good_capture_timestamp_seconds",
        "gauge",
        "Time of the host's newest snapshot that no report marks partial.",
        &|h| {
            h.health
                .last_good
                .as_deref()
                .and_then(crate::time::parse_rfc3339)
                .map(|t| t.to_string())
        },
    );
    per_host(
        &mut out,
        "rewind_host_last_capture_timestamp_seconds",
        "gauge",
        "Time the host's last capture report arrived.",
        &|h| {
            h.health
                .last_capture
                .as_ref()
                .and_then(|c| crate::time::parse_rfc3339(&c.received))
                .map(|t| t.to_string())
        },
    );
    let name = "rewind_host_last_capture_result";
    header(
        &mut out,
        name,
        "gauge",
        "1 for the result of the host's last capture report (success, partial, failed).",
    );
    for h in hosts {
        let Some(c) = &h.health.last_capture else {
            continue;
        };
        for result in ["success", "partial", "failed"] {
            let v = u8::from(c.report.outcome.as_str() == result);
            let _ = writeln!(
                out,
                "{name}{{host=\"{}\",result=\"{result}\"}} {v}",
                label(&h.health.host)
            );
        }
    }
    per_host(
        &mut out,
        "rewind_host_last_capture_duration_seconds",
        "gauge",
        "How long the host's last reported capture took.",
        &|h| {
            h.health
                .last_capture
                .as_ref()
                .map(|c| c.report.duration_secs.to_string())
        },
    );
    per_host(
        &mut out,
        "rewind_host_verify_damaged",
        "gauge",
        "Damage lines the last server-side verification found (0: clean).",
        &|h| {
            h.health
                .last_verify
                .as_ref()
                .map(|v| (v.damage.len() + v.affected.len()).to_string())
        },
    );

    let name = "rewind_recovery_requests";
    header(
        &mut out,
        name,
        "gauge",
        "Recovery requests in the catalog, by state.",
    );
    for st in REQUEST_STATES {
        let n = server
            .requests_by_state
            .get(st.as_str())
            .copied()
            .unwrap_or(0);
        let _ = writeln!(out, "{name}{{state=\"{}\"}} {n}", st.as_str());
    }
    header(
        &mut out,
        "rewind_storage_used_bytes",
        "gauge",
        "Bytes the hosts' repositories take.",
    );
    let _ = writeln!(
        out,
        "rewind_storage_used_bytes {}",
        server.storage_used_bytes
    );
    header(
        &mut out,
        "rewind_storage_free_bytes",
        "gauge",
        "Bytes free for the server on its data filesystem.",
    );
    let _ = writeln!(
        out,
        "rewind_storage_free_bytes {}",
        server.storage_free_bytes
    );

    let name = "rewind_http_request_duration_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Time to answer HTTP requests, by method and route.",
    );
    let map = latencies
        .by_route
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for ((method, route), h) in &map {
        let labels = format!("method=\"{}\",route=\"{}\"", label(method), label(route));
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += h.counts[i];
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += h.counts[BUCKETS.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let l = Latencies::default();
        l.observe("GET", "/v1/hosts", 0.002);
        l.observe("GET", "/v1/hosts", 0.2);
        l.observe("GET", "/v1/hosts", 100.0);
        let text = render(&[], &ServerFigures::default(), &l);
        assert!(text.contains(
            "rewind_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/hosts\",le=\"0.0025\"} 1"
        ));
        assert!(text.contains(
            "rewind_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/hosts\",le=\"30\"} 2"
        ));
        assert!(text.contains(
            "rewind_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/hosts\"} 3"
        ));
        assert!(text.contains("rewind_recovery_requests{state=\"armed\"} 0"));
        assert_eq!(label("a\"b\\"), "a\\\"b\\\\");
    }
}
