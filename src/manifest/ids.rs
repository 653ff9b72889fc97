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
}
