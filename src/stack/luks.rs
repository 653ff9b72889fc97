//! LUKS: the header read from the device itself (LUKS1's binary header,
//! LUKS2's binary header and JSON area — what `cryptsetup luksDump
//! --dump-json-metadata` prints), without cryptsetup, into a `<luks>`
//! element; and the cryptsetup command lines that put a volume back:
//! the captured header restored (`luksHeaderRestore`), or, without one,
//! `luksFormat` with the same UUID, cipher and geometry.

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use std::collections::BTreeMap;

use super::{Argv, argv};
use crate::manifest::{Luks, LuksKeyslot, StackRef};

const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// Bytes to read from the device start to parse either version (LUKS2's
/// binary header and the largest JSON area it allows, 4 MiB − 4 KiB).
pub const MAX_HEADER_READ: usize = 4 << 20;

/// What the header says, before the opened mapping's name and size are known.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: u32,
    pub uuid: String,
    pub label: Option<String>,
    pub cipher: String,
    pub key_size: u32,
    pub sector_size: u32,
    pub data_offset: u64,
    pub hash: Option<String>,
    pub keyslots: Vec<LuksKeyslot>,
}

/// Parse a LUKS header from the first bytes of its device (at least 4 KiB
/// for LUKS2 plus its JSON area; 592 bytes for LUKS1).
pub fn parse_header(buf: &[u8]) -> Result<Header> {
    ensure!(
        buf.len() >= 592 && &buf[..6] == MAGIC,
        "no LUKS header (magic LUKS\\xba\\xbe) at the device start"
    );
    match u16::from_be_bytes([buf[6], buf[7]]) {
        1 => parse_luks1(buf),
        2 => parse_luks2(buf),
        v => bail!("LUKS version {v} is not one rewind knows (1, 2)"),
    }
}

/// A NUL-padded text field.
fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse_luks1(b: &[u8]) -> Result<Header> {
    const KEY_ENABLED: u32 = 0x00AC_71F3;
    let keyslots = (0..8)
        .filter(|i| be32(b, 208 + i * 48) == KEY_ENABLED)
        .map(|i| LuksKeyslot {
            id: i as u32,
            pbkdf: "pbkdf2".into(),
            token: None,
        })
        .collect();
    let mode = text(&b[40..72]);
    Ok(Header {
        version: 1,
        uuid: text(&b[168..208]),
        label: None,
        cipher: format!("{}-{mode}", text(&b[8..40])),
        key_size: be32(b, 108) * 8,
        sector_size: 512,
        data_offset: u64::from(be32(b, 104)) * 512,
        hash: Some(text(&b[72..104])),
        keyslots,
    })
}

/// The parts of the LUKS2 JSON metadata rewind records.
#[derive(Deserialize)]
struct Luks2Json {
    keyslots: BTreeMap<String, Luks2Keyslot>,
    #[serde(default)]
    tokens: BTreeMap<String, Luks2Token>,
    segments: BTreeMap<String, Luks2Segment>,
    #[serde(default)]
    digests: BTreeMap<String, Luks2Digest>,
}

#[derive(Deserialize)]
struct Luks2Keyslot {
    key_size: u32,
    kdf: Luks2Kdf,
}

