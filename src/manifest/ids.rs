//! Identifiers the manifest holds, parsed once when it is read: a malformed
//! one is refused at its element path, and the code that uses them gets the
//! value (a `uuid::Uuid`, a `u32`, a `u8`), never text to parse again.
//!
//! Each keeps the exact text it was read from, so that a manifest is written
//! back byte for byte (case included); values made by rewind are written as
//! capture always wrote them (lowercase).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::tree::ChunkId;

/// A GPT GUID (disk, partition type, partition): 8-4-4-4-12 hex digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Guid {
    value: uuid::Uuid,
    text: String,
}

impl Guid {
    pub fn uuid(&self) -> uuid::Uuid {
        self.value
    }
}

impl FromStr for Guid {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let well_formed = s.len() == 36
            && s.bytes().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_hexdigit(),
            });
        match uuid::Uuid::parse_str(s) {
            Ok(value) if well_formed => Ok(Guid {
                value,
                text: s.to_string(),
            }),
            _ => Err(format!(
                "malformed GUID \"{s}\" (expected 8-4-4-4-12 hex digits)"
            )),
        }
    }
}

impl From<uuid::Uuid> for Guid {
    fn from(value: uuid::Uuid) -> Self {
        Guid {
            value,
            text: value.hyphenated().to_string(),
        }
    }
}

/// An MBR disk signature (the 4 bytes at offset 440): `0x` and 8 hex digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MbrSignature {
    value: u32,
    text: String,
}

impl MbrSignature {
    pub fn value(&self) -> u32 {
        self.value
    }
}

impl FromStr for MbrSignature {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        prefixed_hex(s, 8)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .map(|value| MbrSignature {
                value,
                text: s.to_string(),
            })
            .ok_or_else(|| format!("\"{s}\" is not 0x followed by 8 hex digits"))
    }
}

impl From<u32> for MbrSignature {
    fn from(value: u32) -> Self {
        MbrSignature {
            value,
            text: format!("0x{value:08x}"),
        }
    }
}

/// An MBR partition type byte: `0x` and 2 hex digits (`0x83`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MbrType {
    value: u8,
    text: String,
}

impl MbrType {
    pub fn value(&self) -> u8 {
        self.value
    }
}

impl FromStr for MbrType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        prefixed_hex(s, 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map(|value| MbrType {
                value,
                text: s.to_string(),
            })
            .ok_or_else(|| format!("\"{s}\" is not a type byte like 0x83"))
    }
}

impl From<u8> for MbrType {
    fn from(value: u8) -> Self {
        MbrType {
            value,
            text: format!("0x{value:02x}"),
        }
    }
}

/// A tree in the repository (BLAKE3 of its chunk list): 64 hex digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TreeId {
    value: ChunkId,
    text: String,
}

impl TreeId {
    pub fn id(&self) -> ChunkId {
        self.value
    }
}

impl FromStr for TreeId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ChunkId::from_hex(s)
            .map(|value| TreeId {
                value,
                text: s.to_string(),
            })
            .ok_or_else(|| format!("\"{s}\" is not a 64-hex-digit tree id"))
    }
}

impl From<ChunkId> for TreeId {
    fn from(value: ChunkId) -> Self {
        TreeId {
            value,
            text: value.to_hex(),
        }
    }
}

/// A point in time, RFC 3339 (`2026-11-25T06:00:00Z`; capture writes UTC).
/// Ordered as text, as snapshots always were: UTC times sort by their text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Timestamp {
    secs: i64,
    text: String,
}

impl Timestamp {
    /// Now, in UTC.
    pub fn now() -> Timestamp {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Timestamp::from_unix(secs)
    }

    pub fn from_unix(secs: i64) -> Timestamp {
        Timestamp {
            secs,
            text: crate::time::format_utc(secs),
        }
    }

    /// Seconds since the epoch.
    pub fn unix(&self) -> i64 {
        self.secs
    }
}

impl FromStr for Timestamp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::time::parse_rfc3339(s)
            .map(|secs| Timestamp {
                secs,
                text: s.to_string(),
            })
            .ok_or_else(|| format!("\"{s}\" is not an RFC 3339 time (2026-11-25T06:00:00Z)"))
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

/// The hex digits after `0x`, when there are exactly `digits` of them.
fn prefixed_hex(s: &str, digits: usize) -> Option<&str> {
    s.strip_prefix("0x")
        .filter(|h| h.len() == digits && h.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// What every identifier shares: its text (Display, `as_str`, Deref,
/// comparison with a `&str`), and serde as that text.
macro_rules! text_form {
    ($t:ty) => {
        impl $t {
            /// The text as the manifest holds it.
            pub fn as_str(&self) -> &str {
                &self.text
            }
        }

        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.text
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.text, f)
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.text == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.text == *other
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.text)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        /// Test fixtures write identifiers as literals.
        #[cfg(test)]
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                s.parse().unwrap_or_else(|e| panic!("{e}"))
            }
        }
    };
}

text_form!(Guid);
text_form!(MbrSignature);
text_form!(MbrType);
text_form!(TreeId);
text_form!(Timestamp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids() {
        let g: Guid = "A0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f".parse().unwrap();
        assert_eq!(g.to_string(), "A0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f");
        assert_eq!(
            Guid::from(g.uuid()).as_str(),
            "a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f"
        );
        for bad in [
            "",
            "not-a-guid",
            "a0b1c2d3e4f5460788192a3b4c5d6e7f",
            "{a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f}",
            "a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7g",
        ] {
            let e = bad.parse::<Guid>().unwrap_err();
            assert!(e.contains("malformed GUID"), "{e}");
        }
    }

    #[test]
    fn mbr_numbers() {
        let s: MbrSignature = "0x1A2b3c4d".parse().unwrap();
        assert_eq!((s.value(), s.as_str()), (0x1a2b_3c4d, "0x1A2b3c4d"));
        assert_eq!(MbrSignature::from(0x1a2b_3c4d).as_str(), "0x1a2b3c4d");
        assert!("1a2b3c4d".parse::<MbrSignature>().is_err());
        assert!("0x1a2b3c4".parse::<MbrSignature>().is_err());
        assert!("0X1a2b3c4d".parse::<MbrSignature>().is_err());
        let t: MbrType = "0x83".parse().unwrap();
        assert_eq!(t.value(), 0x83);
        assert_eq!(MbrType::from(5).as_str(), "0x05");
        assert!("83".parse::<MbrType>().is_err());
        assert!("0x083".parse::<MbrType>().is_err());
    }

    #[test]
    fn trees_and_times() {
        let hex = "5b8c1d0e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e";
        let t: TreeId = hex.parse().unwrap();
        assert_eq!(TreeId::from(t.id()), t);
        let e = "abc".parse::<TreeId>().unwrap_err();
        assert_eq!(e, "\"abc\" is not a 64-hex-digit tree id");

        let a: Timestamp = "2026-11-25T06:00:00Z".parse().unwrap();
        assert_eq!(Timestamp::from_unix(a.unix()), a);
        let b: Timestamp = "2026-11-25T07:00:00+01:00".parse().unwrap();
        assert_eq!(a.unix(), b.unix());
        assert_eq!(b.as_str(), "2026-11-25T07:00:00+01:00");
        assert!(a < b, "ordered as text");
        assert!("yesterday".parse::<Timestamp>().is_err());
        assert!(Timestamp::now().unix() > a.unix() - 86_400 * 365 * 100);
    }
}
