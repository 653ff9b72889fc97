//! UEFI boot entries: the captured `BootXXXX` load options written back to
//! NVRAM through efivarfs, BootOrder merged, and the removable-media path
//! (`\EFI\BOOT\BOOTX64.EFI`) as the fallback when NVRAM cannot be written.
//!
//! Rules:
//! - Only entries whose device path names a GPT partition (by its unique
//!   GUID) that the plan recreated are written; firmware, network and other
//!   disks' entries are left to the firmware.
//! - No duplicates across repeated recoveries: an existing `BootXXXX` with
//!   the identical load option is reused; otherwise the captured number is
//!   kept when free, else the lowest free number is taken.
//! - BootOrder: the recreated entries in captured order, then what the
//!   target's BootOrder already held, without repeats.
//! - A variable is written in one write(2): 4 bytes of attributes
//!   (NV|BS|RT) then the payload. efivarfs files may be immutable: the flag
//!   is cleared with FS_IOC_SETFLAGS first (tolerated where unsupported).

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use crate::manifest::{Efi, EfiEntry};
use crate::probe::efi::GLOBAL_VARIABLE_GUID;

/// Where the kernel shows UEFI variables.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// EFI_VARIABLE_NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
const ATTRIBUTES: u32 = 0x7;
const EFIVARFS_MAGIC: u64 = 0xde5e_81e4;

/// What [`recreate_entries`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Entries to recreate (pointing at a recreated partition).
    pub wanted: usize,
    /// (captured number, number in NVRAM now, reused an identical entry).
    pub written: Vec<(String, String, bool)>,
    /// Entries left out, with why.
    pub skipped: Vec<String>,
    /// Entries that could not be written, with the error.
    pub failed: Vec<String>,
    /// BootOrder written, when it was.
    pub boot_order: Option<Vec<String>>,
}

/// The captured entries to recreate (in captured boot order, then the
/// others by number) and the ones to skip with a reason.
pub fn select<'a>(
    efi: &'a Efi,
    recreated_guids: &HashSet<String>,
) -> (Vec<&'a EfiEntry>, Vec<String>) {
    let pos = |e: &EfiEntry| {
        efi.boot_order
            .iter()
            .position(|n| n.eq_ignore_ascii_case(&e.number))
            .unwrap_or(usize::MAX)
    };
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for e in &efi.entries {
        match &e.partition_guid {
            Some(g) if recreated_guids.contains(&g.to_ascii_lowercase()) => chosen.push(e),
            Some(g) => skipped.push(format!(
                "Boot{} \"{}\": not recreated: it boots from partition {g}, which this recovery did not recreate",
                e.number, e.description
            )),
            None => skipped.push(format!(
                "Boot{} \"{}\": not recreated: a firmware, network or removable-media entry (the firmware makes its own)",
                e.number, e.description
            )),
        }
    }
    chosen.sort_by_key(|e| (pos(e), e.number.clone()));
    (chosen, skipped)
}

fn var_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-{GLOBAL_VARIABLE_GUID}"))
}

/// The `BootXXXX` variables present: number → payload (without the
/// attribute word); `None` for one that cannot be read.
fn existing_entries(dir: &Path) -> Result<BTreeMap<u16, Option<Vec<u8>>>> {
    let mut out = BTreeMap::new();
    let rd = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for dent in rd {
        let dent = dent.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = dent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("Boot") else {
            continue;
        };
        let Some((num, guid)) = rest.split_once('-') else {
            continue;
        };
        if num.len() != 4 || !guid.eq_ignore_ascii_case(GLOBAL_VARIABLE_GUID) {
            continue;
        }
        let Ok(n) = u16::from_str_radix(num, 16) else {
            continue;
        };
        let payload = std::fs::read(dent.path())
            .ok()
            .filter(|d| d.len() >= 4)
            .map(|d| d[4..].to_vec());
        out.insert(n, payload);
    }
    Ok(out)
}

