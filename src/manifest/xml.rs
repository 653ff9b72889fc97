//! The manifest's XML form: write, and read with validation.

use std::fmt;

use quick_xml::events::Event;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::{
    BtrfsMember, Filesystem, FsData, FsType, Manifest, Mount, SCHEMA_VERSIONS, StackRef, Subvolume,
};
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
                    Some(v)
                        if SCHEMA_VERSIONS
                            .iter()
                            .any(|known| v.trim() == known.to_string()) => {}
                    Some(v) => {
                        let known: Vec<String> =
                            SCHEMA_VERSIONS.iter().map(u32::to_string).collect();
                        return Err(ManifestError::one(
                            "/manifest/@schema",
                            format!(
                                "unsupported schema version \"{v}\": this rewind ({}) reads schema {}; use a rewind that matches the capture agent",
                                env!("CARGO_PKG_VERSION"),
                                known.join(" and ")
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

// ---------------------------------------------------------------------------
// <filesystem>: its `type` decides which parameters element it may hold, so
// the model keeps both in one `FsType` and its serde form is written here.

/// Attributes and child elements of `<filesystem>`, in the order written.
pub(super) const FILESYSTEM_FIELDS: &[&str] = &[
    "@device",
    "@disk",
    "@partition",
    "@volume",
    "@type",
    "@uuid",
    "@label",
    "ext",
    "xfs",
    "vfat",
    "btrfs",
    "mount",
    "data",
    "member",
    "subvolume",
];

impl Serialize for Filesystem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn optional<S: SerializeStruct, T: Serialize>(
            st: &mut S,
            key: &'static str,
            value: &Option<T>,
        ) -> Result<(), S::Error> {
            match value {
                Some(v) => st.serialize_field(key, v),
                None => st.skip_field(key),
            }
        }
        let mut st = s.serialize_struct("Filesystem", FILESYSTEM_FIELDS.len())?;
        st.serialize_field("@device", &self.device)?;
        optional(&mut st, "@disk", &self.disk)?;
        optional(&mut st, "@partition", &self.partition)?;
        optional(&mut st, "@volume", &self.volume)?;
        st.serialize_field("@type", self.fs_type.name())?;
        st.serialize_field("@uuid", &self.uuid)?;
        optional(&mut st, "@label", &self.label)?;
        self.fs_type.serialize_params(&mut st)?;
        st.serialize_field("mount", &self.mounts)?;
        optional(&mut st, "data", &self.data)?;
        if self.members.is_empty() {
            st.skip_field("member")?;
        } else {
            st.serialize_field("member", &self.members)?;
        }
        if self.subvolumes.is_empty() {
            st.skip_field("subvolume")?;
        } else {
            st.serialize_field("subvolume", &self.subvolumes)?;
        }
        st.end()
    }
}

impl<'de> Deserialize<'de> for Filesystem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("Filesystem", FILESYSTEM_FIELDS, FilesystemVisitor)
    }
}

/// A key of `<filesystem>`; a parameters element by its name.
enum Field {
    Device,
    Disk,
    Partition,
    Volume,
    Type,
    Uuid,
    Label,
    Params(&'static str),
    Mount,
    Data,
    Member,
    Subvolume,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a <filesystem> attribute or element")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "@device" => Field::Device,
                    "@disk" => Field::Disk,
                    "@partition" => Field::Partition,
                    "@volume" => Field::Volume,
                    "@type" => Field::Type,
                    "@uuid" => Field::Uuid,
                    "@label" => Field::Label,
                    "mount" => Field::Mount,
                    "data" => Field::Data,
                    "member" => Field::Member,
                    "subvolume" => Field::Subvolume,
                    other => match crate::fs::PARAMS_ELEMENTS.iter().find(|e| **e == other) {
                        Some(element) => Field::Params(element),
                        None => return Err(E::unknown_field(other, FILESYSTEM_FIELDS)),
                    },
                })
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Field, E> {
                match std::str::from_utf8(v) {
                    Ok(s) => self.visit_str(s),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Bytes(v), &self)),
                }
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

/// `type`: a kind rewind recreates.
struct TypeName(FsType);

impl<'de> Deserialize<'de> for TypeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        FsType::from_name(&name).map(TypeName).ok_or_else(|| {
            de::Error::custom(format!(
                "unknown filesystem type \"{name}\" ({})",
                crate::fs::NAMES.join(", ")
            ))
        })
    }
}

/// Fails as the value of a key, so that the error names that element.
struct Refuse(String);

impl<'de> DeserializeSeed<'de> for Refuse {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(de::Error::custom(self.0))
    }
}

struct FilesystemVisitor;

impl<'de> Visitor<'de> for FilesystemVisitor {
    type Value = Filesystem;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct Filesystem")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Filesystem, A::Error> {
        fn once<T, E: de::Error>(slot: &mut Option<T>, key: &'static str, v: T) -> Result<(), E> {
            if slot.is_some() {
                return Err(E::duplicate_field(key));
            }
            *slot = Some(v);
            Ok(())
        }
        let mut device: Option<String> = None;
        let mut disk: Option<Option<String>> = None;
        let mut partition: Option<Option<u32>> = None;
        let mut volume: Option<Option<StackRef>> = None;
        let mut fs_type: Option<FsType> = None;
        let mut uuid: Option<String> = None;
        let mut label: Option<Option<String>> = None;
        let mut mounts: Option<Vec<Mount>> = None;
        let mut data: Option<Option<FsData>> = None;
        let mut members: Option<Vec<BtrfsMember>> = None;
        let mut subvolumes: Option<Vec<Subvolume>> = None;
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Device => once(&mut device, "@device", map.next_value()?)?,
                Field::Disk => once(&mut disk, "@disk", map.next_value()?)?,
                Field::Partition => once(&mut partition, "@partition", map.next_value()?)?,
                Field::Volume => once(&mut volume, "@volume", map.next_value()?)?,
                Field::Type => {
                    let TypeName(t) = map.next_value()?;
                    once(&mut fs_type, "@type", t)?;
                }
                Field::Uuid => once(&mut uuid, "@uuid", map.next_value()?)?,
                Field::Label => once(&mut label, "@label", map.next_value()?)?,
                Field::Params(element) => match &mut fs_type {
                    Some(t) if t.params_element() != element => {
                        let why = format!("<{element}> parameters on a {t} filesystem");
                        map.next_value_seed(Refuse(why))?;
                    }
                    Some(t) if t.has_params() => return Err(de::Error::duplicate_field(element)),
                    Some(t) => t.deserialize_params(&mut map)?,
                    // Attributes come first: no type at all, refused below.
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
                Field::Mount => once(&mut mounts, "mount", map.next_value()?)?,
                Field::Data => once(&mut data, "data", map.next_value()?)?,
                Field::Member => once(&mut members, "member", map.next_value()?)?,
                Field::Subvolume => once(&mut subvolumes, "subvolume", map.next_value()?)?,
            }
        }
        Ok(Filesystem {
            device: device.ok_or_else(|| de::Error::missing_field("@device"))?,
            disk: disk.flatten(),
            partition: partition.flatten(),
            volume: volume.flatten(),
            fs_type: fs_type.ok_or_else(|| de::Error::missing_field("@type"))?,
            uuid: uuid.ok_or_else(|| de::Error::missing_field("@uuid"))?,
            label: label.flatten(),
            mounts: mounts.unwrap_or_default(),
            data: data.flatten(),
            members: members.unwrap_or_default(),
            subvolumes: subvolumes.unwrap_or_default(),
        })
    }
}
