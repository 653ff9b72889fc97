//! TLS for the server (rustls with ring): certificate files, or a
//! self-signed pair generated once (rcgen) and kept in DIR/tls. The
//! certificate's SHA-256, which clients pin, is `crate::api::fingerprint`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

pub fn load_pem(cert: &Path, key: &Path) -> Result<Pair> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
    Ok((certs, key))
}

/// The pair in `dir` (cert.pem, key.pem), generated on first use.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<Pair> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if !cert.exists() || !key.exists() {
        let mut names = names.to_vec();
        if names.is_empty() {
            names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            if let Ok(uts) = nix::sys::utsname::uname() {
                names.push(uts.nodename().to_string_lossy().into_owned());
            }
        }
        let pair = rcgen::generate_simple_self_signed(names)
            .context("cannot generate a self-signed certificate")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // The key is private from its first byte: 0600 before it is written.
        crate::util::fs::write_atomic_with(&key, |f| {
            use std::io::Write;
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(pair.signing_key.serialize_pem().as_bytes())
        })
        .with_context(|| format!("cannot write {}", key.display()))?;
        crate::util::fs::write_atomic(&cert, pair.cert.pem().as_bytes())
            .with_context(|| format!("cannot write {}", cert.display()))?;
        log_line!(
            "rewind: generated a self-signed certificate in {}",
            cert.display()
        );
    }
    load_pem(&cert, &key)
}

pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the certificate and key do not make a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