#[derive(Deserialize)]
struct Luks2Kdf {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Luks2Token {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    keyslots: Vec<String>,
}

#[derive(Deserialize)]
struct Luks2Segment {
    offset: String,
    encryption: String,
    sector_size: u32,
}

#[derive(Deserialize)]
struct Luks2Digest {
    hash: Option<String>,
}

fn parse_luks2(b: &[u8]) -> Result<Header> {
    let hdr_size = u64::from_be_bytes(b[8..16].try_into().context("LUKS2 header size")?);
    ensure!(
        (16384..=(4 << 20)).contains(&hdr_size),
        "LUKS2 header size {hdr_size} is implausible"
    );
    let hdr_size = hdr_size as usize;
    ensure!(
        b.len() >= hdr_size,
        "LUKS2 header is {hdr_size} bytes; only {} were read",
        b.len()
    );
    let json = text(&b[4096..hdr_size]);
    let meta: Luks2Json =
        serde_json::from_str(&json).context("the LUKS2 JSON metadata does not parse")?;
    let segment = meta
        .segments
        .get("0")
        .context("the LUKS2 metadata has no data segment 0")?;
    let mut keyslots: Vec<LuksKeyslot> = meta
        .keyslots
        .iter()
        .map(|(id, k)| {
            let id: u32 = id
                .parse()
                .with_context(|| format!("LUKS2 keyslot id {id:?}"))?;
            let token = meta
                .tokens
                .values()
                .find(|t| t.keyslots.iter().any(|s| s.parse() == Ok(id)))
                .map(|t| t.kind.clone());
            Ok(LuksKeyslot {
                id,
                pbkdf: k.kdf.kind.clone(),
                token,
            })
        })
        .collect::<Result<_>>()?;
    keyslots.sort_by_key(|k| k.id);
    let key_size = meta
        .keyslots
        .values()
        .map(|k| k.key_size * 8)
        .next()
        .context("the LUKS2 volume has no keyslot")?;
    let label = text(&b[24..72]);
    Ok(Header {
        version: 2,
        uuid: text(&b[168..208]),
        label: (!label.is_empty()).then_some(label),
        cipher: segment.encryption.clone(),
        key_size,
        sector_size: segment.sector_size,
        data_offset: segment
            .offset
            .parse()
            .with_context(|| format!("LUKS2 segment offset {:?}", segment.offset))?,
        hash: meta.digests.values().find_map(|d| d.hash.clone()),
        keyslots,
    })
}

/// The `<luks>` element of a header on `on`, opened as `name` with `size` bytes.
pub fn to_element(name: &str, on: StackRef, size: u64, h: &Header) -> Result<Luks> {
    Ok(Luks {
        name: name.to_string(),
        on,
        version: h.version,
        uuid: h
            .uuid
            .parse()
            .map_err(|e: String| anyhow::anyhow!("LUKS header of {name}: {e}"))?,
        label: h.label.clone(),
        cipher: h.cipher.clone(),
        key_size: h.key_size,
        sector_size: h.sector_size,
        data_offset: h.data_offset,
        size,
        hash: h.hash.clone(),
        keyslots: h.keyslots.clone(),
        header: None,
        escrow: None,
    })
}

/// Whether the header on a device is the header of `l` (the plan's): each
/// difference, described. The UUID, version, cipher, key size, sector
/// size and data offset are what `cryptsetup luksDump` shows; whether the
/// escrowed key opens it is the proof that the header is this volume's.
pub fn open_diffs(l: &Luks, h: &Header) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut d = |what: &str, want: String, got: String| {
        if want != got {
            diffs.push(format!("{what} is {got}, the plan's {want}"));
        }
    };
    d(
        "the UUID",
        l.uuid.to_string().to_ascii_lowercase(),
        h.uuid.to_ascii_lowercase(),
    );
    d("the version", l.version.to_string(), h.version.to_string());
    d("the cipher", l.cipher.clone(), h.cipher.clone());
    d(
        "the key size",
        l.key_size.to_string(),
        h.key_size.to_string(),
    );
    d(
        "the sector size",
        l.sector_size.to_string(),
        h.sector_size.to_string(),
    );
    d(
        "the data offset",
        l.data_offset.to_string(),
        h.data_offset.to_string(),
    );
    diffs
}

/// The file the recovery puts mapping `name`'s escrowed volume key in,
/// under `dir` (mode 0600, removed once the volume is open).
pub fn key_file(dir: &str, name: &str) -> String {
    format!("{dir}/{name}.key")
}

/// The file the recovery puts mapping `name`'s captured header in.
pub fn header_file(dir: &str, name: &str) -> String {
    format!("{dir}/{name}.header")
}

/// Write the captured header back onto `device` (same UUID, keyslots and
/// volume key: the machine's passphrases keep working).
pub fn header_restore_command(device: &str, header_file: &str) -> Argv {
    argv(&[
        "cryptsetup",
        "luksHeaderRestore",
        "--batch-mode",
        device,
        "--header-backup-file",
        header_file,
    ])
}

/// Open the volume with the escrowed volume key, never a passphrase.
pub fn open_command(l: &Luks, device: &str, volume_key_file: &str) -> Argv {
    argv(&[
        "cryptsetup",
        "open",
        "--type",
        if l.version == 1 { "luks1" } else { "luks2" },
        "--volume-key-file",
        volume_key_file,
        device,
        &l.name,
    ])
}

/// `dmsetup table --showkeys NAME`: the open mapping's table, the crypt
/// target's key included (it goes to rewind's pipe, never to a terminal).
pub fn show_keys_command(mapping: &str) -> Argv {
    argv(&["dmsetup", "table", "--showkeys", mapping])
}

/// The key of a dm-crypt mapping, as its table gives it.
#[derive(PartialEq, Eq)]
pub enum MappingKey {
    /// The volume key itself (LUKS1, and LUKS2 opened without the kernel
    /// keyring).
    Volume(Vec<u8>),
    /// A reference to a key in the kernel keyring (`:64:logon:cryptsetup:
    /// UUID-d0`, LUKS2's default): a logon key no program can read back.
    Keyring(String),
}

