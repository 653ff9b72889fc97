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

/// What the server appends to the initrd it serves (`/boot/initrd.img`):
/// a cpio archive (newc) holding `etc/rewind/pins`, the pins one a line,
/// after zeros that align it to 4 bytes (`served_len`: the initrd's
/// length). The kernel unpacks concatenated archives in order, so the
/// image finds the pins in `init::cmdline::PINS_FILE` whatever its kernel
/// command line says: the command line is not their only carrier.
pub fn pins_archive(served_len: u64, pins: &str) -> Vec<u8> {
    let mut out = vec![0u8; ((4 - served_len % 4) % 4) as usize];
    let body: String = pins
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| format!("{p}\n"))
        .collect();
    let entries: [(&str, u32, &[u8]); 3] = [
        ("etc", 0o040755, b""),
        ("etc/rewind", 0o040755, b""),
        ("etc/rewind/pins", 0o100644, body.as_bytes()),
    ];
    let mut ino = 0x7277_0000u32;
    for (name, mode, data) in entries {
        ino += 1;
        cpio_entry(&mut out, ino, mode, name, data);
    }
    cpio_entry(&mut out, 0, 0, "TRAILER!!!", b"");
    out
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8]) {
    let nlink = if mode & 0o040000 != 0 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    let start = out.len();
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archive unpacks with cpio(1) to the pins, one a line, and
    /// starts 4-byte aligned after an initrd of any length.
    #[test]
    fn the_pins_archive_unpacks() {
        for len in 0..4u64 {
            let a = pins_archive(len, "AAAA=,BBBB=");
            assert_eq!((len + a.len() as u64) % 4, 0);
            assert!(a[..((4 - len % 4) % 4) as usize].iter().all(|b| *b == 0));
        }
        let a = pins_archive(0, "AAAA=,BBBB=");
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-id", "--quiet"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&a).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/rewind/pins")).unwrap(),
            "AAAA=\nBBBB=\n"
        );
    }
}
