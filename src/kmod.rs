//! Kernel modules without kmod: `modules.alias` glob matching for the
//! modalias of every device in sysfs (cold plug), `modules.dep` for the
//! order, `modules.softdep` for what a module asks for by name, and
//! `finit_module(2)` to load. The image's `/sbin/modprobe` is rewind too
//! ([`modprobe_main`]), so that the kernel's own requests (`fs-vfat`,
//! `crypto-crc32c`, `net-pf-17`) work.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// `-` and `_` are the same in module names.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module index of one kernel: what depmod wrote.
#[derive(Debug, Default)]
pub struct Index {
    dir: PathBuf,
    /// Module name → its file, relative to `dir`.
    paths: HashMap<String, String>,
    /// Module name → its dependencies' names, in modules.dep order.
    deps: HashMap<String, Vec<String>>,
    /// Module name → soft pre- and post-dependencies (names or aliases).
    soft_pre: HashMap<String, Vec<String>>,
    soft_post: HashMap<String, Vec<String>>,
    builtin: HashSet<String>,
    /// Alias patterns by the literal text before their first `:` ("pci",
    /// "usb"); patterns whose bus has a wildcard are under "".
    aliases: HashMap<String, Vec<(String, String)>>,
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn bucket(pattern: &str) -> &str {
    match pattern.split_once(':') {
        Some((bus, _)) if !has_wildcard(bus) => bus,
        _ => "",
    }
}

impl Index {
    /// The index of the running kernel, `/lib/modules/$(uname -r)`.
    pub fn running() -> Result<Index> {
        let release = nix::sys::utsname::uname()
            .context("uname failed")?
            .release()
            .to_string_lossy()
            .into_owned();
        Index::load(&Path::new("/lib/modules").join(release))
    }

    pub fn load(dir: &Path) -> Result<Index> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("cannot read {}", dir.join(name).display()))
        };
        let optional = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        Ok(Index::parse(
            dir,
            &read("modules.dep")?,
            &optional("modules.alias"),
            &optional("modules.softdep"),
            &optional("modules.builtin"),
        ))
    }

    pub fn parse(dir: &Path, dep: &str, alias: &str, softdep: &str, builtin: &str) -> Index {
        let mut idx = Index {
            dir: dir.to_path_buf(),
            ..Index::default()
        };
        for line in dep.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            let name = module_name(module);
            idx.deps.insert(
                name.clone(),
                rest.split_whitespace().map(module_name).collect(),
            );
            idx.paths.insert(name, module.trim().to_string());
        }
        for line in alias.lines() {
            let mut f = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) = (f.next(), f.next(), f.next()) {
                idx.aliases
                    .entry(bucket(pattern).to_string())
                    .or_default()
                    .push((pattern.to_string(), normalize(module)));
            }
        }
        for line in softdep.lines() {
            let mut f = line.split_whitespace();
            if f.next() != Some("softdep") {
                continue;
            }
            let Some(module) = f.next().map(normalize) else {
                continue;
            };
            let mut post = false;
            for w in f {
                match w {
                    "pre:" => post = false,
                    "post:" => post = true,
                    w => {
                        let map = if post {
                            &mut idx.soft_post
                        } else {
                            &mut idx.soft_pre
                        };
                        map.entry(module.clone()).or_default().push(w.to_string());
                    }
                }
            }
        }
        idx.builtin = builtin
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(module_name)
            .collect();
        idx
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The modules an alias, a device modalias or a module name stands for.
    pub fn resolve(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        if self.paths.contains_key(&n) || self.builtin.contains(&n) {
            return vec![n];
        }
        let mut out = BTreeSet::new();
        let candidates = self
            .aliases
            .get(bucket(name))
            .into_iter()
            .chain(self.aliases.get(""))
            .flatten();
        for (pattern, module) in candidates {
            if crate::util::glob::matches(pattern.as_bytes(), name.as_bytes()) {
                out.insert(module.clone());
            }
        }
        out.into_iter().collect()
    }

    /// What to load, in order, for `name`: soft pre-dependencies, hard
    /// dependencies (deepest first), the module, soft post-dependencies.
    pub fn load_order(&self, name: &str) -> Vec<String> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        self.order_into(&normalize(name), &mut order, &mut seen);
        order
    }

    fn order_into(&self, name: &str, order: &mut Vec<String>, seen: &mut HashSet<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let soft = |map: &HashMap<String, Vec<String>>| -> Vec<String> {
            map.get(name)
                .into_iter()
                .flatten()
                .flat_map(|s| self.resolve(s))
                .collect()
        };
        for pre in soft(&self.soft_pre) {
            self.order_into(&pre, order, seen);
        }
        // modules.dep lists every dependency, the ones loaded last first.
        for dep in self.deps.get(name).into_iter().flatten().rev() {
            self.order_into(dep, order, seen);
        }
        if self.paths.contains_key(name) {
            order.push(name.to_string());
        }
        for post in soft(&self.soft_post) {
            self.order_into(&post, order, seen);
        }
    }

    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        self.paths.get(&normalize(name)).map(|p| self.dir.join(p))
    }
}

