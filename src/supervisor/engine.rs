//! PHP engines: how a group of PHP processes that share one OPcache is
//! started as one worker.
//!
//! - **php-fpm**: one php-fpm master per group, run in the foreground as
//!   the pool's user with a config herd writes (`pm = static`, the group's
//!   size, the pool's PHP settings, `security.limit_extensions`,
//!   `request_terminate_timeout`, the slowlog), listening on the socket herd
//!   bound and passes it (php-fpm's `FPM_SOCKETS`, the way php-fpm hands
//!   sockets to itself on reload). Its children are forked from a master
//!   that loaded PHP, as under php-fpm itself: one OPcache, php-fpm's SAPI
//!   (`fastcgi_finish_request()`), its `php.ini` under `fpm/`, its
//!   backtraces in the slowlog.
//! - **php-cgi**: one php-cgi with `PHP_FCGI_CHILDREN` set to the group's
//!   size; its children share the parent's OPcache.
//!
//! Either way the group is one worker with one slot per PHP process, and
//! the engine replaces its own processes (`pm.max_requests`); herd rolls
//! groups out and retires them like any worker.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::config::{PmMode, PoolConfig};

/// Where php-fpm finds the socket herd passes it, its config, and the
/// socket its status page answers on.
pub const FPM_SOCKET_FD: i32 = 3;
pub const FPM_CONFIG_FD: i32 = 4;
pub const FPM_STATUS_FD: i32 = 5;

/// The socket a php-fpm group answers its status page on
/// (`pm.status_listen`): php-fpm serves it from a pool of its own, so herd
/// reads a group's per-process figures while every child is busy, and no
/// request of the pool's ever waits behind it.
pub fn status_socket(worker_socket: &Path) -> PathBuf {
    let mut s = worker_socket.as_os_str().to_owned();
    s.push(".status");
    PathBuf::from(s)
}

/// The path php-fpm's status page answers to in a group herd starts. It
/// must be set in the group's own pool for `pm.status_listen` to serve it,
/// so that pool answers it too: the path is new in every master (a client
/// cannot guess it), and the router refuses it besides (see
/// `router::local`).
pub fn status_path() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let mut token = [0u8; 8];
        let read = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut token));
        if read.is_err() {
            // No randomness: still private to this master, and refused by
            // the router all the same.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            token = (now.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
        }
        let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
        format!("/.herd-engine-status-{hex}")
    })
}

/// php-fpm's command line after the pool's own `args`: in the foreground,
/// logging to stderr (which herd reads), its config on [`FPM_CONFIG_FD`],
/// and the pool's PHP settings as `-d`: the master reads them when it
/// starts, before it forks, so the settings PHP reads only then
/// (`opcache.preload`, `opcache.memory_consumption`, `opcache.jit_buffer_size`)
/// take effect; in a php-fpm pool's own `php_admin_value` they come too
/// late. The pool config sets them again, with php-fpm's admin lock.
pub fn fpm_args(cfg: &PoolConfig, as_root: bool) -> Vec<String> {
    let mut args = vec![
        "--nodaemonize".to_string(),
        "--force-stderr".to_string(),
        "--fpm-config".to_string(),
        format!("/proc/self/fd/{FPM_CONFIG_FD}"),
    ];
    if as_root {
        args.push("--allow-to-run-as-root".into());
    }
    for d in &cfg.php_defines {
        args.push("-d".into());
        args.push(format!("{}={}", d.name, quote(&d.value)));
    }
    args
}

/// The config of one php-fpm group listening on `socket`.
pub fn fpm_config(cfg: &PoolConfig, socket: &Path, size: u32) -> String {
    // Logs go to stderr (--force-stderr), which herd reads line by line;
    // the file php-fpm insists on is nothing.
    let mut out = format!(
        "[global]\nerror_log = /dev/null\ndaemonize = no\nlog_limit = 8192\n[{}]\n",
        cfg.name
    );
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k} = {}\n", quote(v)));
    line("listen", &socket.display().to_string());
    line("pm.status_path", status_path());
    line(
        "pm.status_listen",
        &status_socket(socket).display().to_string(),
    );
    for (name, value) in process_manager(cfg, size) {
        line(name, &value);
    }
    line("pm.max_requests", &cfg.max_requests.to_string());
    line(
        "request_terminate_timeout",
        &format!("{}ms", cfg.request_terminate_timeout.as_millis()),
    );
    if let Some(slowlog) = &cfg.slowlog {
        line("slowlog", &slowlog.display().to_string());
        line(
            "request_slowlog_timeout",
            &format!("{}ms", cfg.request_slowlog_timeout.as_millis()),
        );
    }
    let extensions = cfg.limit_extensions.as_ref().map(|e| e.join(" "));
    line(
        "security.limit_extensions",
        extensions.as_deref().unwrap_or(".php .phar"),
    );
    line(
        "catch_workers_output",
        if cfg.catch_workers_output {
            "yes"
        } else {
            "no"
        },
    );
    line("decorate_workers_output", "no");
    for (name, value) in &cfg.engine_settings {
        line(name, value);
    }
    // herd already gave the master the pool's environment; its children
    // keep it.
    line("clear_env", "no");
    if let Some(dir) = &cfg.chdir {
        line("chdir", &dir.display().to_string());
    }
    for d in &cfg.php_defines {
        let kind = if d.admin {
            "php_admin_value"
        } else {
            "php_value"
        };
        line(&format!("{kind}[{}]", d.name), &d.value);
    }
    out
}

