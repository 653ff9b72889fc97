//! The listeners: TCP (and TLS) connections served by the router, one task
//! each, at most `--max-connections` at once (the next wait in the
//! kernel's backlog), with timeouts for slow handshakes and headers; and,
//! with `--boot-http`, a plain-HTTP listener for the boot files only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Server;
use super::routes::{BootListener, boot_router, router};

/// The API on `listen` (TLS unless `tls` is `None`), and with `boot_http`
/// the plain-HTTP boot listener beside it (boot scripts and assets only).
pub async fn run(
    server: Arc<Server>,
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    boot_http: Option<SocketAddr>,
    boot_tftp: Option<SocketAddr>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let boot = match boot_http {
        Some(boot_addr) => {
            let l = tokio::net::TcpListener::bind(boot_addr)
                .await
                .with_context(|| format!("--boot-http: cannot listen on {boot_addr}"))?;
            Some(l)
        }
        None => None,
    };
    let connections = Arc::new(tokio::sync::Semaphore::new(server.max_connections));
    use std::io::Write;
    if let Some(tftp_addr) = boot_tftp {
        // Where the GRUB scripts send the image: TFTP has no Host header.
        let api = match &server.public_url {
            Some(u) => u.clone(),
            None if !tftp_addr.ip().is_unspecified() => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                format!(
                    "{scheme}://{}",
                    SocketAddr::new(tftp_addr.ip(), addr.port())
                )
            }
            None => anyhow::bail!(
                "--boot-tftp {tftp_addr}: give --public-url (the API's URL as booting machines \
                 reach it), or listen on a specific address"
            ),
        };
        let socket = super::tftp::bind(tftp_addr).await?;
        println!(
            "rewind: TFTP listener (boot files, GRUB scripts) on {}; its scripts send the image to {api}",
            socket.local_addr()?
        );
        tokio::spawn(super::tftp::run(server.clone(), socket, api));
    }
    if let Some(l) = boot {
        let boot_addr = l.local_addr()?;
        println!("rewind: boot listener (plain HTTP, /boot/ only) on http://{boot_addr}");
        let app = boot_router(
            server.clone(),
            BootListener {
                api_port: addr.port(),
                port: boot_addr.port(),
            },
        );
        tokio::spawn(accept_loop(l, app, None, connections.clone()));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("rewind: listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();
    let app = router(server);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    accept_loop(listener, app, acceptor, connections).await;
    Ok(())
}

/// Serve each connection of `listener` in its own task, at most as many at
/// once as `connections` has permits (shared by every listener).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    connections: Arc<tokio::sync::Semaphore>,
) {
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                log_line!("rewind: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            let result = match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                .await
                        }
                        Ok(Err(e)) => {
                            log_line!("rewind: TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result
                && !e.is_incomplete_message()
            {
                log_line!("rewind: connection from {peer}: {e}");
            }
        });
    }
}
