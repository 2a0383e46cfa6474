//! Finds the workspace's binaries from the running one: the demo, the examples, the benches, the
//! end-to-end tests and the soak driver all start the bundled servers (or the orchestrator) this way.
//!
//! Cargo writes every binary of the workspace to one folder, `target/<profile>/`, and puts what it
//! builds from other targets one level below: test and bench executables in `deps/`, examples in
//! `examples/`. So the folder of the binaries is the running executable's own, or its parent when
//! that is `deps` or `examples`. An installed copy follows the same rule with the binaries side
//! by side. Nothing here builds a missing binary: who may run cargo (tests, benches) does that
//! itself, and everyone else says which command builds it.

use std::path::{Path, PathBuf};

/// Why a binary could not be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system did not say where the running executable is.
    #[error("cannot find the running executable")]
    CurrentExe(#[source] std::io::Error),
    /// The running executable's path has no folder (it is a root).
    #[error("the running executable {} has no folder", .0.display())]
    NoFolder(PathBuf),
    /// The binary is not where cargo would have put it.
    #[error(
        "`{name}` not found at {}: build the workspace's binaries first (cargo build --workspace --bins)",
        path.display()
    )]
    Missing {
        /// The binary's name, without the platform's suffix.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
}

/// The folders cargo puts one level below the binaries' folder (see the module doc).
const NESTED: [&str; 2] = ["deps", "examples"];

/// The folder of the workspace's binaries, seen from the running executable.
pub fn dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
    dir_of(&exe).ok_or(Error::NoFolder(exe))
}

/// The folder of the binaries for an executable at `exe`.
fn dir_of(exe: &Path) -> Option<PathBuf> {
    let folder = exe.parent()?;
    let nested = folder
        .file_name()
        .is_some_and(|n| NESTED.iter().any(|d| n == *d));
    let dir = if nested {
        folder.parent().unwrap_or(folder)
    } else {
        folder
    };
    Some(dir.to_path_buf())
}

/// Where binary `name` is in `dir` (with the platform's suffix, `.exe` on Windows), whether or
/// not it is there.
pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Binary `name` in `dir`, if it is a file there.
pub fn find_in(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let path = path_in(dir, name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            name: name.to_owned(),
            path,
        })
    }
}

/// Binary `name` in the binaries' folder ([`dir`]), if it is a file there.
pub fn find(name: &str) -> Result<PathBuf, Error> {
    find_in(&dir()?, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_test_and_bench_executables_and_examples_share_one_folder() {
        let profile = Path::new("/repo/target/debug");
        for exe in [
            "/repo/target/debug/mcp-orchestrator",
            "/repo/target/debug/deps/demo-0123456789abcdef",
            "/repo/target/debug/examples/parallel",
        ] {
            assert_eq!(dir_of(Path::new(exe)).as_deref(), Some(profile), "{exe}");
        }
    }

    #[test]
    fn a_missing_binary_names_its_path_and_the_build_command() {
        let dir = std::env::temp_dir();
        let err = find_in(&dir, "no-such-binary-of-this-workspace").err();
        let text = err.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            text.contains("no-such-binary-of-this-workspace")
                && text.contains("cargo build --workspace --bins"),
            "{text}"
        );
    }
}
