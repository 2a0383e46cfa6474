//! What Linux `/proc` says about the orchestrator and the processes of this run: resident
//! memory, open file descriptors, children (live and zombie), and processes of the run that
//! ended up elsewhere (orphans). Also the kill itself.
//!
//! Processes of the run are recognised by an environment variable the driver gives the
//! orchestrator (`MCP_SOAK_RUN=<id>`), which every child inherits: other tests running the same
//! binaries at the same time are not counted.

use std::{collections::BTreeMap, fs, path::Path};

/// The environment variable marking this run's processes.
pub const MARKER_VAR: &str = "MCP_SOAK_RUN";

/// One process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Its id.
    pub pid: u32,
    /// Its parent's id.
    pub ppid: u32,
    /// `R`, `S`, `Z` (zombie: exited, not reaped), ...
    pub state: char,
    /// When it started (clock ticks after boot): with the pid, names one process for good.
    pub start: u64,
    /// Its executable's file name (the kernel's 15-byte `comm` for a zombie).
    pub name: String,
    /// Whether it carries this run's marker.
    pub marked: bool,
}

impl Proc {
    /// Whether it has exited without being reaped.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// `pid`, `ppid`, `state`, `start` and `comm` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, char, u64, String)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat.get(open + 1..close)?.to_owned();
    // After ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
    // stime cutime cstime priority nice threads itrealvalue starttime ...
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, state, start, comm))
}

/// The file name of `/proc/<pid>/exe`, without the ` (deleted)` a rebuilt binary gets.
fn exe_name(pid: u32) -> Option<String> {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = exe.file_name()?.to_str()?;
    Some(name.trim_end_matches(" (deleted)").to_owned())
}

fn has_marker(pid: u32, marker: &str) -> bool {
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want = format!("{MARKER_VAR}={marker}");
    env.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
}

/// The processes that are children of `parent` or carry `marker` (the run's processes).
pub fn scan(parent: u32, marker: &str) -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((ppid, state, start, comm)) = stat(pid) else {
            continue;
        };
        // Reading every process's environment is the costly part: only candidates are read
        // (this run's binaries keep their names, cut to 15 bytes in `comm`).
        let candidate = ppid == parent || comm.contains("mcp-serv") || comm.contains("mcp-orch");
        if !candidate {
            continue;
        }
        let marked = has_marker(pid, marker);
        if ppid != parent && !marked {
            continue;
        }
        out.push(Proc {
            pid,
            ppid,
            state,
            start,
            name: exe_name(pid).unwrap_or(comm),
            marked,
        });
    }
    out
}

/// Whether the process `pid` that started at `start` still exists (in any state).
pub fn exists(pid: u32, start: u64) -> bool {
    stat(pid).is_some_and(|(_, _, s, _)| s == start)
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Open file descriptors of `pid`, by what they are (`pipe`, `socket`, `anon_inode:[eventpoll]`,
/// a path, ...).
pub fn fds(pid: u32) -> Option<BTreeMap<String, u32>> {
    let dir = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let mut kinds = BTreeMap::new();
    for entry in dir.flatten() {
        let target = fs::read_link(entry.path()).unwrap_or_else(|_| Path::new("?").to_path_buf());
        let target = target.display().to_string();
        // `pipe:[123]` -> `pipe`; paths and anon inodes are kept whole.
        let kind = match target.split_once(":[") {
            Some((k, _)) if !target.starts_with('/') && !target.starts_with("anon_inode") => {
                k.to_owned()
            }
            _ => target,
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    Some(kinds)
}

/// Sends SIGKILL to `pid`.
pub fn kill9(pid: u32) -> std::io::Result<bool> {
    Ok(std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?
        .success())
}
