//! `master.realtime`: the master's event loop runs under the kernel's
//! real-time policy (`SCHED_FIFO`, the lowest priority, 1), so it never
//! waits for a CPU behind the PHP processes it relays for.
//!
//! Every request crosses the master twice (the request in, the response
//! out), and each crossing is a wakeup. On a host whose cores are busy
//! with PHP, a woken master under the ordinary policy may wait its turn
//! behind a PHP process for a share of a time slice, and that wait lands
//! on the request's latency; php-fpm, with no process in the path, has
//! none. Under `SCHED_FIFO` a woken master runs at once, does its few
//! microseconds of relaying and sleeps again.
//!
//! Only while the host has CPU to spare: when its CPUs are saturated
//! (under [`SATURATED`] of their time idle over a [`SAMPLE`]), a master
//! that wakes at once for each response preempts a PHP process each time,
//! where under the ordinary policy it would wake once for several
//! responses; there it costs more than it saves (measured: fewer requests a
//! second and a longer tail with 32 PHP processes on two saturated cores),
//! so the master returns to the ordinary policy until at least
//! [`SPARE`] of the CPUs' time is idle again, as a network driver leaves
//! interrupts for polling under load.
//!
//! What keeps this safe:
//! - `SCHED_RESET_ON_FORK`: nothing the master starts (workers, their
//!   children, threads of its blocking pool) inherits the policy.
//! - `RLIMIT_RTTIME`: if the master ever runs [`RUN_LIMIT`] on end without
//!   sleeping (a bug, or a load that keeps one core saturated), the kernel
//!   sends `SIGXCPU`, and its handler puts every real-time thread of the
//!   master back under the ordinary policy for good, so it can never hold a
//!   core away from everything else. Workers get the limit they had back.
//! - Without the privilege (not root, or a container without
//!   `CAP_SYS_NICE`), the master runs as before and says so once.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

/// CPU time the master may use without sleeping before it gives up the
/// real-time policy. A master relaying requests sleeps between wakeups
/// many times a second.
pub const RUN_LIMIT: Duration = Duration::from_secs(1);

/// Threads the policy was given to, by thread id (a multi-threaded master
/// has a few).
const MAX_THREADS: usize = 64;
static THREADS: [AtomicI32; MAX_THREADS] = [const { AtomicI32::new(0) }; MAX_THREADS];
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// Set by the `SIGXCPU` handler: the master went back to the ordinary
/// policy for good.
static DEMOTED: AtomicBool = AtomicBool::new(false);
/// The CPUs are saturated: the master's threads are under the ordinary
/// policy until they are not.
static PAUSED: AtomicBool = AtomicBool::new(false);

/// How often the CPUs' idle time is sampled.
pub const SAMPLE: Duration = Duration::from_millis(250);
/// Below this share of idle CPU time over a sample, the policy pauses...
pub const SATURATED: f64 = 0.10;
/// ...and from this share on, it resumes.
pub const SPARE: f64 = 0.25;
/// `RLIMIT_RTTIME` as herd found it, for the workers.
static ORIGINAL_LIMIT: OnceLock<libc::rlimit> = OnceLock::new();

/// Puts the calling thread under the policy, after setting the run limit
/// and its handler. On refusal (no privilege) nothing stays changed.
pub fn start() -> std::io::Result<()> {
    let mut original = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_RTTIME, &mut original) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let limit = RUN_LIMIT.as_micros() as libc::rlim_t;
    // The hard limit stays where it was (SIGKILL there is not ours to set).
    let ours = libc::rlimit {
        rlim_cur: limit.min(original.rlim_max),
        rlim_max: original.rlim_max,
    };
    // SAFETY: the handler only makes system calls and touches atomics;
    // setrlimit acts on this process.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_run_limit as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGXCPU, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::setrlimit(libc::RLIMIT_RTTIME, &ours) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let _ = ORIGINAL_LIMIT.set(original);
    if enter() {
        return Ok(());
    }
    let refused = std::io::Error::last_os_error();
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_RTTIME, &original) };
    Err(refused)
}

