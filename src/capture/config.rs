//! The capture's configuration file (`/etc/rewind/capture.toml`) and its hook
//! drop-ins (`/etc/rewind/hooks.d/*.toml`). One file says how a machine is
//! captured — snapshots or live, what is left out, which commands run around
//! it — so that the systemd unit and a capture by hand do the same thing;
//! command-line flags override it. Every setting is in docs/capture.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Where `rewind capture` looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/rewind/capture.toml";
/// Where hook drop-ins are read from unless `hooks_dir` says otherwise.
pub const DEFAULT_HOOKS_DIR: &str = "/etc/rewind/hooks.d";

/// What a capture leaves out unless `[exclude] defaults = false`: contents
/// that are recreated or refetched and never needed to start a machine. The
/// directories themselves are kept (empty, with their metadata).
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "/tmp/*",
    "/var/tmp/*",
    "/var/cache/apt/archives/*.deb",
    "/var/cache/apt/archives/partial/*",
    "/var/cache/apt/*.bin",
    "/var/crash/*",
    "/lost+found/*",
];

/// The whole file. Unknown keys are refused: a typo must not silently
/// change what is captured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub capture: CaptureSection,
    #[serde(default)]
    pub exclude: ExcludeSection,
    #[serde(default)]
    pub hooks: HooksSection,
    /// Hooks of this file; drop-ins add theirs after, in file name order.
    #[serde(default)]
    pub hook: Vec<Hook>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CaptureSection {
    /// Read every filesystem live, taking no snapshot (`--live`).
    #[serde(default)]
    pub live: bool,
    /// Back up only these mount points (`--only`).
    #[serde(default)]
    pub only: Vec<PathBuf>,
    /// Capture these disks (`--disk`).
    #[serde(default)]
    pub disks: Vec<PathBuf>,
    /// The host name snapshots are filed under (`--host`).
    pub host: Option<String>,
    /// Size of an LVM snapshot as a percentage of its LV (capped by the VG's
    /// free space); 100 by default: never too small, and it exists only
    /// while its filesystem is read.
    pub lvm_snapshot_percent: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExcludeSection {
    /// Apply [`DEFAULT_EXCLUDES`] and active swap files.
    #[serde(default = "yes")]
    pub defaults: bool,
    /// More patterns (`--exclude` adds to them).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Leave out the contents of directories holding a valid CACHEDIR.TAG.
    #[serde(default = "yes")]
    pub cachedir_tag: bool,
    /// Leave out files and directories with the nodump attribute (`chattr +d`).
    #[serde(default = "yes")]
    pub nodump: bool,
}

impl Default for ExcludeSection {
    fn default() -> Self {
        ExcludeSection {
            defaults: true,
            patterns: Vec::new(),
            cachedir_tag: true,
            nodump: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HooksSection {
    /// Where drop-ins are read from.
    #[serde(default = "default_hooks_dir")]
    pub dir: PathBuf,
    /// A hook's time limit unless it sets its own, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

impl Default for HooksSection {
    fn default() -> Self {
        HooksSection {
            dir: default_hooks_dir(),
            timeout: default_timeout(),
        }
    }
}

fn default_hooks_dir() -> PathBuf {
    PathBuf::from(DEFAULT_HOOKS_DIR)
}

fn default_timeout() -> u64 {
    300
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    BeforeCapture,
    AfterCapture,
    BeforeSnapshot,
    AfterSnapshot,
}

impl When {
    pub fn name(self) -> &'static str {
        match self {
            When::BeforeCapture => "before-capture",
            When::AfterCapture => "after-capture",
            When::BeforeSnapshot => "before-snapshot",
            When::AfterSnapshot => "after-snapshot",
        }
    }
}

/// What a failing pre-hook does to the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    #[default]
    Fail,
    Continue,
}

/// One `[[hook]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hook {
    /// A name for the log (default: the command).
    pub name: Option<String>,
    pub when: When,
    /// The command: a string run by `/bin/sh -c`, or an argv list.
    pub run: Command,
    /// Snapshot hooks: only around the filesystem mounted here.
    pub filesystem: Option<String>,
    /// Seconds; `[hooks] timeout` by default.
    pub timeout: Option<u64>,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The file it was read from, for messages.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

impl Hook {
    pub fn label(&self) -> String {
        match (&self.name, &self.run) {
            (Some(n), _) => n.clone(),
            (None, Command::Shell(s)) => s.clone(),
            (None, Command::Argv(a)) => a.join(" "),
        }
    }

    pub fn time_limit(&self, section: &HooksSection) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or(section.timeout))
    }

    /// Whether a snapshot hook applies to the filesystem mounted at `point`.
    pub fn applies_to(&self, point: &str) -> bool {
        self.filesystem.as_deref().is_none_or(|f| f == point)
    }
}

/// A drop-in: hooks only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DropIn {
    #[serde(default)]
    hook: Vec<Hook>,
}

