//! What a process has used, read from Linux `/proc` (`None` elsewhere), and finding its children.

use std::time::Duration;

/// What a process has used so far, all its threads included.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User and system time of the whole process, exited threads included, in 10 ms ticks.
    ticks: Duration,
    /// Time on a CPU of its live threads (`schedstat`, nanoseconds): far finer than the ticks,
    /// but blind to threads that exit.
    live: Duration,
    /// Context switches of its live threads: each is a thread going to sleep or being
    /// preempted, so per call they count the wake-ups a message costs, which dominate a cheap
    /// call's latency.
    switches: u64,
}

/// What a process used over a stretch of time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Used {
    pub cpu: Duration,
    pub switches: u64,
}

impl Usage {
    /// What was used between `before` and `self`: the live threads' fine figure, unless threads
    /// that exited meanwhile took more than the ticks' rounding, when the ticks are nearer.
    pub fn since(self, before: Usage) -> Used {
        let live = self.live.saturating_sub(before.live);
        let ticks = self.ticks.saturating_sub(before.ticks);
        let cpu = if ticks > live + Duration::from_millis(30) {
            ticks
        } else {
            live
        };
        Used {
            cpu,
            switches: self.switches.saturating_sub(before.switches),
        }
    }
}

impl Used {
    /// Adds `other` to this total.
    pub fn add(&mut self, other: Used) {
        self.cpu += other.cpu;
        self.switches += other.switches;
    }
}

/// CPU and context switches of `pid` so far.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let mut usage = Usage {
        // utime + stime in clock ticks; USER_HZ is 100 on Linux.
        ticks: Duration::from_millis(ticks * 10),
        ..Usage::default()
    };
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if let Some(ns) = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            usage.live += Duration::from_nanos(ns);
        }
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        usage.switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(usage)
}

/// Resident memory of `pid` (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The pid of a child of `parent` whose executable is `name`, found through `/proc`.
pub fn child_pid(parent: u32, name: &str) -> Option<u32> {
    // The kernel keeps the first 15 bytes of the name.
    let comm = &name[..name.len().min(15)];
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let ppid: u32 = stat.get(close + 2..)?.split(' ').nth(1)?.parse().ok()?;
            (ppid == parent && stat.get(open + 1..close)? == comm).then_some(pid)
        })
}

/// Whether `pid` has exited (gone, or a zombie not yet reaped).
pub fn exited(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    stat.rfind(')')
        .and_then(|close| stat.get(close + 2..close + 3))
        .is_none_or(|state| state == "Z" || state == "X")
}