/// Loads modules and remembers what it did.
pub struct Loader {
    pub index: Index,
    /// Modules loaded (or found loaded) so far.
    loaded: HashSet<String>,
    /// Modules that failed, with why.
    pub failed: Vec<(String, String)>,
    /// Modules this loader loaded, in order.
    pub newly: Vec<String>,
}

impl Loader {
    pub fn new(index: Index) -> Loader {
        let loaded = std::fs::read_to_string("/proc/modules")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(normalize)
            .collect();
        Loader {
            index,
            loaded,
            failed: Vec::new(),
            newly: Vec::new(),
        }
    }

    /// Load what `name` (a module, alias or modalias) stands for, with its
    /// dependencies. Returns whether anything stands for it.
    pub fn load(&mut self, name: &str) -> bool {
        let modules = self.index.resolve(name);
        for m in &modules {
            for dep in self.index.load_order(m) {
                self.load_one(&dep);
            }
        }
        !modules.is_empty()
    }

    fn load_one(&mut self, name: &str) {
        if self.loaded.contains(name) || self.index.is_builtin(name) {
            return;
        }
        if self.failed.iter().any(|(n, _)| n == name) {
            return;
        }
        match self.insert(name) {
            Ok(()) => {
                self.loaded.insert(name.to_string());
                self.newly.push(name.to_string());
            }
            Err(e) => self.failed.push((name.to_string(), format!("{e:#}"))),
        }
    }

    fn insert(&self, name: &str) -> Result<()> {
        let path = self
            .index
            .path_of(name)
            .with_context(|| format!("{name} is not in modules.dep"))?;
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let params = CString::default();
        match nix::kmod::finit_module(&file, &params, nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => bail!("finit_module {}: {e}", path.display()),
        }
    }

    pub fn is_loaded(&self, name: &str) -> bool {
        self.loaded.contains(&normalize(name))
    }
}

/// Every device modalias under `/sys/devices`.
pub fn device_modaliases(sys_devices: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![sys_devices.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file()
                && e.file_name() == "modalias"
                && let Ok(s) = std::fs::read_to_string(e.path())
                && !s.trim().is_empty()
            {
                out.insert(s.trim().to_string());
            }
        }
    }
    out
}