/// php-fpm's process manager within one group of at most `size` children:
/// the pool's `pm`, its spare-server counts shared out among the pool's
/// groups (each at least 1 and within php-fpm's rules: min ≤ start ≤ max
/// ≤ size).
fn process_manager(cfg: &PoolConfig, size: u32) -> Vec<(&'static str, String)> {
    let mode = cfg.php_group.as_ref().map_or(PmMode::Static, |g| g.pm);
    let mut pm = vec![
        ("pm", mode.as_str().to_string()),
        ("pm.max_children", size.to_string()),
    ];
    match mode {
        PmMode::Static => {}
        PmMode::Ondemand => pm.push((
            "pm.process_idle_timeout",
            format!("{}s", cfg.process_idle_timeout.as_secs().max(1)),
        )),
        PmMode::Dynamic => {
            let groups = cfg.workers().max(1);
            let share = |n: u32| n.div_ceil(groups).clamp(1, size);
            let min = share(cfg.min_spare_servers);
            let max = share(cfg.max_spare_servers).max(min);
            let start = share(cfg.start_servers).clamp(min, max);
            pm.extend([
                ("pm.start_servers", start.to_string()),
                ("pm.min_spare_servers", min.to_string()),
                ("pm.max_spare_servers", max.to_string()),
                ("pm.max_spawn_rate", cfg.max_spawn_rate.to_string()),
            ]);
        }
    }
    pm
}

/// A value for php-fpm's ini reader, as php-cgi's `-d` gets it: as written,
/// so an expression (`E_ALL & ~E_NOTICE`) is evaluated and a keyword (`On`)
/// read as in php.ini and as php-fpm reads a pool file; quoted, with
/// quotes and backslashes escaped, only where the reader would cut or
/// expand it (`;` starts a comment, `"` a string, `${` a variable).
pub fn quote(v: &str) -> String {
    let whole = !v.is_empty()
        && !v.contains(['"', ';', '$', '{', '}', '\\', '=', '\'', '\n'])
        && v.trim() == v;
    if whole {
        return v.to_string();
    }
    let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// `text` in an anonymous in-memory file, for the child to read by fd: no
/// file on disk for the pool's user to read or for herd to clean up.
pub fn memfd(name: &str, text: &str) -> std::io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).expect("no NUL in a memfd name");
    // SAFETY: memfd_create takes a NUL-terminated name and flags, and
    // returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::File::from(fd.try_clone()?).write_all(text.as_bytes())?;
    Ok(fd)
}

