//! The one table of every directive: its scope, default and meaning. The
//! builder rejects names that are not here, and the README's reference is
//! generated from (and checked against) [`reference_markdown`].

/// Where a directive may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Global,
    Pool,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Pool => "pool",
        }
    }
}

/// One row of the reference. Array directives are written as they appear
/// in a file: `env[NAME]` takes a name, `warmup.request[]` repeats.
#[derive(Clone, Copy, Debug)]
pub struct Directive {
    pub name: &'static str,
    pub scope: Scope,
    pub default: &'static str,
    pub doc: &'static str,
    /// For a php-fpm directive that means nothing under herd: why. It is
    /// accepted (a php-fpm config loads unchanged) and `herd check` notes it.
    pub inert: Option<&'static str>,
}

impl Directive {
    /// The name without its brackets: `env` for `env[NAME]`.
    pub fn key(&self) -> &'static str {
        self.name.split_once('[').map_or(self.name, |(key, _)| key)
    }

    /// Whether the directive is written with brackets.
    pub fn is_array(&self) -> bool {
        self.name.contains('[')
    }
}

/// The directive written as `key` (without brackets), if there is one;
/// a key that exists in both scopes (php-fpm's `process.priority`) is
/// found in `scope` first.
pub fn find_in(key: &str, scope: Scope) -> Option<&'static Directive> {
    let mut named = ALL.iter().filter(|d| d.key() == key);
    let first = named.next()?;
    if first.scope == scope {
        Some(first)
    } else {
        named.find(|d| d.scope == scope).or(Some(first))
    }
}

/// For an unknown `key`: the directive of `scope` it most likely means,
/// if one is close enough to be a typo (`pm.max_chidren`, `listen_mode`).
pub fn closest(key: &str, scope: Scope) -> Option<&'static str> {
    let wanted = key.to_ascii_lowercase().replace('_', ".");
    ALL.iter()
        .filter(|d| d.scope == scope)
        .map(|d| {
            let name = d.key().replace('_', ".");
            (strsim::damerau_levenshtein(&wanted, &name), d.key())
        })
        .filter(|(distance, name)| *distance <= (name.len() / 4).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// The directive written as `key`, in any scope.
pub fn find(key: &str) -> Option<&'static Directive> {
    ALL.iter().find(|d| d.key() == key)
}

const fn global(name: &'static str, default: &'static str, doc: &'static str) -> Directive {
    Directive {
        name,
        scope: Scope::Global,
        default,
        doc,
        inert: None,
    }
}

const fn pool(name: &'static str, default: &'static str, doc: &'static str) -> Directive {
    Directive {
        name,
        scope: Scope::Pool,
        default,
        doc,
        inert: None,
    }
}

/// A php-fpm directive accepted without effect; `why` ends up both in the
/// reference and in `herd check`'s note.
const fn inert(
    scope: Scope,
    name: &'static str,
    doc: &'static str,
    why: &'static str,
) -> Directive {
    Directive {
        name,
        scope,
        default: "-",
        doc,
        inert: Some(why),
    }
}

