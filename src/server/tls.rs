//! TLS for the server (rustls with ring), on by default: certificate files,
//! or a self-signed pair generated once (rcgen) and kept in DIR/tls (or
//! `--tls-dir`), reused at every start. Clients pin the public key
//! (`crate::api::Pin`), so the certificate can be made again from the same
//! key — delete cert.pem — without breaking any boot medium.

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

/// The pair in `dir` (cert.pem, key.pem), generated on first use; a
/// missing cert.pem beside a key.pem is made again from that key (a
/// renewal: the public-key pin does not change).
pub fn self_signed(dir: &Path, names: &[String]) -> Result<Pair> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if !key.exists() {
        let pair = rcgen::KeyPair::generate().context("cannot generate a key pair")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // The key is private from its first byte: 0600 before it is written.
        crate::util::fs::write_atomic_with(&key, |f| {
            use std::io::Write;
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(pair.serialize_pem().as_bytes())
        })
        .with_context(|| format!("cannot write {}", key.display()))?;
        // A new key needs a new certificate.
        let _ = std::fs::remove_file(&cert);
    }
    if !cert.exists() {
        let pem = std::fs::read_to_string(&key)
            .with_context(|| format!("cannot read {}", key.display()))?;
        let pair = rcgen::KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a private key rcgen can use", key.display()))?;
        let mut names = names.to_vec();
        if names.is_empty() {
            names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            if let Ok(uts) = nix::sys::utsname::uname() {
                names.push(uts.nodename().to_string_lossy().into_owned());
            }
        }
        let made = rcgen::CertificateParams::new(names)
            .and_then(|params| params.self_signed(&pair))
            .context("cannot make a self-signed certificate")?;
        crate::util::fs::write_atomic(&cert, made.pem().as_bytes())
            .with_context(|| format!("cannot write {}", cert.display()))?;
        log_line!(
            "rewind: made a self-signed certificate in {} (key {})",
            cert.display(),
            key.display()
        );
    }
    load_pem(&cert, &key)
}

/// The pin clients trust this server by: its certificate's public key.
pub fn public_key_pin(cert: &CertificateDer<'_>) -> Result<crate::api::Pin> {
    crate::api::Pin::of_public_key(cert)
        .map_err(|e| anyhow::anyhow!("the server's certificate: {e}"))
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