impl Config {
    /// `--config PATH` (which must exist), or the default file if there is
    /// one, or the defaults; then the drop-ins of the hooks directory.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let mut config = match path {
            Some(p) => Config::read(p)?,
            None if Path::new(DEFAULT_PATH).exists() => Config::read(Path::new(DEFAULT_PATH))?,
            None => Config::default(),
        };
        config.read_drop_ins()?;
        Ok(config)
    }

    pub fn parse(text: &str, source: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text).with_context(|| {
            format!("{} is not a valid capture configuration", source.display())
        })?;
        for h in &mut config.hook {
            h.source = source.to_path_buf();
        }
        config.check(source)?;
        Ok(config)
    }

    fn read(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Config::parse(&text, path)
    }

    /// Add the hooks of every `*.toml` in the hooks directory, by name.
    fn read_drop_ins(&mut self) -> Result<()> {
        let dir = &self.hooks.dir;
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            let drop_in: DropIn = toml::from_str(&text)
                .with_context(|| format!("{} is not a valid hook drop-in", f.display()))?;
            for mut h in drop_in.hook {
                h.source = f.clone();
                check_hook(&h, &f)?;
                self.hook.push(h);
            }
        }
        Ok(())
    }

    fn check(&self, source: &Path) -> Result<()> {
        for h in &self.hook {
            check_hook(h, source)?;
        }
        for p in &self.exclude.patterns {
            if p.is_empty() {
                bail!("{}: an empty exclude pattern", source.display());
            }
        }
        if let Some(p) = self.capture.lvm_snapshot_percent
            && !(1..=100).contains(&p)
        {
            bail!(
                "{}: lvm-snapshot-percent is {p}; give 1 to 100",
                source.display()
            );
        }
        Ok(())
    }

    /// The exclude patterns in force: the defaults (unless turned off),
    /// active swap files, the file's and then `extra` (the command line's).
    pub fn exclude_patterns(&self, extra: &[String], no_defaults: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.exclude.defaults && !no_defaults {
            out.extend(DEFAULT_EXCLUDES.iter().map(|s| s.to_string()));
            out.extend(active_swap_files().iter().map(|p| glob_escape(p)));
        }
        out.extend(self.exclude.patterns.iter().cloned());
        out.extend(extra.iter().cloned());
        out
    }

    pub fn hooks(&self, when: When) -> impl Iterator<Item = &Hook> {
        self.hook.iter().filter(move |h| h.when == when)
    }
}

fn check_hook(h: &Hook, source: &Path) -> Result<()> {
    let empty = match &h.run {
        Command::Shell(s) => s.trim().is_empty(),
        Command::Argv(a) => a.is_empty() || a[0].is_empty(),
    };
    if empty {
        bail!(
            "{}: the {} hook {} has an empty `run`",
            source.display(),
            h.when.name(),
            h.name.as_deref().unwrap_or("")
        );
    }
    if h.filesystem.is_some() && matches!(h.when, When::BeforeCapture | When::AfterCapture) {
        bail!(
            "{}: hook {}: `filesystem` applies to before-snapshot and after-snapshot hooks only",
            source.display(),
            h.label()
        );
    }
    if h.timeout == Some(0) {
        bail!("{}: hook {}: timeout 0", source.display(), h.label());
    }
    Ok(())
}

/// Swap files in use (`/proc/swaps` type `file`): never worth backing up.
fn active_swap_files() -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/proc/swaps") else {
        return Vec::new();
    };
    parse_swap_files(&text)
}