#[rustfmt::skip]
pub const ALL: &[Directive] = &[
    global("pid", "none", "php-fpm: pid file, written at start and removed at exit."),
    global("error_log", "stderr", "php-fpm: the master's log file. `syslog` is not supported: leave it unset and let the service manager collect stderr."),
    global("log_format", "text", "herd: `text`, one line per event; or `json`, one JSON object per line."),
    global("log_level", "notice", "php-fpm: least severe level logged: alert, error, warning, notice or debug."),
    global("process_control_timeout", "10s", "php-fpm: how long a stop or reload lets workers finish their requests before killing them. herd's default is 10s: php-fpm's 0 aborts in-flight requests on every reload and stop."),
    global("emergency_restart_threshold", "0", "php-fpm: this many workers dying of SIGSEGV or SIGBUS within `emergency_restart_interval` restarts every pool; 0 = off."),
    global("emergency_restart_interval", "0", "php-fpm: the window for `emergency_restart_threshold`; 0 = off."),
    global("process.max", "0", "php-fpm: cap on workers across all pools; 0 = no cap."),
    global("process.priority", "unchanged", "php-fpm: the master's nice value, -19 (favoured) to 20. herd's master relays every request, so with many busy workers a lower value keeps it from waiting its turn behind them; lowering it needs root."),
    global("master.threads", "1", "herd: threads running the master's event loop. One keeps the master's share of a small host low; raise it when one core cannot route all requests."),
    global("master.realtime", "yes", "herd: run the master's event loop under the kernel's real-time policy (SCHED_FIFO, priority 1) while the CPUs have time to spare, so a master woken to relay a request or a response does not wait for a CPU behind busy PHP processes; while they are saturated (under 10% idle over 250 ms, until 25% again) it runs under the ordinary policy, where one wakeup relays several responses. Nothing it starts inherits the policy, and a master that runs 1 s without sleeping gives it up for good. Needs root or CAP_SYS_NICE; without, the master runs as before and logs it."),
    global("worker.socket_dir", "a private directory under $XDG_RUNTIME_DIR or /tmp; /run/herd as root", "herd: directory for the sockets between herd and its workers."),
    global("control.listen", "beside the pid file (`herd.pid` → `herd.sock`, or `php8.2-fpm.pid` → `php8.2-fpm.herd-ctl.sock` when a pool listens on `php8.2-fpm.sock`, as Debian's php-fpm layout has it) when `pid` is set, else in `worker.socket_dir`", "herd: unix socket (mode 0600) for `herd ctl`. `herd check` refuses one, or a pid file, that is a pool's listening socket."),
    global("shutdown.depool_delay", "0", "herd: on stop, keep accepting this long after the signal so load balancers can take the host out first."),
    global("daemonize", "no", "php-fpm: fork into the background. herd always runs in the foreground: `no` is accepted, `yes` is an error."),
    global("rlimit_files", "the hard limit", "php-fpm: the master's open file limit (RLIMIT_NOFILE), which workers inherit unless their pool sets `rlimit_files`. Unset, herd raises its soft limit to the hard one, since it holds two descriptors per request in flight."),
    global("rlimit_core", "inherited", "php-fpm: the master's core file size limit (RLIMIT_CORE) in bytes, or `unlimited`; workers inherit it unless their pool sets `rlimit_core`."),
    global("log_limit", "1024", "php-fpm: the longest line of a worker's output that is logged, in bytes; the rest of the line is cut."),
    inert(Scope::Global, "syslog.ident", "php-fpm: the syslog ident.", "herd does not write to syslog: leave error_log unset and the service manager (journald) collects stderr"),
    inert(Scope::Global, "syslog.facility", "php-fpm: the syslog facility.", "herd does not write to syslog: leave error_log unset and the service manager (journald) collects stderr"),
    inert(Scope::Global, "log_buffering", "php-fpm: buffer worker output lines before logging them.", "herd logs each line of worker output whole, with one write"),
    inert(Scope::Global, "events.mechanism", "php-fpm: the event loop's polling mechanism.", "herd's event loop always uses epoll"),
    inert(Scope::Global, "systemd_interval", "php-fpm: how often the master reports its status to systemd.", "herd tells systemd its state when it changes, and pings the watchdog when the unit sets WatchdogSec"),
    global("include", "none", "php-fpm: read the files matching this glob here, in name order; relative to the including file; allowed in any section; at most 5 nested files."),

    pool("prefix", "the config file's directory", "php-fpm: the directory the pool's relative `listen`, `access.log`, `slowlog` and `command` are read against (itself relative to the config file's directory), and that `$prefix` stands for at the start of `chdir` and `chroot`. It must exist."),
    pool("listen", "required", "php-fpm: where the pool accepts FastCGI connections: a unix socket path (any value with a `/`), `host:port`, `[ipv6]:port`, `*:port` or a bare port (127.0.0.1 only, where php-fpm takes every address); herd adds `systemd:NAME`, the socket systemd passes with that FileDescriptorName."),
    pool("listen.backlog", "511", "php-fpm: listen(2) backlog; -1 = the kernel's maximum."),
    pool("listen.owner", "herd's user", "php-fpm: owner of the unix socket."),
    pool("listen.group", "herd's group", "php-fpm: group of the unix socket."),
    pool("listen.mode", "0660", "php-fpm: octal permissions of the unix socket."),
    pool("listen.acl_users", "none", "php-fpm: comma-separated users given read and write access to the unix socket by a POSIX ACL; with it (or `listen.acl_groups`), `listen.owner` and `listen.group` are ignored, as in php-fpm."),
    pool("listen.acl_groups", "none", "php-fpm: comma-separated groups given read and write access to the unix socket by a POSIX ACL."),
    pool("listen.allowed_clients", "any", "php-fpm: comma-separated IPv4/IPv6 addresses allowed to connect over TCP; others are closed at once."),
    pool("listen.max_connections", "8192", "herd: open client connections per listener; past it a new connection is closed at once, with one log line."),
    pool("user", "herd's user", "php-fpm: user the workers run as. Required when herd runs as root (unless --allow-root); ignored, with a warning, when it does not."),
    pool("group", "the user's primary group", "php-fpm: group the workers run as."),
    pool("command", "required", "herd: the worker program. Without a `/` it is looked up in PATH; `herd` means this herd binary."),
    pool("spawn", "exec", "herd: `exec` starts each worker from `command`; `preload` starts `command` once per generation as a preloader (a `herd::worker` program), which loads and validates the application and forks the workers, sharing its memory copy-on-write. A failed validation refuses the generation."),
    pool("args", "none", "herd: arguments for `command`, split into words like a shell: quotes group, backslashes escape."),
    pool("chdir", "herd's working directory", "php-fpm: the workers' working directory, used as given (inside `chroot` when set)."),
    pool("chroot", "none", "php-fpm: absolute directory the workers chroot(2) into; needs root. `command` is then an absolute path inside it."),
    pool("clear_env", "yes", "php-fpm: start workers with an empty environment plus `env[]`, USER and HOME."),
    pool("env[NAME]", "none", "php-fpm: set NAME for the workers; a value that is exactly `$VAR` copies VAR from herd's environment. An empty value is an error."),
    pool("process.priority", "unchanged", "php-fpm: the workers' nice value, -19 to 20."),
    pool("rlimit_files", "inherited", "php-fpm: the workers' open file limit (RLIMIT_NOFILE)."),
    pool("rlimit_core", "inherited", "php-fpm: the workers' core file size limit in bytes, or `unlimited`."),
    pool("php_value[NAME]", "none", "php-fpm: a php.ini setting for the workers, passed as `-d NAME=value` after `args`."),
    pool("php_flag[NAME]", "none", "php-fpm: a boolean php.ini setting, normalised to 1 or 0 and passed as `-d`."),
    pool("php_admin_value[NAME]", "none", "php-fpm: like `php_value`, but locked against ini_set(). herd passes it as `-d` too, so the lock is not enforced."),
    pool("php_admin_flag[NAME]", "none", "php-fpm: like `php_flag`, but locked against ini_set(). herd passes it as `-d` too, so the lock is not enforced."),
    pool("security.limit_extensions", "`.php .phar` for PHP pools; none for other programs", "php-fpm: the endings a script may have, separated by spaces; empty = any. herd refuses any other with 403 `Access denied.` before a worker sees it, judging the file php-cgi would really run (see *Security*), and pins `cgi.fix_pathinfo` on php-cgi's command line. A pool is PHP when `command` is a php-cgi or it sets `php_*` values."),
    pool("php.group_size", "`pm.max_children` with php-fpm as the engine; 1 with php-cgi", "herd: PHP processes per group, which share one OPcache and run as one worker with a slot each. With `command` a php-fpm, each group is a php-fpm master running that many children (`pm = static`); with a php-cgi, one php-cgi with `PHP_FCGI_CHILDREN`. `pm.max_children` counts PHP processes: a pool runs `pm.max_children / php.group_size` groups, rounded up. See *PHP engines*."),
    pool("catch_workers_output", "yes", "php-fpm: log the workers' stdout and stderr line by line, else discard them. herd's default is yes, not php-fpm's no, so start failures are visible; with the php-fpm engine it is php-fpm's no (its master reports the engine's failures either way, and caught output costs that master a wakeup per request)."),
    pool("decorate_workers_output", "yes", "php-fpm: log each line of worker output with its pool and pid (`worker said:`); `no` logs the line as the worker wrote it."),
    pool("pm", "required", "php-fpm: how the worker count is chosen: static, dynamic or ondemand."),
    pool("pm.max_children", "required", "php-fpm: static: the number of workers; dynamic and ondemand: the most at once."),
    pool("pm.start_servers", "min_spare + (max_spare - min_spare) / 2", "php-fpm: dynamic: workers started at first; within [min_spare, max_spare]."),
    pool("pm.min_spare_servers", "required for dynamic", "php-fpm: dynamic: the fewest idle workers kept."),
    pool("pm.max_spare_servers", "required for dynamic", "php-fpm: dynamic: the most idle workers kept."),
    pool("pm.max_spawn_rate", "32", "php-fpm: dynamic: the most workers started at once."),
    pool("pm.process_idle_timeout", "10s", "php-fpm: ondemand: a worker idle this long is stopped; at least 1s."),
    pool("pm.max_requests", "0", "php-fpm: replace a worker after this many requests; 0 = never."),
    pool("pm.max_queue", "1024", "herd: requests waiting for a free worker; past it new requests are refused (503 with `Retry-After`; logged at most once a second per pool, with a count)."),
    pool("pm.status_listen", "none", "php-fpm: a second address (unix path or `host:port`) answering only the pool's `pm.status_path` and `ping.path`, so status can be read while the pool's own listener is saturated, or kept off it; every other request there is answered 404."),
    pool("pm.status_path", "none", "php-fpm: URI answered with the pool's status. Starts with `/`; letters, digits and `/_-.~` only."),
    pool("ping.path", "none", "php-fpm: URI answered with `ping.response`, for liveness checks. Same rule as `pm.status_path`."),
    pool("ping.response", "pong", "php-fpm: body of the ping answer."),
    pool("access.log", "none", "php-fpm: the access log file."),
    pool("access.format", "`%R - %u %t \"%m %r\" %s`", "php-fpm: format of an access log line."),
    pool("access.suppress_path[]", "none", "php-fpm: a request URI (path without the query) whose successful (2xx) requests are not written to `access.log`, such as a health check polled every second; repeat the line for several."),
    pool("slowlog", "none", "php-fpm: file for slow request reports; required with `request_slowlog_timeout`."),
    pool("request_slowlog_timeout", "0", "php-fpm: report a request running longer than this to `slowlog`; 0 = off."),
    pool("request_terminate_timeout", "0", "php-fpm: kill the worker of a request running longer than this; 0 = off."),
    pool("request_terminate_timeout_track_finished", "no", "php-fpm: with php-fpm as the engine, passed to it: the timeout also covers a script still running after fastcgi_finish_request(). Other workers: herd times a request until the worker ends it, and has no view past that."),
    pool("request_slowlog_trace_depth", "20", "php-fpm: with php-fpm as the engine, passed to it: the depth of the PHP backtrace in its slowlog entries. herd's own slowlog line (other workers) has no backtrace."),
    pool("process.dumpable", "no", "php-fpm: with php-fpm as the engine, passed to it (its children can be ptraced and dump core after changing user). Workers herd starts itself are always dumpable, since the kernel resets the flag when they exec after changing user."),
    inert(Scope::Pool, "apparmor_hat", "php-fpm: the AppArmor hat the workers change to.", "herd does not change AppArmor hats; confine the workers by their own program's AppArmor profile"),
    pool("request.queue_timeout", "30s", "herd: the longest a request waits for a free worker before it is refused (503, logged like a full queue)."),
    pool("request.read_timeout", "30s", "herd: a client request whose next bytes take longer than this is dropped; a new connection that sends nothing for this long is closed without a log line."),
    pool("request.header_timeout", "60s", "herd: a request's params must be complete this long after its first byte, or the connection is dropped (nginx sends them at once; a client trickling a byte at a time is stopped here); 0 = off."),
    pool("request.body_timeout", "60s", "herd: a request's body must be complete this long after its params, plus one second for every `request.body_min_rate` bytes received; time herd itself waits for the worker does not count; 0 = off."),
    pool("request.body_min_rate", "500 (bytes a second)", "herd: every this many body bytes received add a second to `request.body_timeout` (Apache's `mod_reqtimeout` rule), so a slow but steady upload goes on and a trickle is dropped. Sizes like `1K` work; 0 = `request.body_timeout` alone."),
    pool("request.idle_timeout", "120s", "herd: a keep-alive client connection idle this long between requests is closed, without a log line. Keep it longer than nginx's upstream `keepalive_timeout` (60s by default), so nginx closes first and never sends a request on a connection herd is closing; 0 = never."),
    pool("response.hold", "100ms", "herd: for PHP groups (php-fpm as the engine, or php-cgi with `php.group_size` above 1), how long the start of a response may wait in herd for the rest of it. A PHP process of a group hangs up as soon as its response is complete, and herd, which then reads it whole, relays it to nginx in one write: no wakeup of herd or nginx for each 8K piece PHP writes (on a DokuWiki page, a third of the CPU each spends on it). A response still running past this with output waiting, or past 64K, is relayed as it comes from then on (a script that flushes early has its first bytes delayed by this much, once); 0 = relay every piece as it comes. Workers that keep their connections (php-cgi one per worker, other programs) are relayed as they come."),
    pool("request.max_params_size", "128K", "herd: the largest FastCGI params block accepted from a client."),
    pool("worker.start_timeout", "30s", "herd: the longest a new worker may take to become ready, warm-up included."),
    pool("worker.min_lifetime", "5s", "herd: a worker exiting sooner than this without having served a request counts as a failed start (the respawns back off)."),
    pool("worker.stop_signal", "TERM", "herd: signal that stops a worker, by name (TERM, QUIT, INT, HUP, USR1, USR2, KILL) or number."),
    pool("worker.kill_timeout", "5s", "herd: time between `worker.stop_signal` and SIGKILL."),
    pool("worker.max_memory", "none", "herd: replace a worker whose resident memory grows past this size, e.g. 256M; 0 = no limit."),
    pool("worker.fatal_exit_codes", "none", "herd: worker exit codes, comma-separated, that mean a retry cannot help (e.g. a config error), so herd stops restarting."),
    pool("worker.probe", "values", "herd: how the readiness gate first asks a new worker whether it serves: `values` sends two `FCGI_GET_VALUES` records and waits for the first answer (what every library tested answers at once, libfcgi included: see *Process managers*); `request` sends the first `warmup.request` instead, for a program that management records crash (Ruby's pure fcgi)."),
    pool("worker.slots", "what the worker says (FCGI_MAX_CONNS), else 1", "herd: how many requests one worker serves at once, each on a connection of its own: php-cgi with `PHP_FCGI_CHILDREN=N` says N itself; an FCGI::ProcManager script forking N processes on its socket (libfcgi always says 1) needs `worker.slots = N`, and so does a Go program on `net/http/fcgi`, which serves every request in a goroutine and names no limit. Dispatch, the queue and status count slots."),
    pool("warmup.request[]", "none", "herd: `[METHOD] /uri` sent to each new worker before it takes traffic; repeat the line for several. Its SCRIPT_FILENAME is `chdir` joined with the path, so a PHP pool that warms up needs `chdir` set to the document root."),
    pool("warmup.timeout", "30s", "herd: the longest one worker's warm-up requests may take."),
    pool("rollout.surge", "25%", "herd: extra workers started beside the old generation during a rollout: a count or a percentage of `pm.max_children`, at least 1."),
    pool("rollout.max_failures", "3", "herd: failed worker starts after which a rollout is abandoned and the old generation kept."),
    pool("rollout.timeout", "5m", "herd: the longest a rollout may take before it is abandoned."),
];