/// The environment php-cgi needs to run a group of `size`: its children,
/// and how many requests each serves before php-cgi replaces it
/// (`pm.max_requests`; herd's own count would recycle the whole group),
/// unless the pool sets that itself.
pub fn cgi_env(cfg: &PoolConfig, size: u32) -> Vec<(String, String)> {
    let mut env = vec![("PHP_FCGI_CHILDREN".to_string(), size.to_string())];
    if !cfg.env.iter().any(|(k, _)| k == "PHP_FCGI_MAX_REQUESTS") {
        env.push((
            "PHP_FCGI_MAX_REQUESTS".to_string(),
            cfg.max_requests.to_string(),
        ));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool whose command is named like php-fpm (a stand-in: the text
    /// herd writes does not depend on the binary).
    fn pool(extra: &str) -> PoolConfig {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fpm = dir.path().join("php-fpm8.2");
        std::fs::write(&fpm, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&fpm, std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = format!(
            "[www]\nlisten = 127.0.0.1:9\nuser = nobody\ncommand = {}\n\
             pm = static\npm.max_children = 8\n{extra}",
            fpm.display()
        );
        let config = crate::config::parse_str(
            &text,
            Path::new("/etc/herd/herd.conf"),
            &crate::config::LoadOptions::default(),
        );
        config.unwrap_or_else(|e| panic!("{e}")).pools[0].clone()
    }

    #[test]
    fn an_fpm_group_is_static_with_the_pools_php_settings() {
        let cfg = pool(
            "pm.max_requests = 500\nrequest_terminate_timeout = 30s\n\
             php_admin_value[memory_limit] = 256M\nphp_value[error_reporting] = \"E_ALL & ~E_NOTICE\"\n\
             security.limit_extensions = .php .php7\n\
             process.dumpable = yes\nrequest_slowlog_trace_depth = 5\n",
        );
        let text = fpm_config(&cfg, Path::new("/run/herd/w-1-3.sock"), 8);
        for want in [
            "[global]\n",
            "daemonize = no\n",
            "[www]\n",
            "listen = /run/herd/w-1-3.sock\n",
            "pm = static\n",
            "pm.max_children = 8\n",
            "pm.max_requests = 500\n",
            "request_terminate_timeout = 30000ms\n",
            "security.limit_extensions = .php .php7\n",
            "php_admin_value[memory_limit] = 256M\n",
            "php_value[error_reporting] = E_ALL & ~E_NOTICE\n",
            "clear_env = no\n",
            "process.dumpable = yes\n",
            "request_slowlog_trace_depth = 5\n",
            "pm.status_listen = /run/herd/w-1-3.sock.status\n",
            &format!("pm.status_path = {}\n", status_path()),
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        // No user or group: php-fpm already runs as the pool's user.
        assert!(!text.contains("\nuser"), "{text}");
    }

    #[test]
    fn an_fpm_group_keeps_the_pools_process_manager() {
        let lines = |cfg: &PoolConfig, size| {
            process_manager(cfg, size)
                .into_iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
        };
        let ondemand = pool("pm = ondemand\npm.process_idle_timeout = 5s\n");
        assert_eq!(ondemand.pm, PmMode::Static, "herd keeps the group");
        assert_eq!(
            lines(&ondemand, 8),
            [
                "pm = ondemand",
                "pm.max_children = 8",
                "pm.process_idle_timeout = 5s"
            ]
        );
        // Two groups of 4 share the spare servers out.
        let dynamic = pool(
            "pm = dynamic\npm.start_servers = 3\npm.min_spare_servers = 2\n\
             pm.max_spare_servers = 4\nphp.group_size = 4\n",
        );
        assert_eq!(dynamic.workers(), 2);
        assert_eq!(
            lines(&dynamic, 4),
            [
                "pm = dynamic",
                "pm.max_children = 4",
                "pm.start_servers = 2",
                "pm.min_spare_servers = 1",
                "pm.max_spare_servers = 2",
                "pm.max_spawn_rate = 32",
            ]
        );
        assert_eq!(lines(&pool(""), 8), ["pm = static", "pm.max_children = 8"]);
    }

    #[test]
    fn values_are_quoted_when_the_ini_reader_would_change_them() {
        assert_eq!(quote("256M"), "256M");
        assert_eq!(quote("/srv/a b.log"), "/srv/a b.log");
        assert_eq!(quote("a;b"), "\"a;b\"");
        assert_eq!(quote(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(quote(""), "\"\"");
        // An expression stays one, as in php.ini and php-fpm's own pools.
        assert_eq!(quote("E_ALL & ~E_NOTICE"), "E_ALL & ~E_NOTICE");
        assert_eq!(quote(" padded"), "\" padded\"");
    }

    #[test]
    fn a_cgi_group_sets_its_children_and_their_recycling() {
        let mut cfg = pool("pm.max_requests = 100\n");
        cfg.env.clear();
        let env = cgi_env(&cfg, 4);
        assert_eq!(
            env,
            [
                ("PHP_FCGI_CHILDREN".into(), "4".into()),
                ("PHP_FCGI_MAX_REQUESTS".into(), "100".into())
            ]
        );
        cfg.env.push(("PHP_FCGI_MAX_REQUESTS".into(), "0".into()));
        assert_eq!(cgi_env(&cfg, 4).len(), 1);
    }

    #[test]
    fn a_config_in_memory_reads_back() {
        let fd = memfd("herd-test", "hello").unwrap();
        let text = std::fs::read_to_string(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .unwrap();
        assert_eq!(text, "hello");
    }
}