impl std::fmt::Debug for MappingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never a key in a log or a panic message.
            MappingKey::Volume(k) => write!(f, "Volume({} bytes)", k.len()),
            MappingKey::Keyring(d) => write!(f, "Keyring({d})"),
        }
    }
}

/// The key of a dm-crypt mapping from `dmsetup table --showkeys`: each
/// line `START LEN crypt CIPHER KEY IV_OFFSET DEVICE OFFSET [OPTIONS]`;
/// every crypt line of the table must carry the same key.
pub fn parse_crypt_table(text: &str) -> Result<MappingKey> {
    let mut found: Option<MappingKey> = None;
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.get(2) != Some(&"crypt") {
            bail!(
                "line {} of the table is a {} target, not crypt",
                n + 1,
                words.get(2).unwrap_or(&"empty")
            );
        }
        let key = *words
            .get(4)
            .with_context(|| format!("line {} of the crypt table has no key", n + 1))?;
        let this = if let Some(reference) = key.strip_prefix(':') {
            MappingKey::Keyring(reference.to_string())
        } else if key == "-" || key.chars().all(|c| c == '0') {
            bail!(
                "the crypt table shows no key (dmsetup table without --showkeys, or cipher_null)"
            );
        } else {
            MappingKey::Volume(crate::util::hex::decode(key).with_context(|| {
                format!("line {} of the crypt table: the key is not hex", n + 1)
            })?)
        };
        match &found {
            Some(k) if *k != this => bail!("the crypt table's lines carry different keys"),
            _ => found = Some(this),
        }
    }
    found.context("the mapping's table is empty")
}

