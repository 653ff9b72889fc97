//! UEFI boot configuration from efivarfs: BootOrder, BootCurrent and every
//! `BootXXXX` load option, decoded far enough to recreate the entry on a new
//! disk (partition GUID + loader path) and kept raw for the ones we cannot.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{Context, Result, ensure};

use crate::manifest::{Efi, EfiEntry, Guid};

/// EFI_GLOBAL_VARIABLE: the vendor GUID of the Boot* variables.
pub const GLOBAL_VARIABLE_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// EFI_LOAD_OPTION attribute bit: the entry takes part in BootOrder processing.
const LOAD_OPTION_ACTIVE: u32 = 0x0000_0001;

const DP_TYPE_MEDIA: u8 = 0x04;
const DP_SUBTYPE_HARD_DRIVE: u8 = 0x01;
const DP_SUBTYPE_FILE_PATH: u8 = 0x04;
const DP_TYPE_END: u8 = 0x7f;
/// Hard Drive media path node: 4 header + 4 + 8 + 8 + 16 + 1 + 1.
const HD_NODE_LEN: usize = 42;
const PART_FORMAT_GPT: u8 = 0x02;
const SIGNATURE_TYPE_GUID: u8 = 0x02;

/// Read the boot configuration from an efivarfs mount (normally
/// `/sys/firmware/efi/efivars`). `None` when the directory does not exist,
/// i.e. the machine booted through BIOS/CSM.
pub fn probe_efi(efivars: &Path) -> Result<Option<Efi>> {
    let dir = match fs::read_dir(efivars) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", efivars.display())),
    };

    let mut entries = Vec::new();
    for dent in dir {
        let dent = dent.with_context(|| format!("cannot list {}", efivars.display()))?;
        let name = dent.file_name();
        let Some(number) = name.to_str().and_then(boot_entry_number) else {
            continue;
        };
        let path = dent.path();
        let data = read_var(&path)?;
        let entry = parse_load_option(&number, &data)
            .with_context(|| format!("cannot decode {}", path.display()))?;
        entries.push(entry);
    }
    entries.sort_by(|a, b| a.number.cmp(&b.number));

    let boot_order = match read_optional_var(efivars, "BootOrder")? {
        Some(data) => parse_u16_list(&data).context("BootOrder")?,
        None => Vec::new(),
    };
    let boot_current = match read_optional_var(efivars, "BootCurrent")? {
        Some(data) => {
            let list = parse_u16_list(&data).context("BootCurrent")?;
            ensure!(
                list.len() == 1,
                "BootCurrent holds {} bytes, not 2",
                data.len()
            );
            list.into_iter().next()
        }
        None => None,
    };

    Ok(Some(Efi {
        boot_order,
        boot_current,
        entries,
    }))
}

/// `Boot001A-8be4df61-…` → `Some("001A")`; BootOrder, BootNext, other vendors'
/// variables → `None`.
fn boot_entry_number(file_name: &str) -> Option<String> {
    let rest = file_name.strip_prefix("Boot")?;
    let (num, guid) = rest.split_once('-')?;
    if num.len() != 4 || !num.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if !guid.eq_ignore_ascii_case(GLOBAL_VARIABLE_GUID) {
        return None;
    }
    Some(num.to_ascii_uppercase())
}

/// efivarfs prefixes the value with its 4-byte attribute word; strip it.
fn read_var(path: &Path) -> Result<Vec<u8>> {
    let mut data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        data.len() >= 4,
        "{}: {} bytes, shorter than the efivarfs attribute word",
        path.display(),
        data.len()
    );
    data.drain(..4);
    Ok(data)
}

fn read_optional_var(efivars: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let path = efivars.join(format!("{name}-{GLOBAL_VARIABLE_GUID}"));
    if !path.exists() {
        return Ok(None);
    }
    read_var(&path).map(Some)
}

/// Whether the firmware enforces Secure Boot: the `SecureBoot` variable
/// (one byte, 1 = on) in `efivars`; `None` when it cannot be read (no
/// efivarfs, or firmware without the variable).
pub fn secure_boot(efivars: &Path) -> Option<bool> {
    match read_optional_var(efivars, "SecureBoot") {
        Ok(Some(v)) if v.len() == 1 => Some(v[0] == 1),
        _ => None,
    }
}

/// A UINT16 array (BootOrder, BootCurrent) as 4-uppercase-hex-digit numbers.
fn parse_u16_list(data: &[u8]) -> Result<Vec<String>> {
    ensure!(
        data.len().is_multiple_of(2),
        "odd length {} for an array of UINT16",
        data.len()
    );
    Ok(data
        .chunks_exact(2)
        .map(|c| format!("{:04X}", u16::from_le_bytes([c[0], c[1]])))
        .collect())
}

