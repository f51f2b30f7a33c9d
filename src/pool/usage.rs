//! What one request cost its worker process, php-fpm's `last request cpu`
//! and `last request memory` (and the access log's `%C` and `%M`), read
//! from `/proc` around the request.
//!
//! php-fpm's child reads its own `times()` when it accepts a request and
//! when it ends it, and its allocator's peak. herd's master reads the same
//! CPU counters of the worker from `/proc/<pid>/stat` (user and system
//! time, of the process and of the children it reaped meanwhile, in clock
//! ticks, as `times()` counts them), and for memory the process's peak
//! resident size (`VmHWM`), reset at the start of the request by writing
//! `5` to `/proc/<pid>/clear_refs`. The peak includes what the process
//! holds between requests (its code, libraries, caches), where php-fpm's
//! counts PHP's allocations only.
//!
//! Each worker's three `/proc` files are opened once and read again in
//! place (`pread` at offset 0, which regenerates them), so a request costs
//! the master four reads and one write rather than as many opens and
//! closes too. They are closed when the worker leaves the scoreboard
//! ([`forget`]); a file of a process that is gone fails to read, and is
//! then reopened once, so a reused pid never reads the old process.
//!
//! It costs the master a few system calls per request, so the router only
//! measures while someone looks (see [`super::Pool::usage_wanted`]) and only
//! workers that serve one request at a time: in a worker with several
//! slots (a PHP group, php-cgi's children, an FCGI::ProcManager script)
//! another process serves each request and herd cannot tell which.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// A worker's `/proc` files, open for reading again and again.
struct ProcFiles {
    stat: File,
    status: File,
    /// `None` when it cannot be opened for writing (another user's
    /// process without the privilege): no memory figure then.
    clear_refs: Option<File>,
}

impl ProcFiles {
    fn open(pid: u32) -> Option<ProcFiles> {
        Some(ProcFiles {
            stat: File::open(format!("/proc/{pid}/stat")).ok()?,
            status: File::open(format!("/proc/{pid}/status")).ok()?,
            clear_refs: std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/{pid}/clear_refs"))
                .ok(),
        })
    }
}

static OPEN: LazyLock<Mutex<HashMap<u32, Arc<ProcFiles>>>> = LazyLock::new(Default::default);

/// Runs `read` on `pid`'s open files, opening them the first time and once
/// more when reading the kept ones fails (the process is gone, or the pid
/// now names another process).
fn with_files<T>(pid: u32, read: impl Fn(&ProcFiles) -> Option<T>) -> Option<T> {
    let cached = OPEN.lock().expect("proc files lock").get(&pid).cloned();
    if let Some(v) = cached.and_then(|files| read(&files)) {
        return Some(v);
    }
    let fresh = ProcFiles::open(pid).map(Arc::new);
    let v = fresh.as_ref().and_then(|f| read(f));
    let mut open = OPEN.lock().expect("proc files lock");
    match (fresh, &v) {
        (Some(files), Some(_)) => open.insert(pid, files),
        _ => open.remove(&pid),
    };
    v
}

/// Closes `pid`'s files: its worker left the scoreboard.
pub fn forget(pid: u32) {
    OPEN.lock().expect("proc files lock").remove(&pid);
}

/// The whole of a `/proc` file read again from its start.
fn read_all(file: &File, buf: &mut [u8]) -> Option<usize> {
    let n = file.read_at(buf, 0).ok()?;
    (n > 0).then_some(n)
}

/// The worker's counters when a request started.
#[derive(Clone, Copy, Debug)]
pub struct Start {
    pid: u32,
    ticks: Ticks,
    at: Instant,
    /// The peak resident size was reset, so the one read at the end is
    /// this request's.
    peak_reset: bool,
}

/// What one request cost its worker process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestUsage {
    /// User CPU time, of the process and the children it reaped meanwhile.
    pub user: Duration,
    /// System CPU time, likewise.
    pub system: Duration,
    /// Wall time between the two readings.
    pub elapsed: Duration,
    /// The process's peak resident size during the request, in bytes;
    /// `None` when the peak could not be reset at its start.
    pub memory: Option<u64>,
}

/// Which part of the CPU time `%C` shows (php-fpm's `%{user}C`,
/// `%{system}C`, `%{total}C`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cpu {
    Total,
    User,
    System,
}

impl RequestUsage {
    /// CPU time as a percentage of the request's wall time, as php-fpm's
    /// `last request cpu` and `%C` give it (above 100 for a request that
    /// kept several threads busy).
    pub fn cpu_percent(&self, part: Cpu) -> f64 {
        let cpu = match part {
            Cpu::Total => self.user + self.system,
            Cpu::User => self.user,
            Cpu::System => self.system,
        };
        let wall = self.elapsed.as_secs_f64();
        if wall > 0.0 {
            cpu.as_secs_f64() / wall * 100.0
        } else {
            0.0
        }
    }
}