/// The reference table for the README, one row per directive.
pub fn reference_markdown() -> String {
    let mut out = String::from("| directive | scope | default | meaning |\n|---|---|---|---|\n");
    for d in ALL {
        let inert = d
            .inert
            .map(|why| format!(" No effect under herd: {why}."))
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{}` | {} | {} | {}{inert} |\n",
            d.name,
            d.scope.as_str(),
            d.default,
            d.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique() {
        let mut seen = HashSet::new();
        for d in ALL {
            assert!(
                seen.insert((d.key(), d.scope)),
                "directive '{}' is listed twice",
                d.name
            );
        }
    }

    #[test]
    fn rows_are_complete_and_fit_a_table() {
        for d in ALL {
            assert!(!d.default.is_empty() && !d.doc.is_empty(), "{}", d.name);
            assert!(d.inert.is_none_or(|why| !why.contains('|')), "{}", d.name);
            assert!(
                !d.doc.contains('|') && !d.default.contains('|'),
                "{}",
                d.name
            );
            assert!(
                d.doc.starts_with("php-fpm: ") || d.doc.starts_with("herd: "),
                "{}",
                d.name
            );
        }
        let table = reference_markdown();
        assert_eq!(table.lines().count(), ALL.len() + 2);
        assert!(table.contains("| `env[NAME]` | pool | none |"));
    }

    #[test]
    fn typos_find_the_directive_meant() {
        assert_eq!(
            closest("pm.max_chidren", Scope::Pool),
            Some("pm.max_children")
        );
        assert_eq!(closest("listen_mode", Scope::Pool), Some("listen.mode"));
        assert_eq!(
            closest("PM.MAX_REQUESTS", Scope::Pool),
            Some("pm.max_requests")
        );
        assert_eq!(closest("error_logs", Scope::Global), Some("error_log"));
        assert_eq!(closest("frobnicate", Scope::Pool), None);
        assert_eq!(closest("pm.bogus", Scope::Pool), None);
    }

    #[test]
    fn find_strips_brackets() {
        assert_eq!(find("env").unwrap().name, "env[NAME]");
        assert!(find("warmup.request").unwrap().is_array());
        assert!(!find("pm").unwrap().is_array());
        assert!(find("pm.bogus").is_none());
    }
}
