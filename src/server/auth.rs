//! Bearer tokens: `rwd_<id>_<secret>`. The server keeps, per token, its id,
//! its scope, a random salt and BLAKE3(salt ‖ secret); never the secret.
//! Tokens are 256 random bits, so a fast salted hash is enough (a slow KDF
//! protects guessable passwords, not random keys); the id makes the lookup
//! one hash, and comparing `blake3::Hash` values is constant-time.

use serde::{Deserialize, Serialize};

pub use crate::api::Scope;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub scope: Scope,
    pub salt: String,
    pub hash: String,
    pub created: String,
    #[serde(default)]
    pub note: String,
    /// A recovery token minted by a claim (bound to the claiming machine;
    /// reads data and reports). The request's own token, printed when it is
    /// armed, is not: it may only read its request and claim it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claimed: bool,
}

/// What a request needs.
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    Admin,
    /// Read a host's repository, snapshots and manifests.
    Read(&'a str),
    /// Upload to a host's repository.
    Write(&'a str),
    /// Boot scripts and identification.
    Boot,
}

/// Whether `scope` grants `access`. Recovery tokens are checked for being
/// active before this.
pub fn allows(scope: &Scope, access: Access<'_>) -> bool {
    match (scope, access) {
        (Scope::Admin, _) => true,
        (Scope::Host { host }, Access::Read(h) | Access::Write(h)) => host == h,
        (Scope::Recovery { host, .. }, Access::Read(h)) => host == h,
        (Scope::Boot, Access::Boot) => true,
        _ => false,
    }
}

pub fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random generator failed");
    crate::util::hex::encode(&buf)
}

fn hash(salt: &str, secret: &str) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"rewind token v1\0");
    h.update(salt.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    h.finalize()
}

/// A new token: the string to hand out once, and the record to keep.
pub fn generate(scope: Scope, note: &str) -> (String, TokenRecord) {
    let id = random_hex(8);
    let secret = random_hex(32);
    let salt = random_hex(16);
    let record = TokenRecord {
        hash: hash(&salt, &secret).to_hex().to_string(),
        id: id.clone(),
        scope,
        salt,
        created: crate::time::now_utc(),
        note: note.to_string(),
        claimed: false,
    };
    (format!("rwd_{id}_{secret}"), record)
}

/// The id and secret of a token string.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("rwd_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_hexdigit());
    (hex(id, 16) && hex(secret, 64)).then_some((id, secret))
}

/// Find the record a token string matches.
pub fn verify<'a>(records: &'a [TokenRecord], token: &str) -> Option<&'a TokenRecord> {
    let (id, secret) = parse(token)?;
    let rec = records.iter().find(|r| r.id == id)?;
    let expected = blake3::Hash::from_hex(&rec.hash).ok()?;
    // blake3::Hash's equality is constant-time.
    (hash(&rec.salt, secret) == expected).then_some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_are_not_stored() {
        let (token, rec) = generate(Scope::Admin, "");
        assert!(!serde_json::to_string(&rec).unwrap().contains(&token[21..]));
        let records = vec![rec];
        assert!(verify(&records, &token).is_some());
        let mut wrong = token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert!(verify(&records, &wrong).is_none());
        assert!(verify(&records, "rwd_x_y").is_none());
        assert!(verify(&records, "").is_none());
    }

    #[test]
    fn host_tokens_are_scoped_to_their_host() {
        let a = Scope::Host { host: "a".into() };
        assert!(allows(&a, Access::Read("a")));
        assert!(allows(&a, Access::Write("a")));
        assert!(!allows(&a, Access::Read("b")));
        assert!(!allows(&a, Access::Write("b")));
        assert!(!allows(&a, Access::Admin));
        assert!(!allows(&a, Access::Boot));
        let r = Scope::Recovery {
            host: "a".into(),
            request: "r".into(),
        };
        assert!(allows(&r, Access::Read("a")));
        assert!(!allows(&r, Access::Write("a")), "recovery tokens only read");
        assert!(!allows(&r, Access::Read("b")));
        assert!(allows(&Scope::Boot, Access::Boot));
        assert!(!allows(&Scope::Boot, Access::Read("a")));
        assert!(allows(&Scope::Admin, Access::Write("b")));
    }
}
