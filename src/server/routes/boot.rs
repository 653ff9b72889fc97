//! Netboot: the iPXE script of a machine (by its MAC addresses) and the
//! boot assets of DIR/boot/, on the API listener and on the plain-HTTP
//! boot listener (`serve --boot-http`); the GRUB script the TFTP listener
//! serves (super::super::tftp) for the Secure Boot chain.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::hosts::{identify_machine, machine_of};
use crate::api::ApiError;
use crate::server::error::ApiResult;
use crate::server::extract::BootToken;
use crate::server::{grub, ipxe};

/// The boot listener (`serve --boot-http`): plain HTTP for firmware and
/// iPXE, which cannot pin a key. It serves the boot scripts and assets
/// only, to the boot token only; the scripts it writes point the image at
/// the API (`https://` on `api_port`, or `--public-url`).
#[derive(Clone, Copy, Debug)]
pub struct BootListener {
    /// The port of the API listener.
    pub api_port: u16,
    /// This listener's own port (a client's Host header may leave it out).
    pub port: u16,
}

/// The host part of a Host header (`backup:8080`, `[::1]:80`, `backup`).
fn host_only(host_header: &str) -> &str {
    match host_header.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|c| c.is_ascii_digit()) && !h.is_empty() => {
            if h.starts_with('[') || !h.contains(':') {
                h
            } else {
                host_header
            }
        }
        _ => host_header,
    }
}

/// Where the image talks to the server (`rewind.server=`), and where the
/// boot assets are fetched (a base URL): on the API listener both are the
/// API; on the boot listener the assets are its own plain-HTTP address and
/// the image is sent to the TLS API.
struct BootUrls {
    api: String,
    assets: String,
}

fn boot_urls(s: &Shared, headers: &HeaderMap, listener: Option<&BootListener>) -> BootUrls {
    let Some(l) = listener else {
        let api = s.base_url(headers);
        return BootUrls {
            assets: api.clone(),
            api,
        };
    };
    let host = host_only(
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost"),
    );
    let api = s.public_url.clone().unwrap_or_else(|| {
        let scheme = if s.fingerprint.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}:{}", l.api_port)
    });
    let assets = if l.port == 80 {
        format!("http://{host}")
    } else {
        format!("http://{host}:{}", l.port)
    };
    BootUrls { api, assets }
}