/// Puts the calling thread under `SCHED_FIFO` (reset on fork): the
/// master's thread, or each thread of a multi-threaded master's runtime.
/// False when the kernel refuses (errno says why) or the master already
/// gave the policy up.
pub fn enter() -> bool {
    if DEMOTED.load(Ordering::SeqCst) {
        return false;
    }
    let ok = fifo(0);
    if ok {
        let i = COUNT.fetch_add(1, Ordering::SeqCst);
        if i < MAX_THREADS {
            // SAFETY: gettid has no preconditions.
            THREADS[i].store(unsafe { libc::gettid() }, Ordering::SeqCst);
        } else {
            // Past the table the handler could not find it: not real-time.
            normal(0);
            return false;
        }
        if PAUSED.load(Ordering::SeqCst) {
            normal(0);
        }
    }
    ok
}

/// Whether the master may use the policy: a thread of it entered, and it
/// has not given the policy up.
pub fn enabled() -> bool {
    COUNT.load(Ordering::SeqCst) > 0 && !demoted()
}

/// Every thread that entered the policy, under it (`true`) or back under
/// the ordinary one.
fn set_all(realtime: bool) {
    let n = COUNT.load(Ordering::SeqCst).min(MAX_THREADS);
    for t in &THREADS[..n] {
        let tid = t.load(Ordering::SeqCst);
        if tid == 0 {
            continue;
        }
        if realtime {
            fifo(tid);
        } else {
            normal(tid);
        }
    }
}

/// Pauses the policy (`true`: the CPUs are saturated) or resumes it.
fn pause(saturated: bool) {
    PAUSED.store(saturated, Ordering::SeqCst);
    if !demoted() {
        set_all(!saturated);
        // The run limit's handler may have run in between.
        if demoted() {
            set_all(false);
        }
    }
}

/// Whether the master gave the policy up after running too long.
pub fn demoted() -> bool {
    DEMOTED.load(Ordering::SeqCst)
}

/// `RLIMIT_RTTIME` as herd found it, when herd changed it: what a worker
/// gets back before it execs.
pub fn original_limit() -> Option<libc::rlimit> {
    ORIGINAL_LIMIT.get().copied()
}

/// `tid` (0: the calling thread) under `SCHED_FIFO` priority 1, reset on
/// fork; false when the kernel refuses.
fn fifo(tid: libc::pid_t) -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: a system call on a thread id; harmless if the thread is gone.
    unsafe {
        libc::sched_setscheduler(tid, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) == 0
    }
}

fn normal(tid: libc::pid_t) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a system call on a thread id; harmless if the thread is gone.
    unsafe {
        libc::sched_setscheduler(tid, libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK, &param);
    }
}

/// `SIGXCPU`: the run limit passed. Every real-time thread goes back to the
/// ordinary policy; the limit is lifted so the signal does not come again.
extern "C" fn on_run_limit(_: libc::c_int) {
    DEMOTED.store(true, Ordering::SeqCst);
    // Atomics and system calls only: safe in a signal handler.
    set_all(false);
    if let Some(original) = ORIGINAL_LIMIT.get() {
        // SAFETY: setrlimit is a plain system call.
        unsafe {
            libc::setrlimit(libc::RLIMIT_RTTIME, original);
        }
    }
}