/// Reads `pid`'s counters at the start of a request and resets its peak
/// resident size; `None` when the process cannot be read.
pub fn start(pid: u32) -> Option<Start> {
    let (ticks, peak_reset) = with_files(pid, |f| {
        let ticks = Ticks::read(&f.stat)?;
        let reset = f
            .clear_refs
            .as_ref()
            .is_some_and(|c| c.write_at(b"5", 0).is_ok());
        Some((ticks, reset))
    })?;
    Some(Start {
        pid,
        ticks,
        at: Instant::now(),
        peak_reset,
    })
}

/// What the request that began at `start` cost, read as it ends.
pub fn finish(start: Start) -> Option<RequestUsage> {
    let (end, memory) = with_files(start.pid, |f| {
        let memory = if start.peak_reset {
            peak_rss(&f.status)
        } else {
            None
        };
        Some((Ticks::read(&f.stat)?, memory))
    })?;
    let ticks = |n: u64| Duration::from_secs_f64(n as f64 / clock_ticks_per_second());
    Some(RequestUsage {
        user: ticks(end.user.saturating_sub(start.ticks.user)),
        system: ticks(end.system.saturating_sub(start.ticks.system)),
        elapsed: start.at.elapsed(),
        memory,
    })
}

/// CPU time in clock ticks, from `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ticks {
    /// utime + cutime.
    pub user: u64,
    /// stime + cstime.
    pub system: u64,
    /// utime + stime: the process's own, without reaped children.
    pub own: u64,
}

impl Ticks {
    pub fn of(pid: u32) -> Option<Ticks> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Ticks::parse(&stat)
    }

    fn read(stat: &File) -> Option<Ticks> {
        let mut buf = [0u8; 1024];
        let n = read_all(stat, &mut buf)?;
        Ticks::parse(std::str::from_utf8(&buf[..n]).ok()?)
    }

    /// Fields 14 to 17 of a stat line: utime, stime, cutime, cstime. The
    /// command (field 2) may hold spaces and parentheses, so counting
    /// starts after its last `)`.
    fn parse(stat: &str) -> Option<Ticks> {
        let (_, rest) = stat.rsplit_once(')')?;
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        let [utime, stime, cutime, cstime] = f[..] else {
            return None;
        };
        Some(Ticks {
            user: utime + cutime,
            system: stime + cstime,
            own: utime + stime,
        })
    }
}

/// `VmHWM` from `/proc/<pid>/status`, in bytes.
fn peak_rss(status: &File) -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_all(status, &mut buf)?;
    let kib: u64 = std::str::from_utf8(&buf[..n])
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_commands_parse() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 7 3 20 0 1 0 100 1000 50";
        assert_eq!(
            Ticks::parse(line),
            Some(Ticks {
                user: 257,
                system: 33,
                own: 280
            })
        );
        assert_eq!(Ticks::parse("42 (x) S 1 2"), None);
    }

    #[test]
    fn cpu_is_a_percentage_of_the_wall_time() {
        let u = RequestUsage {
            user: Duration::from_millis(150),
            system: Duration::from_millis(50),
            elapsed: Duration::from_millis(400),
            memory: None,
        };
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(u.cpu_percent(Cpu::Total), 50.0));
        assert!(near(u.cpu_percent(Cpu::User), 37.5));
        assert!(near(u.cpu_percent(Cpu::System), 12.5));
        let instant = RequestUsage {
            elapsed: Duration::ZERO,
            ..u
        };
        assert_eq!(instant.cpu_percent(Cpu::Total), 0.0);
    }

    /// This process reading itself: CPU burnt between the two readings
    /// shows, and so does memory touched (the peak is reset at the start).
    #[test]
    fn a_process_that_burns_and_allocates_shows_both() {
        let pid = std::process::id();
        let begin = start(pid).expect("own /proc");
        let until = Instant::now() + Duration::from_millis(150);
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        drop(block);
        let used = finish(begin).expect("own /proc");
        assert!(
            used.user + used.system >= Duration::from_millis(50),
            "{used:?}"
        );
        if let Some(peak) = used.memory {
            assert!(peak >= 64 << 20, "{used:?}");
        }
    }

    #[test]
    fn files_stay_open_while_the_worker_lives_and_close_after() {
        let is_open = |pid| OPEN.lock().unwrap().contains_key(&pid);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let begin = start(pid).expect("a child's /proc");
        assert!(finish(begin).is_some());
        assert!(is_open(pid));
        // Its scoreboard entry goes: so do the files.
        forget(pid);
        assert!(!is_open(pid));
        // A process that is gone reads as nothing and keeps nothing open.
        assert!(start(pid).is_some());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(start(pid).is_none());
        assert!(!is_open(pid));
    }
}
