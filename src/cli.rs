//! The command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::manifest;
use crate::probe::{self, ProbeOptions};

#[derive(Parser, Debug)]
#[command(
    name = "rewind",
    version,
    about = "Bring a dead Linux machine back, whole, at a point in time",
    long_about = "rewind records a machine's configuration (disks, partition tables, \
filesystems, network, boot loader) as an XML manifest so that the machine can be \
recreated on new disks with no one at the keyboard."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Record this machine's configuration as a manifest.
    Capture(CaptureArgs),
    /// Work with manifest files.
    #[command(subcommand)]
    Manifest(ManifestCommand),
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    rewind capture --manifest-only                 print this machine's manifest\n  \
    rewind capture --manifest-only -o web1.xml     write it to a file\n  \
    rewind capture --manifest-only --disk /dev/sdb only the disk /dev/sdb")]
pub struct CaptureArgs {
    /// Record the configuration only (partition tables, filesystems, network,
    /// boot loader), not the data.
    #[arg(long)]
    pub manifest_only: bool,
    /// Where to write the manifest; `-` is standard output.
    #[arg(short, long, value_name = "FILE", default_value = "-")]
    pub output: PathBuf,
    /// A disk to capture (device path, by-id links accepted); repeatable.
    /// Default: every disk backed by hardware (not loop, ram or zram devices).
    #[arg(long = "disk", value_name = "DEVICE")]
    pub disks: Vec<PathBuf>,
    /// The host name the snapshot is filed under (default: the system's).
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Check that a manifest is well formed and consistent; prints every
    /// problem with its element path.
    Validate {
        /// The manifest file.
        file: PathBuf,
    },
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Capture(args) => capture(args),
        Command::Manifest(ManifestCommand::Validate { file }) => {
            let m = manifest::load(&file)?;
            println!(
                "{}: valid manifest of {} taken {} ({} disks, {} filesystems, {} swap areas)",
                file.display(),
                m.snapshot.host,
                m.snapshot.time,
                m.disks.len(),
                m.filesystems.len(),
                m.swaps.len()
            );
            Ok(())
        }
    }
}

fn capture(args: CaptureArgs) -> Result<()> {
    if !args.manifest_only {
        bail!(
            "this rewind records the configuration only: pass --manifest-only \
             (backing up the data comes with the repository)"
        );
    }
    let probed = probe::probe(&ProbeOptions {
        disks: args.disks,
        host: args.host,
        ..ProbeOptions::default()
    })?;
    for w in &probed.warnings {
        eprintln!("rewind: warning: {w}");
    }
    let xml = manifest::to_xml(&probed.manifest).context("cannot serialize the manifest")?;
    if args.output == Path::new("-") {
        std::io::stdout()
            .write_all(xml.as_bytes())
            .context("cannot write to standard output")?;
    } else {
        write_atomically(&args.output, xml.as_bytes())?;
        eprintln!(
            "rewind: wrote {} ({} disks, {} filesystems, {} swap areas)",
            args.output.display(),
            probed.manifest.disks.len(),
            probed.manifest.filesystems.len(),
            probed.manifest.swaps.len()
        );
    }
    Ok(())
}

/// Write through a temporary file in the same directory and rename it into
/// place, so that a crash never leaves a half-written manifest.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().context("output path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}