/// Format a GUID stored the EFI/GPT way (first three fields little-endian,
/// last 8 bytes as they are) in the usual lowercase text form.
pub fn guid_from_le_bytes(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// Decode UCS-2 code units (lossily: unpaired surrogates become U+FFFD).
fn ucs2(units: &[u8]) -> String {
    let units: Vec<u16> = units.chunks_exact(2).map(|c| u16_at(c, 0)).collect();
    String::from_utf16_lossy(&units)
}

/// Parse one EFI_LOAD_OPTION (UEFI spec 3.1.3), the value of `BootXXXX`
/// without the efivarfs attribute word. `number` is the `XXXX`.
///
/// Only the first device path instance is looked at; its first Hard Drive
/// node gives the partition and the File Path nodes after it the loader path.
/// Anything else (PXE, vendor nodes, optional data) survives only in `raw`.
pub fn parse_load_option(number: &str, data: &[u8]) -> Result<EfiEntry> {
    ensure!(
        number.len() == 4 && number.bytes().all(|b| b.is_ascii_hexdigit()),
        "boot entry number {number:?} is not 4 hex digits"
    );
    let number = number.to_ascii_uppercase();
    ensure!(
        data.len() >= 6,
        "Boot{number}: load option is {} bytes, shorter than its 6-byte header",
        data.len()
    );
    let attributes = u32_at(data, 0);
    let path_len = usize::from(u16_at(data, 4));

    // Description: NUL-terminated UCS-2 right after the header.
    let mut off = 6;
    let desc_start = off;
    loop {
        ensure!(
            off + 2 <= data.len(),
            "Boot{number}: description is not NUL-terminated"
        );
        if u16_at(data, off) == 0 {
            break;
        }
        off += 2;
    }
    let description = ucs2(&data[desc_start..off]);
    off += 2;

    ensure!(
        off + path_len <= data.len(),
        "Boot{number}: FilePathListLength {path_len} runs past the end of the {}-byte option",
        data.len()
    );
    let (partition_guid, partition_number, path) =
        walk_device_path(&data[off..off + path_len]).with_context(|| format!("Boot{number}"))?;

    Ok(EfiEntry {
        number,
        description,
        active: attributes & LOAD_OPTION_ACTIVE != 0,
        partition_guid,
        partition_number,
        path,
        raw: crate::util::hex::encode(data),
    })
}

type DevicePathFacts = (Option<Guid>, Option<u32>, Option<String>);

fn walk_device_path(list: &[u8]) -> Result<DevicePathFacts> {
    let mut guid = None;
    let mut part = None;
    let mut path: Option<String> = None;
    let mut seen_hd = false;
    let mut off = 0;
    loop {
        // efibootmgr and firmware always close the list with an End node, so
        // running out of bytes first means the option is corrupt.
        ensure!(off < list.len(), "device path list has no End node");
        ensure!(
            off + 4 <= list.len(),
            "device path node header at offset {off} is truncated"
        );
        let (ty, sub) = (list[off], list[off + 1]);
        let len = usize::from(u16_at(list, off + 2));
        // A length under 4 would never advance: reject instead of looping.
        ensure!(
            len >= 4 && off + len <= list.len(),
            "device path node {ty:#04x}/{sub:#04x} at offset {off} has bad length {len}"
        );
        let node = &list[off..off + len];
        match (ty, sub) {
            // End of the whole path, or end of this instance: later instances
            // are alternatives the firmware tries, not part of this one.
            (DP_TYPE_END, _) => break,
            (DP_TYPE_MEDIA, DP_SUBTYPE_HARD_DRIVE) if !seen_hd => {
                ensure!(
                    len >= HD_NODE_LEN,
                    "Hard Drive node is {len} bytes, not {HD_NODE_LEN}"
                );
                seen_hd = true;
                part = Some(u32_at(node, 4));
                let format = node[40];
                let sig_type = node[41];
                if format == PART_FORMAT_GPT && sig_type == SIGNATURE_TYPE_GUID {
                    let sig: &[u8; 16] = node[24..40].try_into().expect("16 bytes");
                    guid = Some(Guid::from(uuid::Uuid::from_bytes_le(*sig)));
                }
            }
            (DP_TYPE_MEDIA, DP_SUBTYPE_FILE_PATH) => {
                let mut text = ucs2(&node[4..]);
                if let Some(nul) = text.find('\0') {
                    text.truncate(nul);
                }
                // A path may be split over several nodes: join them as one.
                path = Some(match path {
                    None => text,
                    Some(mut p) => {
                        if !p.ends_with('\\') && !text.starts_with('\\') {
                            p.push('\\');
                        }
                        p.push_str(&text);
                        p
                    }
                });
            }
            _ => {}
        }
        off += len;
    }
    Ok((guid, part, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESP_GUID: &str = "6f4a3e6b-9c5d-4a21-8f11-2b3c4d5e6f70";

    fn ucs2z(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain(std::iter::once(0))
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    fn guid_bytes(text: &str) -> [u8; 16] {
        let h: String = text.chars().filter(|c| *c != '-').collect();
        let raw: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
        b[4..6].copy_from_slice(&[raw[5], raw[4]]);
        b[6..8].copy_from_slice(&[raw[7], raw[6]]);
        b[8..].copy_from_slice(&raw[8..]);
        b
    }

    fn node(ty: u8, sub: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty, sub];
        v.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn end_node() -> Vec<u8> {
        node(0x7f, 0xff, &[])
    }

    fn hd_node(part: u32, start: u64, size: u64, guid: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&part.to_le_bytes());
        body.extend_from_slice(&start.to_le_bytes());
        body.extend_from_slice(&size.to_le_bytes());
        body.extend_from_slice(&guid_bytes(guid));
        body.push(2); // GPT
        body.push(2); // GUID signature
        node(4, 1, &body)
    }

    fn load_option(attrs: u32, desc: &str, path: &[u8], optional: &[u8]) -> Vec<u8> {
        let mut v = attrs.to_le_bytes().to_vec();
        v.extend_from_slice(&(path.len() as u16).to_le_bytes());
        v.extend_from_slice(&ucs2z(desc));
        v.extend_from_slice(path);
        v.extend_from_slice(optional);
        v
    }

    /// What `efibootmgr -c -d /dev/sda -p 1 -L debian -l '\EFI\debian\shimx64.efi'` writes.
    fn debian_entry() -> Vec<u8> {
        let mut path = hd_node(1, 2048, 1_048_576, ESP_GUID);
        path.extend(node(4, 4, &ucs2z(r"\EFI\debian\shimx64.efi")));
        path.extend(end_node());
        load_option(1, "debian", &path, &[])
    }

    /// An OVMF-style network entry: PciRoot/Pci/MAC/IPv4, vendor optional data.
    fn pxe_entry() -> Vec<u8> {
        let mut path = node(2, 1, &[0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0]);
        path.extend(node(1, 1, &[0x00, 0x03]));
        let mut mac = vec![0u8; 33];
        mac[..6].copy_from_slice(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        mac[32] = 1;
        path.extend(node(3, 11, &mac));
        path.extend(node(3, 12, &[0u8; 23]));
        path.extend(end_node());
        let optional = guid_bytes("eb9d2d2f-2d88-11d3-9a16-0090273fc14d");
        load_option(1, "UEFI PXEv4 (MAC:525400123456)", &path, &optional)
    }

    #[test]
    fn guid_is_mixed_endian() {
        let b = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        // The EFI System Partition type GUID.
        assert_eq!(
            guid_from_le_bytes(&b),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
        assert_eq!(guid_from_le_bytes(&guid_bytes(ESP_GUID)), ESP_GUID);
    }

    /// The same entry written out by hand (Python's uuid.bytes_le for the
    /// signature), so the builder above is not the only witness of the layout.
    const DEBIAN_ENTRY_HEX: &str = concat!(
        "010000006200640065006200690061006e00000004012a000100000000080000",
        "0000000000001000000000006b3e4a6f5d9c214a8f112b3c4d5e6f7002020404",
        "34005c004500460049005c00640065006200690061006e005c00730068006900",
        "6d007800360034002e0065006600690000007fff0400",
    );

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hard_drive_and_file_entry() {
        let data = unhex(DEBIAN_ENTRY_HEX);
        assert_eq!(data, debian_entry());
        let e = parse_load_option("0001", &data).unwrap();
        assert_eq!(e.number, "0001");
        assert_eq!(e.description, "debian");
        assert!(e.active);
        assert_eq!(e.partition_guid.as_deref(), Some(ESP_GUID));
        assert_eq!(e.partition_number, Some(1));
        assert_eq!(e.path.as_deref(), Some(r"\EFI\debian\shimx64.efi"));
        assert_eq!(e.raw, DEBIAN_ENTRY_HEX);
    }

    #[test]
    fn network_entry_has_no_partition() {
        let data = pxe_entry();
        let e = parse_load_option("000a", &data).unwrap();
        assert_eq!(e.number, "000A");
        assert_eq!(e.description, "UEFI PXEv4 (MAC:525400123456)");
        assert!(e.active);
        assert_eq!(e.partition_guid, None);
        assert_eq!(e.partition_number, None);
        assert_eq!(e.path, None);
        assert_eq!(e.raw.len(), data.len() * 2);
    }

    #[test]
    fn inactive_and_mbr_entry() {
        let mut hd = hd_node(2, 63, 1000, ESP_GUID);
        hd[40] = 1; // MBR
        hd[41] = 1; // 32-bit disk signature
        let mut path = hd;
        path.extend(node(4, 4, &ucs2z(r"\EFI\BOOT\BOOTX64.EFI")));
        path.extend(end_node());
        let e = parse_load_option("0003", &load_option(0, "old", &path, b"WINDOWS")).unwrap();
        assert!(!e.active);
        assert_eq!(e.partition_guid, None);
        assert_eq!(e.partition_number, Some(2));
        assert_eq!(e.path.as_deref(), Some(r"\EFI\BOOT\BOOTX64.EFI"));
    }

    #[test]
    fn split_file_path_is_joined() {
        let mut path = hd_node(1, 2048, 4096, ESP_GUID);
        path.extend(node(4, 4, &ucs2z(r"\EFI\debian")));
        path.extend(node(4, 4, &ucs2z("grubx64.efi")));
        path.extend(end_node());
        let e = parse_load_option("0004", &load_option(1, "x", &path, &[])).unwrap();
        assert_eq!(e.path.as_deref(), Some(r"\EFI\debian\grubx64.efi"));
    }

    #[test]
    fn malformed_options_error_without_panicking() {
        let good = debian_entry();
        // Every truncation of a valid entry either errors or (never) panics.
        for cut in 0..good.len() {
            assert!(
                parse_load_option("0001", &good[..cut]).is_err(),
                "truncated at {cut} accepted"
            );
        }
        // A node claiming length 0 must not loop forever.
        let mut bad = debian_entry();
        let hd_len_at = 6 + ucs2z("debian").len() + 2;
        bad[hd_len_at] = 0;
        bad[hd_len_at + 1] = 0;
        let err = parse_load_option("0001", &bad).unwrap_err();
        assert!(format!("{err:#}").contains("bad length 0"), "{err:#}");
        // A Hard Drive node too short for its fields.
        let mut path = node(4, 1, &[1, 0, 0, 0]);
        path.extend(end_node());
        assert!(parse_load_option("0001", &load_option(1, "x", &path, &[])).is_err());
        // Bad entry numbers.
        assert!(parse_load_option("01", &good).is_err());
        assert!(parse_load_option("00G1", &good).is_err());
    }

    #[test]
    fn reads_an_efivarfs_directory() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, data: &[u8]| {
            let mut v = 7u32.to_le_bytes().to_vec(); // NV|BS|RT
            v.extend_from_slice(data);
            std::fs::write(dir.path().join(format!("{name}-{GLOBAL_VARIABLE_GUID}")), v).unwrap();
        };
        write("Boot0001", &debian_entry());
        write("Boot000A", &pxe_entry());
        write("BootOrder", &[0x01, 0x00, 0x0a, 0x00]);
        write("BootCurrent", &[0x01, 0x00]);
        write("BootOptionSupport", &[0x01, 0, 0, 0]);
        write("Timeout", &[5, 0]);
        std::fs::write(
            dir.path()
                .join("Boot0002-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"),
            b"\x07\0\0\0other vendor",
        )
        .unwrap();

        let efi = probe_efi(dir.path()).unwrap().unwrap();
        assert_eq!(efi.boot_order, vec!["0001", "000A"]);
        assert_eq!(efi.boot_current.as_deref(), Some("0001"));
        let numbers: Vec<_> = efi.entries.iter().map(|e| e.number.as_str()).collect();
        assert_eq!(numbers, vec!["0001", "000A"]);
        assert_eq!(efi.entries[0].partition_guid.as_deref(), Some(ESP_GUID));
    }

    #[test]
    fn bad_variable_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("Boot0005-{GLOBAL_VARIABLE_GUID}");
        std::fs::write(dir.path().join(&name), [7, 0, 0, 0, 1, 0]).unwrap();
        let err = probe_efi(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains(&name), "{err:#}");
    }

    #[test]
    fn missing_directory_means_bios() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(probe_efi(&dir.path().join("efivars")).unwrap(), None);
    }

    #[test]
    fn secure_boot_variable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(secure_boot(dir.path()), None, "no variable");
        let var = dir
            .path()
            .join(format!("SecureBoot-{GLOBAL_VARIABLE_GUID}"));
        std::fs::write(&var, [6, 0, 0, 0, 1]).unwrap();
        assert_eq!(secure_boot(dir.path()), Some(true));
        std::fs::write(&var, [6, 0, 0, 0, 0]).unwrap();
        assert_eq!(secure_boot(dir.path()), Some(false));
        std::fs::write(&var, [6, 0, 0, 0]).unwrap();
        assert_eq!(secure_boot(dir.path()), None, "no value byte");
    }
}