/// Puts the calling thread back under the ordinary policy (a
/// multi-threaded master's main thread, which only waits).
pub fn leave() {
    normal(0);
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    // Out of the table, so the governor does not put it back.
    for t in &THREADS {
        let _ = t.compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// The master's governor, while [`enabled`]: samples the CPUs' idle time
/// every [`SAMPLE`], pauses the policy while they are saturated and
/// resumes it when they are not, and says, once, that the master gave the
/// policy up (the signal handler cannot log).
pub async fn govern() {
    let mut tick = tokio::time::interval(SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = cpu_times();
    loop {
        tick.tick().await;
        if demoted() {
            tracing::warn!(
                "the master ran {RUN_LIMIT:?} without sleeping and left SCHED_FIFO (master.realtime) for the ordinary policy"
            );
            return;
        }
        let now = cpu_times();
        let Some(idle) = last.zip(now).and_then(|(a, b)| idle_share(a, b)) else {
            last = now;
            continue;
        };
        last = now;
        let paused = PAUSED.load(Ordering::SeqCst);
        if let Some(saturated) = decide(paused, idle) {
            pause(saturated);
            tracing::debug!(
                idle = format!("{:.0}%", idle * 100.0),
                "master.realtime {}",
                if saturated {
                    "paused: the CPUs are saturated"
                } else {
                    "resumed"
                }
            );
        }
    }
}

/// Whether the policy changes given the CPUs' idle share over the last
/// sample: `Some(true)` pauses it, `Some(false)` resumes it.
fn decide(paused: bool, idle: f64) -> Option<bool> {
    match (paused, idle) {
        (false, i) if i < SATURATED => Some(true),
        (true, i) if i >= SPARE => Some(false),
        _ => None,
    }
}

/// All CPUs' (idle + iowait, total) time from the first line of
/// `/proc/stat`, in clock ticks.
fn cpu_times() -> Option<(u64, u64)> {
    use std::io::Read;
    // The first line only, in one read: the whole file is a line per CPU
    // and thousands of interrupt counts, read four times a second.
    // Ten numbers of at most 20 digits fit.
    let mut buf = [0u8; 256];
    let n = std::fs::File::open("/proc/stat")
        .ok()?
        .read(&mut buf)
        .ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let (line, _) = text.split_once('\n')?;
    parse_cpu_line(line)
}

fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is
    // already in user and nice).
    let t: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if t.len() < 5 {
        return None;
    }
    Some((t[3] + t[4], t.iter().sum()))
}

/// The share of CPU time idle between two samples.
fn idle_share(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1)?;
    let idle = after.0.checked_sub(before.0)?;
    (total > 0).then(|| idle as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_policy_pauses_on_saturated_cpus_and_resumes_with_spare_ones() {
        assert_eq!(decide(false, 0.05), Some(true));
        assert_eq!(decide(false, 0.10), None);
        assert_eq!(decide(false, 0.60), None);
        // Hysteresis: between the two marks nothing changes.
        assert_eq!(decide(true, 0.15), None);
        assert_eq!(decide(true, 0.25), Some(false));
        assert_eq!(decide(true, 0.0), None);
    }

    #[test]
    fn idle_time_comes_from_the_first_line_of_proc_stat() {
        let before = parse_cpu_line("cpu  100 0 50 800 50 0 0 0 0 0").unwrap();
        assert_eq!(before, (850, 1000));
        let after = parse_cpu_line("cpu  230 0 70 840 60 0 0 0 0 0").unwrap();
        assert_eq!(idle_share(before, after), Some(0.25));
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5"), None);
        assert_eq!(parse_cpu_line("cpu  1 x 3 4 5"), None);
        assert_eq!(idle_share(after, before), None, "a counter going back");
        assert!(cpu_times().is_some(), "this machine's /proc/stat");
    }

    fn policy() -> libc::c_int {
        // SAFETY: a query on the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// The guard, for real: a thread under the policy that spins past the
    /// run limit is put back under the ordinary one by the kernel's
    /// SIGXCPU, and its workers would get the limit herd found.
    #[test]
    fn a_master_thread_that_never_sleeps_leaves_the_policy() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
            assert!(!ci, "CI runs as root: SCHED_FIFO must be allowed");
            return;
        }
        let spun = std::thread::spawn(|| {
            start().expect("root may use SCHED_FIFO");
            assert_eq!(policy(), libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK);
            assert!(enabled());
            // On end, without a system call that sleeps; bounded at 5 s.
            let began = Instant::now();
            while !demoted() && began.elapsed() < Duration::from_secs(5) {
                std::hint::spin_loop();
            }
            (began.elapsed(), policy())
        });
        let (took, after) = spun.join().unwrap();
        assert!(demoted(), "still real-time after {took:?}");
        assert!(took >= RUN_LIMIT, "{took:?}");
        assert_eq!(after & !libc::SCHED_RESET_ON_FORK, libc::SCHED_OTHER);
        assert!(!enabled());
        // The limit is lifted again, and is what a worker gets.
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        unsafe { libc::getrlimit(libc::RLIMIT_RTTIME, &mut now) };
        let original = original_limit().unwrap();
        assert_eq!(
            (now.rlim_cur, now.rlim_max),
            (original.rlim_cur, original.rlim_max)
        );
        // And no thread enters it again.
        assert!(!enter());
    }
}