/// What a booting machine is to boot: the recovery of `host` at `at`, or
/// nothing (`Err(why)`: the script says why and exits).
fn what_to_boot(
    s: &Shared,
    q: &HashMap<String, String>,
) -> ApiResult<Result<(String, String), String>> {
    let machine = machine_of(q);
    if machine.macs.is_empty() {
        return Ok(Err(
            "no MAC address given (chain .../boot/ipxe?mac=${net0/mac})".into(),
        ));
    }
    let found = match identify_machine(s, &machine) {
        Ok(found) => found,
        Err(ApiError::Conflict(why)) => return Ok(Err(why)),
        Err(e) => return Err(e),
    };
    let Some(found) = found else {
        return Ok(Err(
            "this machine is not known to the recovery server".into()
        ));
    };
    let host = found.host;
    match found.request {
        Some(req) => Ok(Ok((host, req.snapshot_time))),
        None => Ok(Err(format!("no recovery is armed for {host}"))),
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn unusable_setting() -> ApiError {
    ApiError::Internal(
        "a boot setting cannot go on a kernel command line (spaces in --public-url?)".into(),
    )
}

/// A script that boots the recovery image when exactly one live request
/// names this machine (by its MACs, and `uuid=`/`serial=` when iPXE sends
/// them); else one that exits (the firmware boots the local disk). The
/// script carries the boot token, which only identifies: the image claims
/// the request with its own identity (`POST /v1/claim`), so serving a
/// script never mints, and never revokes, a recovery token.
pub(super) async fn boot_script(
    State(s): State<Shared>,
    listener: Option<Extension<BootListener>>,
    boot: BootToken,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (host, at) = match what_to_boot(&s, &q)? {
        Ok(found) => found,
        Err(why) => return Ok(text(ipxe::exit_script(&why))),
    };
    let urls = boot_urls(&s, &headers, listener.as_deref());
    let assets = &urls.assets;
    let extra = std::fs::read_to_string(s.data.join("boot/cmdline")).unwrap_or_default();
    let kernel_url = format!("{assets}/boot/vmlinuz?token={}", boot.token);
    let initrd_url = format!("{assets}/boot/initrd.img?token={}", boot.token);
    let params = ipxe::BootParams {
        server: &urls.api,
        token: &boot.token,
        host: &host,
        at: &at,
        pin: s.fingerprint.as_deref(),
        kernel_url: &kernel_url,
        initrd_url: &initrd_url,
        extra: extra.lines().next().unwrap_or(""),
    };
    let script = match signed_image(&s.data) {
        Signed::No => ipxe::recovery_script(&params),
        Signed::Half { missing } => {
            return Ok(text(ipxe::exit_script(&format!(
                "refusing to boot a half-signed image: DIR/boot/{missing} is missing \
                 (scripts/build-image --sign makes both signatures)"
            ))));
        }
        Signed::Yes => {
            let kernel_sig_url = format!("{assets}/boot/{KERNEL_SIG}?token={}", boot.token);
            let initrd_sig_url = format!("{assets}/boot/{INITRD_SIG}?token={}", boot.token);
            ipxe::verified_recovery_script(
                &params,
                &ipxe::Signatures {
                    kernel_sig_url: &kernel_sig_url,
                    initrd_sig_url: &initrd_sig_url,
                },
            )
        }
    }
    .ok_or_else(unusable_setting)?;
    Ok(text(script))
}

/// The detached signatures of a signed image (`scripts/build-image
/// --sign`): CMS, DER, as iPXE's `imgverify` reads them, served from
/// DIR/boot/ like the files they sign (the same route, the same token).
const KERNEL_SIG: &str = "vmlinuz.sig";
const INITRD_SIG: &str = "initrd.img.sig";

/// Whether the image in DIR/boot/ is signed. Decided by the signatures'
/// presence, not by a `serve` option: the server holds no signing key, so
/// the files are the operator's act of signing, and an option could only
/// disagree with them. Half a signature set is a mistake, and refused.
#[derive(Debug, PartialEq, Eq)]
enum Signed {
    No,
    Yes,
    Half { missing: &'static str },
}

fn signed_image(data: &std::path::Path) -> Signed {
    let boot = data.join("boot");
    match (
        boot.join(KERNEL_SIG).is_file(),
        boot.join(INITRD_SIG).is_file(),
    ) {
        (false, false) => Signed::No,
        (true, true) => Signed::Yes,
        (true, false) => Signed::Half {
            missing: INITRD_SIG,
        },
        (false, true) => Signed::Half {
            missing: KERNEL_SIG,
        },
    }
}

/// The pins the server appends to boot file `name` as it serves it (HTTP
/// and TFTP alike): to the initrd, when the server has pins — unless the
/// initrd is signed. A signed initrd is served byte for byte, or its
/// signature would not verify; its pins were built into it before it was
/// signed (`scripts/build-image --pin ... --sign ...`).
pub(crate) fn pins_to_append<'a>(
    data: &std::path::Path,
    name: &str,
    pins: Option<&'a str>,
) -> Option<&'a str> {
    if name != "initrd.img" || data.join("boot").join(INITRD_SIG).is_file() {
        return None;
    }
    pins
}

/// The GRUB script of a machine for the TFTP listener
/// (`rewind/grub?mac=...&uuid=...`): as [`boot_script`], in GRUB's
/// language, with the kernel and initrd from the same TFTP server and the
/// image sent to `api` (the TLS API). It asks no token (TFTP has none):
/// the image's `rewind.token=` comes from `DIR/boot/cmdline`.
pub(crate) fn grub_script(s: &Shared, q: &HashMap<String, String>, api: &str) -> ApiResult<String> {
    let (host, at) = match what_to_boot(s, q)? {
        Ok(found) => found,
        Err(why) => return Ok(grub::exit_script(&why)),
    };
    let extra = std::fs::read_to_string(s.data.join("boot/cmdline")).unwrap_or_default();
    grub::recovery_script(&ipxe::BootParams {
        server: api,
        token: "",
        host: &host,
        at: &at,
        pin: s.fingerprint.as_deref(),
        kernel_url: "/vmlinuz",
        initrd_url: "/initrd.img",
        extra: extra.lines().next().unwrap_or(""),
    })
    .ok_or_else(unusable_setting)
}

/// A boot asset's name as `/boot/{file}` takes it: a plain file name of
/// DIR/boot/, never `cmdline` or a hidden file.
pub(crate) fn asset_name_ok(file: &str) -> bool {
    !(file.is_empty() || file.starts_with('.') || file.contains('/') || file == "cmdline")
}

pub(super) async fn boot_file(
    State(s): State<Shared>,
    _: BootToken,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    let served = file.clone();
    if !asset_name_ok(&file) {
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
    if let Some(pins) = pins_to_append(&s.data, &served, s.fingerprint.as_deref()) {
        let tail = crate::server::tls::pins_archive(size, pins);
        return Ok(super::files::stream_file_then(f, size, tail));
    }
    Ok(super::files::stream_file(f, size))
}
