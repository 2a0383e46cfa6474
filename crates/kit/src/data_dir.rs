//! Where a server keeps its data: `--data-dir DIR`, or `:memory:` for a private throwaway folder.
//!
//! `:memory:` is a temporary folder on disk, removed when the server ends, rather than an
//! in-memory database: the store then behaves exactly like the real thing (WAL, several
//! connections, read-only ones among them), so tests exercise the code that runs in production.

use std::path::{Path, PathBuf};

/// The value of `--data-dir` that asks for a throwaway folder.
pub const MEMORY: &str = ":memory:";

/// A server's data folder; a temporary one is removed on drop.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    temporary: bool,
}

impl DataDir {
    /// Creates (if needed) the folder `arg` names, or a fresh temporary one for `:memory:`
    /// (named after `server`, so a leftover one says whose it was).
    pub fn resolve(arg: &str, server: &str) -> std::io::Result<Self> {
        let (path, temporary) = if arg == MEMORY {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!("{server}-{}-{nanos}", std::process::id()));
            (dir, true)
        } else {
            (PathBuf::from(arg), false)
        };
        std::fs::create_dir_all(&path)?;
        Ok(Self { path, temporary })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_a_fresh_folder_removed_on_drop() {
        let a = DataDir::resolve(MEMORY, "kit-test").expect("a");
        let b = DataDir::resolve(MEMORY, "kit-test").expect("b");
        assert_ne!(a.path(), b.path());
        let path = a.path().to_path_buf();
        assert!(path.is_dir());
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn a_named_folder_is_kept() {
        let base = std::env::temp_dir().join(format!("kit-data-dir-{}", std::process::id()));
        let dir = DataDir::resolve(&base.display().to_string(), "kit-test").expect("dir");
        drop(dir);
        assert!(base.is_dir());
        let _ = std::fs::remove_dir_all(base);
    }
}
