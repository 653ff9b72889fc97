//! Pins: how a client that trusts no CA (the recovery image has no
//! certificate store) knows the server, as SSH knows a host key.
//!
//! A pin is the SHA-256 of the certificate's public key — its DER
//! SubjectPublicKeyInfo, as HPKP and curl's `--pinnedpubkey` hash it —
//! written in standard base64 (44 characters; `sha256//BASE64`, curl's
//! form, is accepted too). Pinning the key rather than the certificate
//! means a certificate renewed with the same key (a new expiry date, new
//! names) keeps every boot medium in a drawer working. A client accepts a
//! *set* of pins (`--pin A --pin B`, `rewind.pin=A,B`): a new key is
//! rolled in by adding its pin to the media before the server switches.
//!
//! The old form — 64 hex digits, the SHA-256 of the whole certificate — is
//! still accepted for this release, with a warning (media made before the
//! change keep working while they are remade); it breaks at the first
//! renewal, which is why it goes. The two forms never collide: one is 44
//! base64 characters, the other 64 hex digits.
//!
//! To compute a pin of any certificate by hand: `openssl x509 -in cert.pem
//! -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256
//! -binary | base64`.

use base64::Engine as _;
use rustls::pki_types::CertificateDer;

/// One trusted identity of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pin {
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (the current form).
    PublicKey([u8; 32]),
    /// SHA-256 of the whole certificate (the old form, deprecated).
    Certificate([u8; 32]),
}

impl Pin {
    /// Read one pin: base64 (or `sha256//BASE64`) of a public key's
    /// SHA-256, or the old 64 hex digits of a certificate's
    /// (`AB:CD:...` and `sha256:` accepted).
    pub fn parse(text: &str) -> Result<Pin, String> {
        let t = text.trim();
        if let Some(digest) = t
            .strip_prefix("sha256//")
            .or(Some(t))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
        {
            return Ok(Pin::PublicKey(digest));
        }
        let hex: String = t
            .strip_prefix("sha256:")
            .unwrap_or(t)
            .chars()
            .filter(|c| *c != ':')
            .collect();
        if hex.len() == 64
            && let Some(digest) = crate::util::hex::decode(&hex.to_ascii_lowercase())
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
        {
            return Ok(Pin::Certificate(digest));
        }
        Err(format!(
            "pin {text:?}: give the server's public-key pin (44 base64 characters, which \
             `rewind serve` prints), or several separated by commas"
        ))
    }

    /// The pin of a certificate's public key.
    pub fn of_public_key(cert: &CertificateDer<'_>) -> Result<Pin, String> {
        let parsed = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| format!("cannot read the certificate: {e:?}"))?;
        let spki = parsed.subject_public_key_info();
        Ok(Pin::PublicKey(sha256(spki.as_ref())))
    }

    /// Whether `cert` is the one this pin names.
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        match self {
            Pin::PublicKey(_) => Pin::of_public_key(cert).is_ok_and(|p| p == *self),
            Pin::Certificate(digest) => sha256(cert.as_ref()) == *digest,
        }
    }

    /// The deprecated whole-certificate form.
    pub fn is_certificate_hash(&self) -> bool {
        matches!(self, Pin::Certificate(_))
    }
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pin::PublicKey(d) => f.write_str(&base64::engine::general_purpose::STANDARD.encode(d)),
            Pin::Certificate(d) => f.write_str(&crate::util::hex::encode(d)),
        }
    }
}

/// A set of pins: comma-separated, and each argument of a repeated
/// option (`--pin A --pin B,C`). Empty parts are skipped.
pub fn parse_pins<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Pin>, String> {
    let mut pins = Vec::new();
    for text in texts {
        for part in text.as_ref().split(',').filter(|p| !p.trim().is_empty()) {
            let pin = Pin::parse(part)?;
            if !pins.contains(&pin) {
                pins.push(pin);
            }
        }
    }
    Ok(pins)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_key(key: &rcgen::KeyPair, name: &str) -> CertificateDer<'static> {
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.self_signed(key).unwrap().der().clone()
    }

    #[test]
    fn a_public_key_pin_survives_a_renewal_with_the_same_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let first = cert_with_key(&key, "backup.example");
        let renewed = cert_with_key(&key, "backup2.example");
        assert_ne!(first, renewed);
        let pin = Pin::of_public_key(&first).unwrap();
        assert!(pin.matches(&first));
        assert!(pin.matches(&renewed), "same key, new certificate");
        let other = cert_with_key(&rcgen::KeyPair::generate().unwrap(), "backup.example");
        assert!(!pin.matches(&other), "another key");
        // The old whole-certificate pin breaks at the renewal.
        let old = Pin::Certificate(sha256(first.as_ref()));
        assert!(old.matches(&first));
        assert!(!old.matches(&renewed));
    }

    #[test]
    fn pins_are_read_in_both_forms_and_as_sets() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = cert_with_key(&key, "x");
        let pin = Pin::of_public_key(&cert).unwrap();
        let text = pin.to_string();
        assert_eq!(text.len(), 44);
        assert_eq!(Pin::parse(&text), Ok(pin));
        assert_eq!(Pin::parse(&format!("sha256//{text}")), Ok(pin));
        let hex = "ab".repeat(32);
        let old = Pin::parse(&hex).unwrap();
        assert!(old.is_certificate_hash());
        assert_eq!(old.to_string(), hex);
        let colons: Vec<&str> = (0..32).map(|_| "AB").collect();
        assert_eq!(Pin::parse(&colons.join(":")), Ok(old));
        assert_eq!(Pin::parse(&format!("sha256:{hex}")), Ok(old));
        assert!(Pin::parse("abcd").is_err());
        assert!(Pin::parse("").is_err());
        let set = parse_pins(&[format!("{text},{hex}"), text.clone()]).unwrap();
        assert_eq!(set, vec![pin, old]);
        assert!(parse_pins(&[format!("{text},nope")]).is_err());
    }
}