/// A new header with the captured UUID, label, cipher and geometry and
/// the escrowed volume key, for a volume whose header was not captured.
pub fn format_command(l: &Luks, device: &str, volume_key_file: &str, key_file: &str) -> Argv {
    let mut cmd = argv(&[
        "cryptsetup",
        "luksFormat",
        "--batch-mode",
        "--type",
        if l.version == 1 { "luks1" } else { "luks2" },
        "--uuid",
        &l.uuid,
        "--cipher",
        &l.cipher,
        "--key-size",
        &l.key_size.to_string(),
        "--offset",
        &(l.data_offset / 512).to_string(),
        "--volume-key-file",
        volume_key_file,
        "--key-file",
        key_file,
        // The only keyslot opens with the volume key file itself: a slow
        // key derivation would protect nothing.
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
    ]);
    if l.version == 2 {
        cmd.extend(argv(&["--sector-size", &l.sector_size.to_string()]));
        if let Some(label) = &l.label {
            cmd.extend(argv(&["--label", label]));
        }
    }
    if let Some(h) = &l.hash {
        cmd.extend(argv(&["--hash", h]));
    }
    cmd.push(device.into());
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/stack")
                .join(name),
        )
        .unwrap()
    }

    /// A `Key: value` line of a luksDump fixture.
    fn dump_value(dump: &str, key: &str) -> String {
        dump.lines()
            .find_map(|l| l.trim_start().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in dump"))
            .trim_start_matches(':')
            .trim()
            .to_string()
    }

    #[test]
    fn luks2_header_agrees_with_luks_dump() {
        let h = parse_header(&fixture("luks2-header.bin")).unwrap();
        let dump = String::from_utf8(fixture("luks2.dump")).unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(h.uuid, dump_value(&dump, "UUID:"));
        assert_eq!(
            h.label.as_deref(),
            Some(dump_value(&dump, "Label:").as_str())
        );
        assert_eq!(h.cipher, dump_value(&dump, "cipher:"));
        assert_eq!(
            h.data_offset.to_string() + " [bytes]",
            dump_value(&dump, "offset:")
        );
        assert_eq!(
            h.sector_size.to_string() + " [bytes]",
            dump_value(&dump, "sector:")
        );
        assert_eq!(h.key_size.to_string() + " bits", dump_value(&dump, "Key:"));
        assert_eq!(h.hash.as_deref(), Some("sha256"));
        assert_eq!(
            h.keyslots,
            [
                LuksKeyslot {
                    id: 0,
                    pbkdf: "argon2id".into(),
                    token: None
                },
                LuksKeyslot {
                    id: 1,
                    pbkdf: "pbkdf2".into(),
                    token: Some("systemd-tpm2".into())
                },
            ]
        );
        assert!(h.keyslots[1].hardware_bound());
        let l = to_element("cryptroot", "md/root".parse().unwrap(), 1 << 30, &h).unwrap();
        assert_eq!(l.uuid.as_str(), "c0ffee00-1234-4abc-8def-0123456789ab");
        assert_eq!(
            format_command(&l, "/dev/md/root", "/run/vk", "/run/kf").join(" "),
            "cryptsetup luksFormat --batch-mode --type luks2 --uuid c0ffee00-1234-4abc-8def-0123456789ab \
             --cipher aes-xts-plain64 --key-size 512 --offset 32768 --volume-key-file /run/vk \
             --key-file /run/kf --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --sector-size 4096 \
             --label root --hash sha256 /dev/md/root"
        );
        assert_eq!(
            open_command(&l, "/dev/md/root", "/run/vk").join(" "),
            "cryptsetup open --type luks2 --volume-key-file /run/vk /dev/md/root cryptroot"
        );
        assert_eq!(
            header_restore_command("/dev/md/root", "/run/h").join(" "),
            "cryptsetup luksHeaderRestore --batch-mode /dev/md/root --header-backup-file /run/h"
        );
    }

    #[test]
    fn luks1_header_agrees_with_luks_dump() {
        let h = parse_header(&fixture("luks1-header.bin")).unwrap();
        let dump = String::from_utf8(fixture("luks1.dump")).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.uuid, dump_value(&dump, "UUID:"));
        assert_eq!(
            h.cipher,
            format!(
                "{}-{}",
                dump_value(&dump, "Cipher name:"),
                dump_value(&dump, "Cipher mode:")
            )
        );
        assert_eq!(h.key_size.to_string(), dump_value(&dump, "MK bits:"));
        assert_eq!(
            h.data_offset / 512,
            dump_value(&dump, "Payload offset:").parse::<u64>().unwrap()
        );
        assert_eq!(
            h.hash.as_deref(),
            Some(dump_value(&dump, "Hash spec:").as_str())
        );
        assert_eq!(h.keyslots.iter().map(|k| k.id).collect::<Vec<_>>(), [0]);
        assert_eq!(h.label, None);
    }

    #[test]
    fn the_volume_key_is_read_from_a_crypt_table() {
        let key = "a0".repeat(32) + &"5b".repeat(32);
        let table =
            format!("0 376832 crypt aes-xts-plain64 {key} 0 9:127 32768 1 allow_discards\n");
        assert_eq!(
            parse_crypt_table(&table).unwrap(),
            MappingKey::Volume(crate::util::hex::decode(&key).unwrap())
        );
        // LUKS2's default: the key stays in the kernel keyring.
        let keyring = "0 376832 crypt aes-xts-plain64 :64:logon:cryptsetup:c0ffee00-1234-4abc-8def-0123456789ab-d0 0 253:0 32768\n";
        assert_eq!(
            parse_crypt_table(keyring).unwrap(),
            MappingKey::Keyring(
                "64:logon:cryptsetup:c0ffee00-1234-4abc-8def-0123456789ab-d0".into()
            )
        );
        // Without --showkeys dmsetup prints zeros; a linear target is not crypt.
        let hidden = format!(
            "0 8 crypt aes-xts-plain64 {} 0 9:127 32768\n",
            "0".repeat(128)
        );
        assert!(
            parse_crypt_table(&hidden)
                .unwrap_err()
                .to_string()
                .contains("--showkeys")
        );
        assert!(
            parse_crypt_table("0 8 linear 8:1 0\n")
                .unwrap_err()
                .to_string()
                .contains("linear")
        );
        assert!(parse_crypt_table("").is_err());
        assert!(parse_crypt_table("0 8 crypt aes-xts-plain64 zz 0 9:1 0\n").is_err());
        let two = format!(
            "{table}0 8 crypt aes-xts-plain64 {} 0 9:127 32768\n",
            "11".repeat(64)
        );
        assert!(
            parse_crypt_table(&two)
                .unwrap_err()
                .to_string()
                .contains("different keys")
        );
        // The key never shows in a debug print.
        let shown = format!("{:?}", parse_crypt_table(&table).unwrap());
        assert_eq!(shown, "Volume(64 bytes)");
        assert_eq!(
            show_keys_command("cryptroot").join(" "),
            "dmsetup table --showkeys cryptroot"
        );
    }

    #[test]
    fn not_luks_is_refused() {
        assert!(parse_header(&[0u8; 4096]).is_err());
        let mut b = fixture("luks2-header.bin");
        b.truncate(8192);
        let e = parse_header(&b).unwrap_err();
        assert!(e.to_string().contains("only 8192 were read"), "{e}");
    }
}
