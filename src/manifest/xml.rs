//! The manifest's XML form: write, and read with validation.

use quick_xml::events::Event;
use serde::Serialize;

use super::model::{Manifest, SCHEMA_VERSION};
use super::validate::{ManifestError, Problem, validate};

/// Serialize a manifest to an indented XML document.
pub fn to_xml(manifest: &Manifest) -> Result<String, quick_xml::SeError> {
    let mut body = String::new();
    let mut ser = quick_xml::se::Serializer::with_root(&mut body, Some("manifest"))?;
    ser.indent(' ', 2);
    manifest.serialize(ser)?;
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}\n"
    ))
}

/// Parse and validate a manifest. Every error names the element path it is
/// about (`/manifest/disk[1]/gpt/partition[2]/@first-lba`).
pub fn from_xml(text: &str) -> Result<Manifest, ManifestError> {
    check_schema(text)?;
    let mut de = quick_xml::de::Deserializer::from_str(text);
    let manifest: Manifest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = xml_path(e.path());
        ManifestError::one(path, e.into_inner().to_string())
    })?;
    validate(&manifest)?;
    Ok(manifest)
}

/// Check that the document is well formed (with a line number on failure)
/// and look at the root element before anything else, so that a manifest
/// from a newer rewind is refused for its version, not for a field it added.
fn check_schema(text: &str) -> Result<(), ManifestError> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut schema_checked = false;
    loop {
        let event = reader.read_event().map_err(|e| {
            let pos = usize::try_from(reader.error_position()).unwrap_or(0);
            let line = text.as_bytes()[..pos.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            ManifestError::one("/", format!("not well-formed XML at line {line}: {e}"))
        })?;
        match event {
            Event::Start(e) | Event::Empty(e) if !schema_checked => {
                schema_checked = true;
                let qname = e.name();
                let name: &str = qname.as_ref();
                if name != "manifest" {
                    return Err(ManifestError::one(
                        "/",
                        format!("root element is <{name}>, expected <manifest>"),
                    ));
                }
                let schema = e
                    .try_get_attribute("schema")
                    .ok()
                    .flatten()
                    .map(|a| a.value.to_string());
                match schema {
                    None => {
                        return Err(ManifestError::one(
                            "/manifest/@schema",
                            "missing schema version",
                        ));
                    }
                    Some(v) if v.trim() == SCHEMA_VERSION.to_string() => {}
                    Some(v) => {
                        return Err(ManifestError::one(
                            "/manifest/@schema",
                            format!(
                                "unsupported schema version \"{v}\": this rewind ({}) reads schema {SCHEMA_VERSION}; use a rewind that matches the capture agent",
                                env!("CARGO_PKG_VERSION")
                            ),
                        ));
                    }
                }
            }
            Event::Eof if !schema_checked => {
                return Err(ManifestError::one("/", "no <manifest> element"));
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

/// serde's path (`disk[0].gpt.@disk-guid`) as an XPath-like element path.
fn xml_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::from("/manifest");
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{}]", index + 1)),
            Segment::Map { key } => {
                out.push('/');
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                out.push('/');
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    out
}

impl ManifestError {
    pub(crate) fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        ManifestError {
            problems: vec![Problem {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}
