//! Netboot: the iPXE script of a machine (by its MAC addresses) and the
//! boot assets of DIR/boot/.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::hosts::{identify_machine, machine_of};
use crate::api::ApiError;
use crate::server::error::ApiResult;
use crate::server::extract::BootToken;
use crate::server::ipxe;

/// A script that boots the recovery image when exactly one live request
/// names this machine (by its MACs, and `uuid=`/`serial=` when iPXE sends
/// them); else one that exits (the firmware boots the local disk). The
/// script carries the boot token, which only identifies: the image claims
/// the request with its own identity (`POST /v1/claim`), so serving a
/// script never mints, and never revokes, a recovery token.
pub(super) async fn boot_script(
    State(s): State<Shared>,
    boot: BootToken,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let text = |body: String| {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    };
    let machine = machine_of(&q);
    if machine.macs.is_empty() {
        return Ok(text(ipxe::exit_script(
            "no MAC address given (chain .../boot/ipxe?mac=${net0/mac})",
        )));
    }
    let found = match identify_machine(&s, &machine) {
        Ok(found) => found,
        Err(ApiError::Conflict(why)) => return Ok(text(ipxe::exit_script(&why))),
        Err(e) => return Err(e),
    };
    let Some(found) = found else {
        return Ok(text(ipxe::exit_script(
            "this machine is not known to the recovery server",
        )));
    };
    let host = found.host;
    let Some(req) = found.request else {
        return Ok(text(ipxe::exit_script(&format!(
            "no recovery is armed for {host}"
        ))));
    };
    let base = s.base_url(&headers);
    let extra = std::fs::read_to_string(s.data.join("boot/cmdline")).unwrap_or_default();
    let kernel_url = format!("{base}/boot/vmlinuz?token={}", boot.token);
    let initrd_url = format!("{base}/boot/initrd.img?token={}", boot.token);
    let script = ipxe::recovery_script(&ipxe::BootParams {
        server: &base,
        token: &boot.token,
        host: &host,
        at: &req.snapshot_time,
        pin: s.fingerprint.as_deref(),
        kernel_url: &kernel_url,
        initrd_url: &initrd_url,
        extra: extra.lines().next().unwrap_or(""),
    })
    .ok_or_else(|| {
        ApiError::Internal(
            "a boot setting cannot go on a kernel command line (spaces in --public-url?)".into(),
        )
    })?;
    Ok(text(script))
}

pub(super) async fn boot_file(
    State(s): State<Shared>,
    _: BootToken,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    let served = file.clone();
    if file.starts_with('.') || file.contains('/') || file == "cmdline" {
        return Err(ApiError::BadRequest("not a boot asset name".into()));
    }
    let path = s.data.join("boot").join(&file);
    // Streamed: a 100 MiB initrd per booting machine is not read into memory.
    let (f, size) = s
        .blocking(move |_| {
            let f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ApiError::NotFound(format!(
                        "no boot asset {file} (put it in DIR/boot/)"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            let size = f.metadata()?.len();
            Ok((f, size))
        })
        .await?;
    // The recovery image carries the server's pins (src/server/tls.rs).
    if served == "initrd.img"
        && let Some(pins) = &s.fingerprint
    {
        let tail = crate::server::tls::pins_archive(size, pins);
        return Ok(super::files::stream_file_then(f, size, tail));
    }
    Ok(super::files::stream_file(f, size))
}
