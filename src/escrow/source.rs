//! The capture's side of escrow: each captured LUKS volume's volume key,
//! read from its open mapping (`dmsetup table --showkeys`: no passphrase,
//! nothing written to the machine), put with the server, and named in the
//! manifest's `<escrow>`.
//!
//! LUKS2 opened by cryptsetup ≥ 2.0 keeps the key in the kernel keyring as
//! a `logon` key, which no program can read back; such a volume's key is
//! given once by the operator (`--luks-volume-key NAME=FILE`, the file
//! `cryptsetup luksDump --dump-volume-key --volume-key-file` writes after
//! asking a passphrase), or, when the server already holds one for the
//! volume's UUID, that one is named. A volume left without a key is a
//! warning: its recovery will stop at the plan, before any write.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::api::{EscrowKey, EscrowedKey, KIND_VOLUME_KEY, KeyInfo};
use crate::manifest::{LuksEscrow, Manifest};
use crate::stack::luks::{self, MappingKey};

/// Where keys go: the recovery server, for the captured host.
pub trait KeyVault: std::fmt::Debug + Send + Sync {
    /// Escrow a key (the host's token may put, never get).
    fn escrow(&self, key: &EscrowKey) -> Result<EscrowedKey>;
    /// What the server holds for the host, without keys.
    fn escrowed(&self) -> Result<Vec<KeyInfo>>;
}

/// The operator's consent to escrow, and what it needs.
#[derive(Debug, Clone)]
pub struct EscrowOptions {
    pub vault: Arc<dyn KeyVault>,
    /// Volume keys given by file, by mapping name (for mappings whose key
    /// is in the kernel keyring).
    pub key_files: Vec<(String, PathBuf)>,
}

/// How the running system's mappings are read.
pub trait Mappings {
    /// `dmsetup table --showkeys NAME`'s output.
    fn table(&mut self, mapping: &str) -> Result<String>;
}

/// The running system.
pub struct SystemMappings;

impl Mappings for SystemMappings {
    fn table(&mut self, mapping: &str) -> Result<String> {
        let argv = luks::show_keys_command(mapping);
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        crate::cmd::run(&argv[0], &args)
    }
}

/// Escrow the volume key of every LUKS volume of `m` and record it as
/// `<escrow>`; what cannot be escrowed is a warning naming the volume and
/// what to do. Notes (keyslots bound to a TPM2 or FIDO2 device) go to
/// `notes`.
pub fn escrow_luks_keys(
    m: &mut Manifest,
    opts: &EscrowOptions,
    mappings: &mut dyn Mappings,
    warnings: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let mut held: Option<Vec<KeyInfo>> = None;
    for l in m.luks.iter_mut() {
        for k in l.keyslots.iter().filter(|k| k.hardware_bound()) {
            notes.push(format!(
                "LUKS volume {}: keyslot {} is bound to a {} token; after a recovery onto other hardware it needs enrolling again (systemd-cryptenroll); the escrowed volume key does not depend on it",
                l.name,
                k.id,
                k.token.as_deref().unwrap_or_default()
            ));
        }
        let key = match volume_key(&l.name, l.key_size, opts, mappings) {
            Ok(k) => k,
            Err(e) => {
                warnings.push(format!(
                    "LUKS volume {}: no key escrowed: {e:#}; its recovery will stop at the plan",
                    l.name
                ));
                continue;
            }
        };
        let escrowed = match key {
            Some(key) => opts
                .vault
                .escrow(&EscrowKey {
                    volume_uuid: l.uuid.to_string(),
                    name: l.name.clone(),
                    kind: KIND_VOLUME_KEY.into(),
                    key: crate::util::hex::encode(&key),
                })
                .map(|e| Some(e.key_id)),
            None => {
                // In the keyring: a key the server already holds for this
                // volume (escrowed once by hand), the newest.
                if held.is_none() {
                    held = Some(opts.vault.escrowed().unwrap_or_default());
                }
                let uuid = l.uuid.to_string().to_ascii_lowercase();
                Ok(held
                    .iter()
                    .flatten()
                    .rfind(|k| k.volume_uuid == uuid && k.kind == KIND_VOLUME_KEY)
                    .map(|k| k.key_id.clone()))
            }
        };
        match escrowed {
            Ok(Some(key_id)) => {
                l.escrow = Some(LuksEscrow {
                    kind: KIND_VOLUME_KEY.into(),
                    key_id,
                })
            }
            Ok(None) => warnings.push(format!(
                "LUKS volume {name}: no key escrowed: its mapping keeps the volume key in the kernel keyring (LUKS2's default), where no program can read it; escrow it once: `cryptsetup luksDump --dump-volume-key --volume-key-file /root/{name}.vk DEVICE` (asks a passphrase), then `rewind capture --escrow-luks-keys --luks-volume-key {name}=/root/{name}.vk ...` and remove the file; its recovery will stop at the plan until then",
                name = l.name
            )),
            Err(e) => warnings.push(format!(
                "LUKS volume {}: the server did not take its key: {e:#}; its recovery will stop at the plan",
                l.name
            )),
        }
    }
}

