//! Hardware (MAC) addresses: one spelling everywhere, lowercase with
//! colons, so that addresses read from sysfs, configuration files, the
//! manifest and a booting machine compare equal.

use std::fmt;
use std::str::FromStr;

/// A link-layer address in canonical form (`52:54:00:12:34:56`): 6 to 20
/// bytes (InfiniBand's are 20), lowercase hex pairs joined by colons.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(String);

impl Mac {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a text is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMac(pub String);

impl fmt::Display for BadMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed MAC address \"{}\" (expected 52:54:00:12:34:56)",
            self.0
        )
    }
}

impl std::error::Error for BadMac {}

impl FromStr for Mac {
    type Err = BadMac;

    /// Strict: colon-separated hex pairs, either case (stored lowercase).
    /// Text from configuration files goes through [`normalize`] first.
    fn from_str(s: &str) -> Result<Self, BadMac> {
        if is_mac(s) {
            Ok(Mac(s.to_ascii_lowercase()))
        } else {
            Err(BadMac(s.to_string()))
        }
    }
}

/// Whether `s` is colon-separated hex pairs, 6 to 20 of them, either case.
pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    (6..=20).contains(&parts.len())
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// The canonical spelling of an address read from sysfs or a
/// configuration file (lowercase, `-` → `:`); `None` for an empty or
/// all-zero address (lo, tun devices have no real one).
pub fn normalize(raw: &str) -> Option<String> {
    let mac = raw.trim().to_ascii_lowercase().replace('-', ":");
    if mac.is_empty() || mac.chars().all(|c| c == '0' || c == ':') {
        None
    } else {
        Some(mac)
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let m: Mac = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(m.as_str(), "52:54:00:ab:cd:01");
        assert_eq!(m, "52:54:00:ab:cd:01".parse().unwrap());
        assert!(
            "52-54-00-ab-cd-01".parse::<Mac>().is_err(),
            "normalize() first"
        );
        assert!("".parse::<Mac>().is_err());
        assert!("52:54:00:ab:cd".parse::<Mac>().is_err());
        assert!("52:54:00:ab:cd:0g".parse::<Mac>().is_err());
        let ib = ["80"; 20].join(":");
        assert!(ib.parse::<Mac>().is_ok());
        assert_eq!(
            "x".parse::<Mac>().unwrap_err().to_string(),
            "malformed MAC address \"x\" (expected 52:54:00:12:34:56)"
        );
    }

    #[test]
    fn normalize_drops_empty_and_zero() {
        assert_eq!(
            normalize(" 52-54-00-AB-CD-01\n").as_deref(),
            Some("52:54:00:ab:cd:01")
        );
        assert_eq!(normalize("00:00:00:00:00:00"), None);
        assert_eq!(normalize(""), None);
    }

    #[test]
    fn serde_refuses_malformed() {
        let m: Mac = serde_json::from_str("\"52:54:00:12:34:56\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"52:54:00:12:34:56\"");
        assert!(serde_json::from_str::<Mac>("\"nope\"").is_err());
    }
}
