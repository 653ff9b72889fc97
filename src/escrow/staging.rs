//! The recovery's side of escrow: before anything is written, each LUKS
//! volume the plan makes gets its escrowed volume key (released by the
//! server to this armed recovery) and its captured header (from the
//! repository) as files on the live image's tmpfs, mode 0600 in a 0700
//! directory, where the stack's `cryptsetup` commands read them
//! (`layout::stack::WORK_DIR`). A key that cannot be had fails the plan
//! stage, so a recovery never reaches a volume it cannot open, and never
//! waits at a passphrase prompt. The key file is removed once the volume
//! is open (`layout::stack_run`), and every staged file when [`Staged`]
//! is dropped, whatever happened.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use crate::api::{KIND_VOLUME_KEY, ReleasedKey};
use crate::layout::plan::Plan;
use crate::layout::stack::Expect;
use crate::manifest::RawData;
use crate::repo::Repo;
use crate::stack::luks;

/// The files staged for the stack; removed on drop.
#[derive(Debug, Default)]
pub struct Staged {
    pub files: Vec<PathBuf>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The volume key file of mapping `name` under `dir` (what the plan's
/// `cryptsetup` commands name).
pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    PathBuf::from(luks::key_file(&dir.to_string_lossy(), name))
}

/// The header file of mapping `name` under `dir`.
pub fn header_path(dir: &Path, name: &str) -> PathBuf {
    PathBuf::from(luks::header_file(&dir.to_string_lossy(), name))
}

/// Stage the key and header of every LUKS volume of `plan` under `dir`.
/// `fetch(key_id)` asks the server for an escrowed key.
pub fn stage(
    plan: &Plan,
    repo: Option<&Repo>,
    fetch: &dyn Fn(&str) -> Result<ReleasedKey>,
    dir: &Path,
) -> Result<Staged> {
    let mut staged = Staged::default();
    for step in &plan.stack {
        let Expect::Luks(l) = &step.expect else {
            continue;
        };
        let Some(escrow) = &l.escrow else {
            bail!(
                "{}: the manifest holds no escrowed key, and recovery never waits at a passphrase prompt: capture with `rewind capture --escrow-luks-keys` (docs/security.md, \"Escrowed LUKS keys\")",
                step.layer
            );
        };
        if staged.files.is_empty() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private", dir.display()))?;
        }
        let released = fetch(&escrow.key_id).with_context(|| {
            format!(
                "cannot get the escrowed key {} of {} from the server",
                escrow.key_id, step.layer
            )
        })?;
        ensure!(
            released.kind == KIND_VOLUME_KEY
                && released.volume_uuid.eq_ignore_ascii_case(l.uuid.as_str()),
            "the server's key {} is a {} of volume {}, not the volume key of {} ({})",
            escrow.key_id,
            released.kind,
            released.volume_uuid,
            step.layer,
            l.uuid
        );
        let key = crate::util::hex::decode(&released.key).context("the server's key is not hex")?;
        ensure!(
            key.len() * 8 == l.key_size as usize,
            "the escrowed key of {} is {} bits, the volume's key is {}",
            step.layer,
            key.len() * 8,
            l.key_size
        );
        let path = key_path(dir, &l.name);
        write_private(&path, &mut key.as_slice(), &mut staged)?;
        if let Some(h) = &l.header {
            let repo =
                repo.context("the snapshot's header is in the repository, which is not open")?;
            let raw = RawData {
                region: "luks-header".into(),
                tree: h.tree.clone(),
                bytes: h.bytes,
            };
            let mut reader = crate::raw_regions::open_region(repo, &raw)
                .with_context(|| format!("cannot read the captured header of {}", step.layer))?;
            write_private(&header_path(dir, &l.name), &mut reader, &mut staged)?;
        }
    }
    Ok(staged)
}

/// Write a new file with mode 0600 from the first byte on.
fn write_private(path: &Path, from: &mut dyn Read, staged: &mut Staged) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    staged.files.push(path.to_path_buf());
    std::io::copy(from, &mut f)
        .and_then(|_| f.flush())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::plan::{PlanOptions, plan};
    use crate::layout::present::PresentDisk;
    use crate::manifest::LuksEscrow;

    #[test]
    fn keys_are_staged_private_checked_and_removed() {
        let mut m = crate::manifest::stack_tests::sample_stack();
        // The second volume only (the first's header is in a repository).
        m.luks[0].header = None;
        m.luks[1].escrow = Some(LuksEscrow {
            kind: KIND_VOLUME_KEY.into(),
            key_id: "k2".into(),
        });
        let present: Vec<PresentDisk> = ["sda", "sdb", "sdc", "sdd"]
            .iter()
            .zip([8u64 << 30, 8 << 30, 4 << 30, 4 << 30])
            .map(|(n, size)| PresentDisk::bare(n, size))
            .collect();
        let p = plan(&m, &present, &PlanOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("stack");
        let luks = m.luks.clone();
        let fetch = |id: &str| -> Result<ReleasedKey> {
            let l = luks
                .iter()
                .find(|l| l.escrow.as_ref().is_some_and(|e| e.key_id == id))
                .unwrap();
            Ok(ReleasedKey {
                key_id: id.into(),
                volume_uuid: l.uuid.to_string(),
                kind: KIND_VOLUME_KEY.into(),
                key: "42".repeat(l.key_size as usize / 8),
            })
        };
        let staged = stage(&p, None, &fetch, &work).unwrap();
        let k = key_path(&work, "secret");
        assert_eq!(std::fs::read(&k).unwrap(), vec![0x42; 32]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&k), 0o600);
        assert_eq!(mode(&work), 0o700);
        drop(staged);
        assert!(!k.exists(), "removed on drop");

        // A key of another volume, or of the wrong size: refused.
        let wrong = |id: &str| -> Result<ReleasedKey> {
            Ok(ReleasedKey {
                key_id: id.into(),
                volume_uuid: "00000000-0000-4000-8000-000000000000".into(),
                kind: KIND_VOLUME_KEY.into(),
                key: "42".repeat(64),
            })
        };
        let e = stage(&p, None, &wrong, &work).unwrap_err();
        assert!(format!("{e:#}").contains("not the volume key of"), "{e:#}");
        let refused = |_: &str| -> Result<ReleasedKey> { bail!("403 Forbidden") };
        let e = stage(&p, None, &refused, &work).unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot get the escrowed key"),
            "{e:#}"
        );
    }
}
