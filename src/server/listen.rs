//! The listener: TCP (and TLS) connections served by the router, one task
//! each, at most `--max-connections` at once (the next wait in the
//! kernel's backlog), with timeouts for slow handshakes and headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Server;
use super::routes::router;

pub async fn run(
    server: Arc<Server>,
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("rewind: listening on {scheme}://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let connections = Arc::new(tokio::sync::Semaphore::new(server.max_connections));
    let app = router(server);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return Ok(());
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