/// Cold plug: load the modules `preload` names, then what every device's
/// modalias asks for, again as new devices appear (a bus driver brings its
/// devices), until two looks in a row find nothing new or `limit` passes.
pub fn coldplug(loader: &mut Loader, preload: &[String], limit: Duration) -> usize {
    for m in preload {
        if !loader.load(m) && !loader.index.is_builtin(m) {
            loader
                .failed
                .push((m.clone(), "no such module in the image".into()));
        }
    }
    let started = Instant::now();
    let mut tried: HashSet<String> = HashSet::new();
    let mut quiet_rounds = 0;
    while started.elapsed() < limit {
        let aliases = device_modaliases(Path::new("/sys/devices"));
        let fresh: Vec<String> = aliases
            .into_iter()
            .filter(|a| tried.insert(a.clone()))
            .collect();
        let before = loader.newly.len();
        for a in &fresh {
            loader.load(a);
        }
        if fresh.is_empty() && loader.newly.len() == before {
            quiet_rounds += 1;
            // A second without a new device: USB and SCSI buses enumerate
            // in the background.
            if quiet_rounds >= 7 {
                break;
            }
        } else {
            quiet_rounds = 0;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    tried.len()
}

/// `/sbin/modprobe` as the kernel calls it (`modprobe -q -- NAME`), and
/// by hand in the emergency shell (`modprobe NAME...`). Exit status 0 when
/// everything asked for is loaded.
pub fn modprobe_main(args: &[String]) -> i32 {
    let mut quiet = false;
    let mut names = Vec::new();
    let mut opts_done = false;
    for a in args {
        match a.as_str() {
            "--" if !opts_done => opts_done = true,
            "-q" | "--quiet" if !opts_done => quiet = true,
            s if s.starts_with('-') && !opts_done => {}
            s => names.push(s.to_string()),
        }
    }
    let index = match Index::running() {
        Ok(i) => i,
        Err(e) => {
            if !quiet {
                eprintln!("modprobe: {e:#}");
            }
            return 1;
        }
    };
    let mut loader = Loader::new(index);
    let mut status = 0;
    for n in &names {
        if loader.index.is_builtin(n) {
            continue;
        }
        if !loader.load(n) {
            if !quiet {
                eprintln!("modprobe: module {n} not found");
            }
            status = 1;
            continue;
        }
        // Success when one of the modules the name stands for is in: an
        // alias may name several (crc32c_intel refuses a CPU without
        // SSE4.2, crc32c_generic does not), and a soft dependency that
        // fails does not fail the module. The kernel retries only on 0.
        let resolved = loader.index.resolve(n);
        if !resolved.iter().any(|m| loader.is_loaded(m)) {
            status = 1;
        }
    }
    if !quiet {
        for (m, why) in &loader.failed {
            eprintln!("modprobe: {m}: {why}");
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        Index::parse(
            Path::new("/m"),
            "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko\n\
             kernel/drivers/virtio/virtio_pci_modern_dev.ko: kernel/drivers/virtio/virtio.ko\n\
             kernel/drivers/virtio/virtio.ko:\n\
             kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko\n\
             kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko\n\
             kernel/fs/jbd2/jbd2.ko:\n\
             kernel/fs/mbcache.ko:\n\
             kernel/arch/x86/crypto/crc32c-intel.ko:\n",
            "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias fs-ext4 ext4\n\
             alias crypto-crc32c crc32c-intel\n\
             alias acpi*:PNP0C0A:* battery\n",
            "softdep ext4 pre: crypto-crc32c\n",
            "kernel/fs/binfmt_misc.ko\n",
        )
    }

    #[test]
    fn resolves_names_aliases_and_modaliases() {
        let idx = sample();
        assert_eq!(idx.resolve("virtio-pci"), ["virtio_pci"]);
        assert_eq!(idx.resolve("fs-ext4"), ["ext4"]);
        assert_eq!(
            idx.resolve("pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00"),
            ["virtio_pci"]
        );
        assert_eq!(idx.resolve("virtio:d00000002v00001AF4"), ["virtio_blk"]);
        assert_eq!(idx.resolve("acpi:PNP0C0A:"), ["battery"]);
        assert!(idx.resolve("pci:v00008086d00001237sv*").is_empty());
        assert!(idx.is_builtin("binfmt-misc"));
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let idx = sample();
        assert_eq!(
            idx.load_order("virtio_pci"),
            ["virtio", "virtio_pci_modern_dev", "virtio_pci"]
        );
        assert_eq!(
            idx.load_order("ext4"),
            ["crc32c_intel", "mbcache", "jbd2", "ext4"]
        );
        assert!(
            idx.path_of("crc32c_intel")
                .unwrap()
                .ends_with("crc32c-intel.ko")
        );
    }
}
