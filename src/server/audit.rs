//! The audit log: security-relevant actions (tokens created and revoked,
//! recoveries armed, cancelled and finished, forget, prune, verification),
//! one JSON line each, appended to DIR/audit/audit.jsonl and synced before
//! the answer leaves. The file is only ever opened for appending; no route
//! writes or removes it (`GET /v1/audit` reads it, `rewind audit` shows it),
//! and it lives outside every host's directory, so no upload reaches it.
//!
//! Who acted is the id of the bearer token of the request, which
//! [`actor_layer`] keeps for the handler's task: a handler records with
//! one line, `audit::record(&s, action, target, detail).await`, after its
//! change succeeded. A request claimed by a recovery image and an escrowed
//! key released are actions of later features: they record through the
//! same call.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use super::Server;
use super::auth;
use crate::api::{ApiError, AuditAction, AuditEvent};

tokio::task_local! {
    /// The token id of the request being handled.
    static ACTOR: String;
}

/// Serializes appends (a line is written whole, never interleaved).
static APPENDING: Mutex<()> = Mutex::new(());

pub fn log_path(data: &Path) -> PathBuf {
    data.join("audit").join("audit.jsonl")
}

/// Middleware: remember the bearer token's id (or `?token=`'s) for
/// [`record`]. Nothing is checked here: the extractors do that.
pub async fn actor_layer(req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
    });
    let actor = header
        .map(str::to_string)
        .or(query)
        .as_deref()
        .and_then(auth::parse)
        .map(|(id, _)| format!("token {id}"))
        .unwrap_or_else(|| "anonymous".into());
    ACTOR.scope(actor, next.run(req)).await
}

/// Append one event (on the blocking pool: it syncs). A failure to write
/// is reported on stderr: the action it records has already happened.
pub async fn record(s: &Arc<Server>, action: AuditAction, target: &str, detail: &str) {
    let actor = ACTOR
        .try_with(String::clone)
        .unwrap_or_else(|_| "server".into());
    let event = AuditEvent {
        time: crate::time::now_utc(),
        action,
        actor,
        target: target.to_string(),
        detail: detail.to_string(),
    };
    let data = s.data.clone();
    let written = tokio::task::spawn_blocking(move || append(&data, &event)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log_line!("rewind: warning: audit log: {e}"),
        Err(e) => log_line!("rewind: warning: audit log: {e}"),
    }
}

/// Append an event to the log, creating it if need be.
pub fn append(data: &Path, event: &AuditEvent) -> std::io::Result<()> {
    let path = log_path(data);
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let _appending = APPENDING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    f.write_all(&line)?;
    f.sync_data()
}

/// Every event, oldest first. A damaged line (a crash mid-write) is
/// skipped with a warning, never fatal: the lines after it still count.
pub fn read(data: &Path) -> Result<Vec<AuditEvent>, ApiError> {
    let path = log_path(data);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        match serde_json::from_str(line) {
            Ok(ev) => out.push(ev),
            Err(e) => log_line!("rewind: warning: {} line {}: {e}", path.display(), n + 1),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        let ev = |action, target: &str| AuditEvent {
            time: "2026-11-30T12:00:00Z".into(),
            action,
            actor: "token 0123456789abcdef".into(),
            target: target.into(),
            detail: String::new(),
        };
        append(dir.path(), &ev(AuditAction::TokenCreated, "t1")).unwrap();
        // A torn line from a crash does not hide what follows.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(log_path(dir.path()))
            .unwrap();
        f.write_all(b"{\"time\":\"2026-\n").unwrap();
        append(dir.path(), &ev(AuditAction::Prune, "*")).unwrap();
        let all = read(dir.path()).unwrap();
        assert_eq!(
            all,
            vec![
                ev(AuditAction::TokenCreated, "t1"),
                ev(AuditAction::Prune, "*")
            ]
        );
    }
}