/// [`escrow_luks_keys`] on the running system, its notes on stderr; without
/// the operator's consent, a warning for each LUKS volume.
pub fn escrow_captured(m: &mut Manifest, opts: Option<&EscrowOptions>, warnings: &mut Vec<String>) {
    let Some(opts) = opts else {
        for l in &m.luks {
            warnings.push(format!(
                "LUKS volume {}: no key escrowed, so its recovery will stop at the plan (recovery never waits at a passphrase prompt): capture to the server with --escrow-luks-keys (REWIND_ESCROW_LUKS_KEYS=1 for the capture service)",
                l.name
            ));
        }
        return;
    };
    let mut notes = Vec::new();
    escrow_luks_keys(m, opts, &mut SystemMappings, warnings, &mut notes);
    for n in notes {
        eprintln!("rewind: note: {n}");
    }
}

/// The volume key of mapping `name`: from `--luks-volume-key`, else from
/// its table; `None` when it is in the kernel keyring.
fn volume_key(
    name: &str,
    key_bits: u32,
    opts: &EscrowOptions,
    mappings: &mut dyn Mappings,
) -> Result<Option<Vec<u8>>> {
    let key = match opts.key_files.iter().find(|(n, _)| n == name) {
        Some((_, path)) => std::fs::read(path)
            .with_context(|| format!("cannot read the volume key file {}", path.display()))?,
        None => {
            let table = mappings
                .table(name)
                .with_context(|| format!("cannot read the table of mapping {name}"))?;
            match luks::parse_crypt_table(&table)
                .with_context(|| format!("the table of mapping {name}"))?
            {
                MappingKey::Volume(k) => k,
                MappingKey::Keyring(_) => return Ok(None),
            }
        }
    };
    anyhow::ensure!(
        key.len() * 8 == key_bits as usize,
        "the volume key is {} bits, the header says {key_bits}",
        key.len() * 8
    );
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Vault {
        put: Mutex<Vec<EscrowKey>>,
        held: Vec<KeyInfo>,
    }

    impl KeyVault for Vault {
        fn escrow(&self, key: &EscrowKey) -> Result<EscrowedKey> {
            self.put.lock().unwrap().push(key.clone());
            Ok(EscrowedKey {
                key_id: format!("{}-1", key.volume_uuid),
                new: true,
            })
        }
        fn escrowed(&self) -> Result<Vec<KeyInfo>> {
            Ok(self.held.clone())
        }
    }

    struct Tables(Vec<(String, String)>);

    impl Mappings for Tables {
        fn table(&mut self, mapping: &str) -> Result<String> {
            self.0
                .iter()
                .find(|(n, _)| *n == mapping)
                .map(|(_, t)| t.clone())
                .context("no such mapping")
        }
    }

    #[test]
    fn keys_are_escrowed_from_tables_or_named_when_held() {
        let mut m = crate::manifest::stack_tests::sample_stack();
        for l in m.luks.iter_mut() {
            l.escrow = None;
        }
        let names: Vec<String> = m.luks.iter().map(|l| l.name.clone()).collect();
        let bits = m.luks[0].key_size as usize;
        let key = "ab".repeat(bits / 8);
        let uuid1 = m.luks[1].uuid.to_string();
        let vault = Arc::new(Vault {
            held: vec![KeyInfo {
                key_id: format!("{uuid1}-3"),
                volume_uuid: uuid1.clone(),
                name: names[1].clone(),
                kind: KIND_VOLUME_KEY.into(),
                created: "2026-11-30T12:00:00Z".into(),
                master: "f".into(),
            }],
            ..Vault::default()
        });
        let opts = EscrowOptions {
            vault: vault.clone(),
            key_files: vec![],
        };
        let mut tables = Tables(vec![
            (
                names[0].clone(),
                format!("0 8 crypt aes-xts-plain64 {key} 0 9:127 32768\n"),
            ),
            (
                names[1].clone(),
                "0 8 crypt aes-xts-plain64 :64:logon:cryptsetup:x-d0 0 9:127 32768\n".into(),
            ),
        ]);
        let (mut warnings, mut notes) = (vec![], vec![]);
        escrow_luks_keys(&mut m, &opts, &mut tables, &mut warnings, &mut notes);
        assert!(warnings.is_empty(), "{warnings:?}");
        let put = vault.put.lock().unwrap().clone();
        assert_eq!(put.len(), 1);
        assert_eq!(put[0].key, key);
        assert_eq!(
            m.luks[0].escrow.as_ref().unwrap().key_id,
            format!("{}-1", m.luks[0].uuid)
        );
        assert_eq!(
            m.luks[1].escrow.as_ref().unwrap().key_id,
            format!("{uuid1}-3")
        );
        // The TPM2-bound keyslot of the sample is named.
        assert!(
            notes.iter().any(|n| n.contains("systemd-tpm2")),
            "{notes:?}"
        );

        // Keyring, nothing held: a warning saying how to escrow it.
        let empty = EscrowOptions {
            vault: Arc::new(Vault::default()),
            key_files: vec![],
        };
        let (mut warnings, mut notes) = (vec![], vec![]);
        escrow_luks_keys(&mut m, &empty, &mut tables, &mut warnings, &mut notes);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("--luks-volume-key"), "{warnings:?}");
        // A key of the wrong size is refused, naming the volume.
        let mut short = Tables(vec![(
            names[0].clone(),
            "0 8 crypt aes-xts-plain64 abcd 0 9:127 32768\n".into(),
        )]);
        let (mut warnings, mut notes) = (vec![], vec![]);
        escrow_luks_keys(&mut m, &empty, &mut short, &mut warnings, &mut notes);
        assert!(warnings[0].contains("is 16 bits"), "{warnings:?}");
    }
}
