//! What /proc says about a process: its parent, its children, its open
//! fds and its memory, for tests that check that nothing leaks.

use std::collections::BTreeMap;
use std::fs;

/// The fields of /proc/<pid>/stat after the command name (which may hold
/// spaces): index 0 is field 3 (state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .map(String::from)
            .collect(),
    )
}

/// The parent pid of `pid`, if it exists.
pub fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// `pid`'s state letter (`R`, `S`, `Z` for a zombie, ...).
pub fn state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The processes whose parent is `pid` (zombies included: an unreaped
/// child is a leak too).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| ppid(p) == Some(pid))
        .collect()
}

/// How many fds `pid` has open.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `pid`'s open fds by kind (`socket`, `pipe`, `anon_inode:[eventpoll]`,
/// `file`, ...), to say what leaked when a count grew.
pub fn fd_kinds(pid: u32) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return kinds;
    };
    for e in dir.flatten() {
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        let kind = if t.starts_with('/') {
            "file".to_string()
        } else if t.starts_with("anon_inode:") {
            t.to_string()
        } else {
            t.split(':').next().unwrap_or("?").to_string()
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds
}

/// A `Key:   N kB` line of /proc/<pid>/status (VmRSS, VmHWM, ...), in KiB.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS").unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}
