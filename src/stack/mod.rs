//! The storage stack's layers between disks and filesystems — MD RAID,
//! LUKS, LVM — the way `fs` does filesystems: each layer's module reads
//! what the real tools report (machine-readable output, headers) into the
//! manifest's elements, and builds the command lines that make the layer
//! again from them. Pure: no command is run here (capture and recovery run
//! them through `crate::cmd`), so every parser and command line is tested
//! on committed fixtures of real tool output (tests/fixtures/stack/).

pub mod luks;
pub mod lvm;
pub mod md;

/// A command line: the program, then its arguments.
pub type Argv = Vec<String>;

/// A command line from its words.
pub(crate) fn argv(parts: &[&str]) -> Argv {
    parts.iter().map(|s| s.to_string()).collect()
}
