//! Where repository files live. A local directory is the embedded default;
//! the server and object stores implement the same small trait.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Repository storage: named immutable files under a root. `put` is atomic:
/// a reader sees the whole file or nothing, also after a crash.
pub trait Backend: Send + Sync {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()>;
    fn get(&self, name: &str) -> Result<Vec<u8>>;
    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Names under a prefix (a directory such as `snapshots/`), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    fn exists(&self, name: &str) -> Result<bool>;
    fn remove(&self, name: &str) -> Result<()>;
    /// A human description for messages.
    fn describe(&self) -> String;
    /// How many reads to keep in flight at least (restore's read-ahead): a
    /// network backend wants more than one per core to hide latency.
    fn read_parallelism(&self) -> usize {
        1
    }
    /// The order of the snapshots, oldest first, when the store decides
    /// it: a recovery server orders a host's history by the time it
    /// committed each snapshot (docs/security.md, point 2), so that a
    /// snapshot its host dated ahead cannot win `latest`. `None` (a local
    /// directory): by the snapshots' own times.
    fn snapshot_order(&self) -> Result<Option<Vec<OrderedSnapshot>>> {
        Ok(None)
    }
}

/// A snapshot in the order a store keeps ([`Backend::snapshot_order`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedSnapshot {
    pub id: String,
    /// When the store committed it (RFC 3339), if it records that.
    pub committed: Option<String>,
}

pub struct LocalDir {
    root: PathBuf,
    /// Open pack files, kept while a restore reads ranges from them.
    open: std::sync::Mutex<lru::Lru<String, std::sync::Arc<File>>>,
}

impl LocalDir {
    pub fn new(root: &Path) -> LocalDir {
        LocalDir {
            root: root.to_path_buf(),
            open: std::sync::Mutex::new(lru::Lru::new(64)),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn file(&self, name: &str) -> Result<std::sync::Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = open.get(name) {
            return Ok(f);
        }
        let path = self.path(name);
        let f = std::sync::Arc::new(
            File::open(&path).with_context(|| format!("cannot open {}", path.display()))?,
        );
        open.put(name.to_string(), f.clone());
        Ok(f)
    }
}

impl Backend for LocalDir {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(name);
        // A crash leaves either the old state or the whole new file, plus
        // at worst a `.tmp` file that readers ignore; two threads may write
        // the same name at once (the packer thread and a commit, say).
        crate::util::fs::write_atomic(&path, bytes)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path(name);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let f = self.file(name)?;
        // Read into the buffer's spare capacity: zeroing it first (`vec![0;
        // len]`) cost 3% of a restore's instructions under callgrind.
        let context = || {
            format!(
                "cannot read {len} bytes at offset {offset} of {}",
                self.path(name).display()
            )
        };
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = offset + buf.len() as u64;
            match rustix::io::pread(&*f, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(0) => {
                    return Err(anyhow::anyhow!("the file ends at byte {at}"))
                        .with_context(context);
                }
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e).with_context(context),
            }
        }
        // The capacity may exceed what was asked for.
        buf.truncate(len);
        Ok(buf)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let dir = self.path(prefix);
        if !dir.exists() {
            return Ok(out);
        }
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for entry in
                std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
            {
                let entry = entry?;
                let p = entry.path();
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue; // temporary files of an interrupted write
                }
                if entry.file_type()?.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&self.root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.path(name).exists())
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let path = self.path(name);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        // Durable before it is acknowledged: a forgotten snapshot that came
        // back after a power cut could name packs a prune has since deleted.
        let dir = path.parent().unwrap_or(&self.root);
        crate::util::fs::sync_dir(dir).with_context(|| format!("cannot sync {}", dir.display()))
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// A tiny least-recently-used map for open file handles.
mod lru {
    pub(super) struct Lru<K, V> {
        cap: usize,
        items: Vec<(K, V)>,
    }

    impl<K: PartialEq + std::borrow::Borrow<str>, V: Clone> Lru<K, V> {
        pub(super) fn new(cap: usize) -> Self {
            Lru {
                cap,
                items: Vec::new(),
            }
        }

        pub(super) fn get(&mut self, k: &str) -> Option<V> {
            let i = self.items.iter().position(|(key, _)| key.borrow() == k)?;
            let item = self.items.remove(i);
            let v = item.1.clone();
            self.items.push(item);
            Some(v)
        }

        pub(super) fn put(&mut self, k: K, v: V) {
            if self.items.len() >= self.cap {
                self.items.remove(0);
            }
            self.items.push((k, v));
        }

        pub(super) fn remove(&mut self, k: &str) {
            self.items.retain(|(key, _)| key.borrow() != k);
        }
    }
}