fn parse_swap_files(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (path, kind) = (f.next()?, f.next()?);
            // /proc/swaps escapes spaces and the like as \040.
            (kind == "file").then(|| unescape_octal(path))
        })
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A literal path as a glob pattern.
pub fn glob_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_configuration_parses() {
        let text = r#"
[capture]
live = true
only = ["/", "/home"]
lvm-snapshot-percent = 20

[exclude]
defaults = false
patterns = ["/srv/scratch/*", "*.pyc"]
cachedir-tag = false

[hooks]
dir = "/tmp/hooks.d"
timeout = 30

[[hook]]
name = "postgres"
when = "before-snapshot"
filesystem = "/var/lib/postgresql"
run = ["psql", "-c", "CHECKPOINT"]
timeout = 10

[[hook]]
when = "after-capture"
run = "logger captured"
on-failure = "continue"
"#;
        let c = Config::parse(text, Path::new("capture.toml")).unwrap();
        assert!(c.capture.live);
        assert_eq!(c.capture.only.len(), 2);
        assert_eq!(c.capture.lvm_snapshot_percent, Some(20));
        assert!(!c.exclude.defaults && !c.exclude.cachedir_tag && c.exclude.nodump);
        assert_eq!(c.hooks.timeout, 30);
        assert_eq!(c.hook.len(), 2);
        assert_eq!(c.hook[0].label(), "postgres");
        assert!(c.hook[0].applies_to("/var/lib/postgresql") && !c.hook[0].applies_to("/"));
        assert_eq!(c.hook[0].time_limit(&c.hooks), Duration::from_secs(10));
        assert_eq!(c.hook[1].label(), "logger captured");
        assert_eq!(c.hook[1].on_failure, OnFailure::Continue);
        assert_eq!(c.hook[1].time_limit(&c.hooks), Duration::from_secs(30));
        assert_eq!(
            c.exclude_patterns(&["/x".into()], false),
            ["/srv/scratch/*", "*.pyc", "/x"]
        );
    }

    #[test]
    fn defaults_and_mistakes() {
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert!(!c.capture.live && c.exclude.defaults && c.exclude.nodump);
        let p = c.exclude_patterns(&[], false);
        assert!(p.iter().any(|p| p == "/var/tmp/*"), "{p:?}");
        assert!(c.exclude_patterns(&[], true).is_empty());
        // A typo is refused, naming the file and the key.
        let e = Config::parse("[exclude]\npatern = []\n", Path::new("/etc/c.toml")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("/etc/c.toml") && msg.contains("patern"),
            "{msg}"
        );
        let e = Config::parse(
            "[[hook]]\nwhen = \"before-capture\"\nrun = \"\"\n",
            Path::new("c"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("empty `run`"), "{e}");
        let e = Config::parse(
            "[[hook]]\nwhen = \"during\"\nrun = \"true\"\n",
            Path::new("c"),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("during"), "{e:#}");
    }

    #[test]
    fn drop_ins_add_hooks_in_name_order() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("hooks.d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("20-b.toml"),
            "[[hook]]\nwhen = \"after-capture\"\nrun = \"b\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("10-a.toml"),
            "[[hook]]\nwhen = \"before-capture\"\nrun = \"a\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("ignored.txt"), "junk").unwrap();
        let main = top.path().join("capture.toml");
        std::fs::write(&main, format!("[hooks]\ndir = \"{}\"\n", dir.display())).unwrap();
        let c = Config::load(Some(&main)).unwrap();
        let labels: Vec<_> = c.hook.iter().map(|h| h.label()).collect();
        assert_eq!(labels, ["a", "b"]);
        assert!(c.hook[1].source.ends_with("20-b.toml"));
    }

    #[test]
    fn swap_files_are_read_and_escaped() {
        let text = "Filename\tType\tSize\tUsed\tPriority\n/dev/vda3 partition 1 0 -2\n/swap\\040file file 1 0 -3\n";
        assert_eq!(parse_swap_files(text), ["/swap file"]);
        assert_eq!(glob_escape("/a*[b]"), "/a\\*\\[b\\]");
    }
}