fn read_boot_order(dir: &Path) -> Vec<u16> {
    match std::fs::read(var_path(dir, "BootOrder")) {
        Ok(d) if d.len() >= 4 => d[4..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
        _ => Vec::new(),
    }
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    crate::util::hex::decode(s).context("not an even number of hex digits")
}

fn is_efivarfs(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|s| s.f_type as u64 == EFIVARFS_MAGIC)
}

/// Clear FS_IMMUTABLE_FL on an existing variable file (efivarfs sets it);
/// a filesystem without inode flags (a test's tempdir) is fine as it is.
fn make_mutable(path: &Path) -> Result<()> {
    let Ok(f) = File::open(path) else {
        return Ok(());
    };
    use rustix::fs::IFlags;
    match rustix::fs::ioctl_getflags(&f) {
        Ok(flags) if flags.contains(IFlags::IMMUTABLE) => {
            rustix::fs::ioctl_setflags(&f, flags - IFlags::IMMUTABLE)
                .with_context(|| format!("cannot clear the immutable flag of {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Write one variable: attributes and payload in a single write(2).
pub fn write_var(dir: &Path, name: &str, payload: &[u8], efivarfs: bool) -> Result<()> {
    let path = var_path(dir, name);
    if path.exists() {
        make_mutable(&path)?;
    }
    let mut buf = ATTRIBUTES.to_le_bytes().to_vec();
    buf.extend_from_slice(payload);
    // efivarfs replaces a variable on write and does not truncate.
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(!efivarfs)
        .open(&path)
        .with_context(|| format!("cannot open {} for writing", path.display()))?;
    let n = f
        .write(&buf)
        .with_context(|| format!("cannot write {} ({} bytes)", path.display(), buf.len()))?;
    if n != buf.len() {
        bail!(
            "short write to {}: {n} of {} bytes",
            path.display(),
            buf.len()
        );
    }
    Ok(())
}

/// Write the captured entries that point at recreated partitions into the
/// efivars directory `dir`, and BootOrder.
pub fn recreate_entries(dir: &Path, efi: &Efi, recreated_guids: &HashSet<String>) -> Outcome {
    let (chosen, skipped) = select(efi, recreated_guids);
    let mut out = Outcome {
        wanted: chosen.len(),
        skipped,
        ..Outcome::default()
    };
    if chosen.is_empty() {
        return out;
    }
    let mut existing = match existing_entries(dir) {
        Ok(e) => e,
        Err(e) => {
            out.failed.push(format!("{e:#}"));
            return out;
        }
    };
    let efivarfs = is_efivarfs(dir);
    let mut recreated: Vec<(u16, bool)> = Vec::new();
    for e in chosen {
        let payload = match unhex(&e.raw) {
            Ok(p) => p,
            Err(err) => {
                out.failed
                    .push(format!("Boot{}: malformed load option: {err:#}", e.number));
                continue;
            }
        };
        let captured = u16::from_str_radix(&e.number, 16).unwrap_or(0);
        let in_order = efi.boot_order.is_empty()
            || efi
                .boot_order
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&e.number));
        if let Some((&n, _)) = existing
            .iter()
            .find(|(_, p)| p.as_deref() == Some(&payload[..]))
        {
            out.written
                .push((e.number.clone(), format!("{n:04X}"), true));
            recreated.push((n, in_order));
            continue;
        }
        let number = if !existing.contains_key(&captured) {
            Some(captured)
        } else {
            (0..=u16::MAX).find(|n| !existing.contains_key(n))
        };
        let Some(number) = number else {
            out.failed
                .push(format!("Boot{}: no free entry number", e.number));
            continue;
        };
        let name = format!("Boot{number:04X}");
        match write_var(dir, &name, &payload, efivarfs) {
            Ok(()) => {
                existing.insert(number, Some(payload));
                out.written
                    .push((e.number.clone(), format!("{number:04X}"), false));
                recreated.push((number, in_order));
            }
            Err(err) => out.failed.push(format!("Boot{}: {err:#}", e.number)),
        }
    }
    if recreated.is_empty() {
        return out;
    }
    let current = read_boot_order(dir);
    let mut order: Vec<u16> = Vec::new();
    for n in recreated
        .iter()
        .filter(|(_, in_order)| *in_order)
        .map(|(n, _)| *n)
        .chain(current.iter().copied())
    {
        if !order.contains(&n) {
            order.push(n);
        }
    }
    if order != current {
        let bytes: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
        match write_var(dir, "BootOrder", &bytes, efivarfs) {
            Ok(()) => out.boot_order = Some(order.iter().map(|n| format!("{n:04X}")).collect()),
            Err(err) => out.failed.push(format!("BootOrder: {err:#}")),
        }
    }
    out
}

/// Make sure efivarfs is mounted on `dir` (loading its module if needed).
pub fn ensure_efivarfs(dir: &Path) -> Result<()> {
    ensure!(
        Path::new("/sys/firmware/efi").is_dir(),
        "this machine did not boot through UEFI (no /sys/firmware/efi)"
    );
    if is_efivarfs(dir) {
        return Ok(());
    }
    if let Ok(index) = crate::kmod::Index::running() {
        let mut loader = crate::kmod::Loader::new(index);
        loader.load("efivarfs");
    }
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("efivarfs"),
        dir,
        Some("efivarfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .with_context(|| format!("cannot mount efivarfs on {}", dir.display()))?;
    ensure!(
        is_efivarfs(dir),
        "{} is not efivarfs after mounting it",
        dir.display()
    );
    Ok(())
}

/// The removable-media loader name for an architecture (`uname -m`).
pub fn removable_name(arch: &str) -> &'static str {
    match arch {
        "aarch64" | "arm64" => "BOOTAA64.EFI",
        "i386" | "i486" | "i586" | "i686" => "BOOTIA32.EFI",
        "riscv64" => "BOOTRISCV64.EFI",
        "armv7l" | "arm" => "BOOTARM.EFI",
        _ => "BOOTX64.EFI",
    }
}

/// A path below `root` given as `\EFI\debian\shimx64.efi`, each component
/// matched without regard to case (FAT is case-insensitive; so is the
/// firmware). `None` when a component does not exist.
pub fn find_ci(root: &Path, efi_path: &str) -> Option<PathBuf> {
    let mut at = root.to_path_buf();
    for comp in efi_path.split(['\\', '/']).filter(|c| !c.is_empty()) {
        let exact = at.join(comp);
        if exact.exists() {
            at = exact;
            continue;
        }
        let found = std::fs::read_dir(&at).ok()?.flatten().find(|d| {
            d.file_name()
                .to_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(comp))
        })?;
        at = found.path();
    }
    Some(at)
}

/// Make `\EFI\BOOT\BOOTX64.EFI` on the ESP mounted at `esp` boot the
/// system: if it is absent, copy the entry's loader there (and, for shim,
/// the grub and MokManager images it chains to). Returns what was copied.
pub fn removable_fallback(esp: &Path, loader: &str, arch: &str) -> Result<Vec<String>> {
    let name = removable_name(arch);
    if let Some(p) = find_ci(esp, &format!("\\EFI\\BOOT\\{name}")) {
        return Ok(vec![format!("{} already there", p.display())]);
    }
    let src = find_ci(esp, loader).with_context(|| {
        format!(
            "the loader {loader} is not on the ESP mounted at {}",
            esp.display()
        )
    })?;
    let efi_dir = find_ci(esp, "\\EFI").unwrap_or_else(|| esp.join("EFI"));
    let boot_dir = find_ci(&efi_dir, "BOOT").unwrap_or_else(|| efi_dir.join("BOOT"));
    std::fs::create_dir_all(&boot_dir)
        .with_context(|| format!("cannot create {}", boot_dir.display()))?;
    let mut copied = Vec::new();
    let mut copy = |from: &Path, to: PathBuf| -> Result<()> {
        std::fs::copy(from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        copied.push(format!("{} -> {}", from.display(), to.display()));
        Ok(())
    };
    copy(&src, boot_dir.join(name))?;
    let file = src
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if let Some(suffix) = file.strip_prefix("shim") {
        let dir = src.parent().unwrap_or(esp);
        for prefix in ["grub", "mm"] {
            let sibling = format!("{prefix}{suffix}");
            if let Some(from) = find_ci(dir, &sibling)
                && find_ci(&boot_dir, &sibling).is_none()
            {
                copy(&from, boot_dir.join(&sibling))?;
            }
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESP: &str = "11111111-2222-4333-8444-555555555501";

    fn entry(number: &str, guid: Option<&str>, raw: &str) -> EfiEntry {
        EfiEntry {
            number: number.into(),
            description: format!("entry {number}"),
            active: true,
            partition_guid: guid.map(Into::into),
            partition_number: guid.map(|_| 1),
            path: guid.map(|_| "\\EFI\\debian\\shimx64.efi".to_string()),
            raw: raw.into(),
        }
    }

    fn efi() -> Efi {
        Efi {
            boot_order: vec!["0003".into(), "0001".into(), "0000".into()],
            boot_current: Some("0003".into()),
            entries: vec![
                entry("0000", None, "01000000aa"),
                entry("0001", Some(ESP), "01000000bb"),
                entry("0003", Some(ESP), "01000000cc"),
                entry(
                    "0004",
                    Some("99999999-2222-4333-8444-555555555501"),
                    "01000000dd",
                ),
            ],
        }
    }

    fn guids() -> HashSet<String> {
        [ESP.to_string()].into()
    }

    fn var(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(var_path(dir, name)).unwrap()
    }

    fn put(dir: &Path, name: &str, payload: &[u8]) {
        let mut b = 7u32.to_le_bytes().to_vec();
        b.extend_from_slice(payload);
        std::fs::write(var_path(dir, name), b).unwrap();
    }

    fn order(dir: &Path) -> Vec<u16> {
        read_boot_order(dir)
    }

    #[test]
    fn fresh_directory_gets_the_captured_numbers_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = recreate_entries(dir.path(), &efi(), &guids());
        assert_eq!(out.wanted, 2);
        assert!(out.failed.is_empty(), "{:?}", out.failed);
        assert_eq!(
            out.written,
            [
                ("0003".into(), "0003".into(), false),
                ("0001".into(), "0001".into(), false)
            ]
        );
        assert_eq!(var(dir.path(), "Boot0003"), [7, 0, 0, 0, 1, 0, 0, 0, 0xcc]);
        assert_eq!(var(dir.path(), "Boot0001"), [7, 0, 0, 0, 1, 0, 0, 0, 0xbb]);
        assert!(!var_path(dir.path(), "Boot0000").exists(), "network entry");
        assert!(!var_path(dir.path(), "Boot0004").exists(), "other disk");
        assert_eq!(out.skipped.len(), 2);
        assert!(out.skipped[0].contains("firmware, network"));
        assert!(out.skipped[1].contains("did not recreate"));
        assert_eq!(order(dir.path()), [3, 1]);
    }

    #[test]
    fn a_second_run_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        recreate_entries(dir.path(), &efi(), &guids());
        let before = std::fs::read_dir(dir.path()).unwrap().count();
        let out = recreate_entries(dir.path(), &efi(), &guids());
        assert!(out.written.iter().all(|w| w.2), "{:?}", out.written);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
        assert_eq!(order(dir.path()), [3, 1]);
        assert_eq!(out.boot_order, None, "BootOrder unchanged");
    }

    #[test]
    fn identical_entry_under_another_number_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "Boot0007", &[1, 0, 0, 0, 0xcc]);
        let out = recreate_entries(dir.path(), &efi(), &guids());
        assert_eq!(out.written[0], ("0003".into(), "0007".into(), true));
        assert!(!var_path(dir.path(), "Boot0003").exists());
    }

    #[test]
    fn taken_number_moves_to_the_lowest_free_one() {
        let dir = tempfile::tempdir().unwrap();
        // The firmware's own entries hold 0000, 0001 and 0003.
        put(dir.path(), "Boot0000", b"fw0");
        put(dir.path(), "Boot0001", b"fw1");
        put(dir.path(), "Boot0003", b"fw3");
        put(dir.path(), "BootOrder", &[0, 0, 1, 0, 3, 0]);
        let out = recreate_entries(dir.path(), &efi(), &guids());
        assert_eq!(
            out.written,
            [
                ("0003".into(), "0002".into(), false),
                ("0001".into(), "0004".into(), false)
            ]
        );
        assert_eq!(var(dir.path(), "Boot0001")[4..], *b"fw1", "left alone");
        assert_eq!(var(dir.path(), "Boot0002")[4..], [1, 0, 0, 0, 0xcc]);
        // Recreated first, in captured order, then the target's, deduplicated.
        assert_eq!(order(dir.path()), [2, 4, 0, 1, 3]);
        assert_eq!(
            out.boot_order.unwrap(),
            ["0002", "0004", "0000", "0001", "0003"]
        );
    }

    #[test]
    fn boot_order_merge_keeps_no_repeats() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "Boot0003", &[1, 0, 0, 0, 0xcc]);
        put(dir.path(), "BootOrder", &[9, 0, 3, 0]);
        recreate_entries(dir.path(), &efi(), &guids());
        assert_eq!(order(dir.path()), [3, 1, 9]);
    }

    #[test]
    fn nothing_to_write_when_no_partition_was_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let out = recreate_entries(dir.path(), &efi(), &HashSet::new());
        assert_eq!(out.wanted, 0);
        assert!(out.written.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_refused_write_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-efivars");
        let out = recreate_entries(&missing, &efi(), &guids());
        assert_eq!(out.wanted, 2);
        assert!(out.written.is_empty());
        assert!(out.failed[0].contains("no-efivars"), "{:?}", out.failed);
    }

    #[test]
    fn removable_path_gets_shim_grub_and_mokmanager() {
        let esp = tempfile::tempdir().unwrap();
        let deb = esp.path().join("EFI/debian");
        std::fs::create_dir_all(&deb).unwrap();
        std::fs::write(deb.join("shimx64.efi"), b"shim").unwrap();
        std::fs::write(deb.join("grubx64.efi"), b"grub").unwrap();
        std::fs::write(deb.join("mmx64.efi"), b"mok").unwrap();
        let copied =
            removable_fallback(esp.path(), "\\EFI\\Debian\\SHIMX64.EFI", "x86_64").unwrap();
        assert_eq!(copied.len(), 3, "{copied:?}");
        let boot = esp.path().join("EFI/BOOT");
        assert_eq!(std::fs::read(boot.join("BOOTX64.EFI")).unwrap(), b"shim");
        assert_eq!(std::fs::read(boot.join("grubx64.efi")).unwrap(), b"grub");
        assert_eq!(std::fs::read(boot.join("mmx64.efi")).unwrap(), b"mok");
        // Present already: left alone.
        std::fs::write(boot.join("BOOTX64.EFI"), b"vendor").unwrap();
        let again = removable_fallback(esp.path(), "\\EFI\\debian\\shimx64.efi", "x86_64").unwrap();
        assert!(again[0].contains("already there"));
        assert_eq!(std::fs::read(boot.join("BOOTX64.EFI")).unwrap(), b"vendor");
    }

    #[test]
    fn removable_path_for_plain_grub_and_missing_loader() {
        let esp = tempfile::tempdir().unwrap();
        let d = esp.path().join("EFI/arch");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("grubx64.efi"), b"grub").unwrap();
        let copied = removable_fallback(esp.path(), "\\EFI\\arch\\grubx64.efi", "x86_64").unwrap();
        assert_eq!(copied.len(), 1);
        assert_eq!(
            std::fs::read(esp.path().join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
            b"grub"
        );
        let esp2 = tempfile::tempdir().unwrap();
        let err = removable_fallback(esp2.path(), "\\EFI\\x\\grubx64.efi", "x86_64").unwrap_err();
        assert!(format!("{err:#}").contains("not on the ESP"));
        assert_eq!(removable_name("aarch64"), "BOOTAA64.EFI");
    }
}
