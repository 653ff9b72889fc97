//! The stages of a recovery, named once.
//!
//! The console's marker lines (`rewind: == stage fetch == [9.4 s since
//! boot]`), the file PID 1 reads to say where a recovery died, the progress
//! the server stores and shows, `rewind recreate`'s `== partition` lines, the
//! QEMU drills and docs/boot.md all spell a stage the same way: its lowercase
//! name, [`Stage::as_str`]. Those names are a wire format (the server keeps
//! them, tests match the console), so a stage is renamed nowhere but here and
//! only with care; a new stage is a new variant and a place in [`Stage::ALL`].
//!
//! This module depends on nothing in the crate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One stage of the recovery pipeline, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The live image loads the kernel modules its devices ask for.
    Hardware,
    /// The live image brings the network up (DHCP or `ip=`).
    Network,
    /// Who the token is, which host this is, the armed request, the manifest.
    Fetch,
    /// Captured disks mapped onto present ones; printed, nothing written.
    Plan,
    /// Partition tables written.
    Partition,
    /// Filesystems, swap and raw regions made.
    Format,
    /// Filesystems mounted under the target root.
    Mount,
    /// File trees restored from the repository.
    Restore,
    /// The restored system made to fit this machine.
    Configure,
    /// Boot code, GRUB and UEFI boot entries.
    Bootloader,
    /// Unmount, flush, report the result.
    Finish,
}

impl Stage {
    /// Every stage in the order a recovery runs them. The live image runs
    /// them all; `rewind recover` outside it starts at [`Stage::Fetch`];
    /// `rewind recreate` runs [`Stage::Plan`] to [`Stage::Mount`].
    pub const ALL: [Stage; 11] = [
        Stage::Hardware,
        Stage::Network,
        Stage::Fetch,
        Stage::Plan,
        Stage::Partition,
        Stage::Format,
        Stage::Mount,
        Stage::Restore,
        Stage::Configure,
        Stage::Bootloader,
        Stage::Finish,
    ];

    /// The stage's name on the console, in the stage file and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Hardware => "hardware",
            Stage::Network => "network",
            Stage::Fetch => "fetch",
            Stage::Plan => "plan",
            Stage::Partition => "partition",
            Stage::Format => "format",
            Stage::Mount => "mount",
            Stage::Restore => "restore",
            Stage::Configure => "configure",
            Stage::Bootloader => "bootloader",
            Stage::Finish => "finish",
        }
    }
}

impl fmt::Display for Stage {
    /// The name, padded as the format asks (`{stage:<12}`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A name that is not one of [`Stage::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStage(pub String);

impl fmt::Display for UnknownStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a recovery stage", self.0)
    }
}

impl std::error::Error for UnknownStage {}

impl FromStr for Stage {
    type Err = UnknownStage;

    fn from_str(s: &str) -> Result<Stage, UnknownStage> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| UnknownStage(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_keep_their_wire_spelling() {
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "hardware",
                "network",
                "fetch",
                "plan",
                "partition",
                "format",
                "mount",
                "restore",
                "configure",
                "bootloader",
                "finish"
            ]
        );
        for s in Stage::ALL {
            assert_eq!(s.to_string().parse::<Stage>(), Ok(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Stage>(&json).unwrap(), s);
        }
        assert_eq!(format!("[{:<7}]", Stage::Plan), "[plan   ]");
        assert!("Fetch".parse::<Stage>().is_err());
        assert!("start".parse::<Stage>().is_err());
        assert!("done".parse::<Stage>().is_err());
    }

    #[test]
    fn all_is_in_pipeline_order() {
        let mut sorted = Stage::ALL;
        sorted.sort();
        assert_eq!(sorted, Stage::ALL);
    }

    /// docs/boot.md lists the stages twice: the pipeline under "What happens
    /// at boot" and one bullet each (`- **partition, format, mount**:` for
    /// three). Both must be [`Stage::ALL`], in order.
    #[test]
    fn docs_boot_md_lists_every_stage_in_order() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/boot.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let want: Vec<String> = Stage::ALL.iter().map(|s| s.to_string()).collect();

        // The pipeline: the lines after `rewind recover --live` in the
        // section's code block, up to the one that reboots.
        let section = doc
            .split("## What happens at boot")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("docs/boot.md has a section \"What happens at boot\"");
        let block = section
            .split("```")
            .nth(1)
            .expect("the section opens with a code block");
        let pipeline: String = block
            .lines()
            .skip_while(|l| !l.contains("rewind recover --live"))
            .skip(1)
            .take_while(|l| !l.trim_start().starts_with("→ reboot"))
            .collect::<Vec<_>>()
            .join(" ");
        let drawn: Vec<String> = pipeline
            .split('→')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(drawn, want, "the pipeline drawn in docs/boot.md");

        // The bullets that describe each stage.
        let described: Vec<String> = section
            .lines()
            .filter_map(|l| l.strip_prefix("- **")?.split_once("**:"))
            .flat_map(|(names, _)| names.split(", ").map(str::to_string))
            .collect();
        assert_eq!(described, want, "the stages described in docs/boot.md");
    }
}
