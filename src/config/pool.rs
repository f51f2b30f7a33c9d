//! One pool section into a [`PoolConfig`]: defaults, values, and php-fpm's
//! cross-checks between `pm` settings, with every error recorded in the
//! build context rather than returned at the first.

use std::path::PathBuf;
use std::time::Duration;

use super::build::{Context, Fields, invalid, path_in};
use super::ini::Section;
use super::value::{self, Surge};
use super::{Location, PhpEngine, PmMode, PoolConfig, SpawnMode, WorkerProbe, php, resolve};

/// herd's default access line is php-fpm's.
const ACCESS_FORMAT: &str = r#"%R - %u %t "%m %r" %s"#;

/// `None` when a required directive is missing or unusable; the reasons
/// are in `cx`.
pub(super) fn build(section: &Section, f: &Fields, cx: &mut Context) -> Option<PoolConfig> {
    let name = section.name.clone();
    let at = &section.location;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        cx.error(
            at,
            format!("invalid pool name '{name}': use only letters, digits, '_', '.' and '-'"),
        );
    }
    let base = prefix(f, cx);
    let path = path_in(&base);
    let dur = value::duration;
    let secs = Duration::from_secs;
    // php-fpm's `$prefix` at the start of chdir and chroot.
    let prefixed = |v: &str| match v.strip_prefix("$prefix") {
        Some(rest) => format!("{}{rest}", base.display()),
        None => v.to_string(),
    };

    let listen = f.required(cx, at, "listen", |v| value::listen(v, &base));
    bare_port_note(f, cx);
    let user = user(f, cx, at);
    let chroot = f.get(cx, "chroot", |v| absolute(&prefixed(v))).flatten();
    let command = match (&cx.opts.embedded, f.location("command")) {
        (Some(program), None) => Some(program.clone()),
        (None, None) => {
            // A php-fpm pool file: say what the one addition is.
            let engine = php_fpm_binary()
                .map(|p| format!("; for PHP, the engine: command = {}", p.display()))
                .unwrap_or_default();
            cx.error(
                at,
                format!(
                    "{}: missing required directive 'command' (the worker program{engine}; see \"Coming from php-fpm\" in the README)",
                    f.what
                ),
            );
            None
        }
        _ => f.required(cx, at, "command", |v| {
            resolve::command(v, &base, chroot.as_deref())
        }),
    };
    let default_spawn = if cx.opts.embedded.is_some() {
        SpawnMode::Preload
    } else {
        SpawnMode::Exec
    };
    let pm = pm(f, cx, at);
    let max_children = pm.as_ref().map_or(1, |pm| pm.max_children);

    let slowlog_timeout = f.or(cx, "request_slowlog_timeout", Duration::ZERO, dur);
    let slowlog = f.get(cx, "slowlog", &path).flatten();
    if !slowlog_timeout.is_zero() && slowlog.is_none() {
        let at = f
            .location("request_slowlog_timeout")
            .expect("non-zero means set");
        cx.error(
            at,
            format!(
                "{}: 'slowlog' must be set to use 'request_slowlog_timeout'",
                f.what
            ),
        );
    }
    let idle_timeout = f.or(cx, "pm.process_idle_timeout", secs(10), dur);
    if idle_timeout < secs(1) {
        let at = f
            .location("pm.process_idle_timeout")
            .expect("below the default means set");
        cx.error(
            at,
            format!(
                "{}: pm.process_idle_timeout({idle_timeout:?}) must be at least 1s",
                f.what
            ),
        );
    }
    let spawn_rate = f.or(cx, "pm.max_spawn_rate", 32, value::whole);
    if spawn_rate == 0 {
        let at = f.location("pm.max_spawn_rate").expect("zero means set");
        cx.error(
            at,
            format!("{}: pm.max_spawn_rate must be a positive value", f.what),
        );
    }
    let args = f.get(cx, "args", value::words).unwrap_or_default();
    let php = php::settings(f, cx, command.as_deref(), chroot.as_deref(), max_children);
    let mut group = php.group.clone();
    let workers = group
        .as_ref()
        .map_or(max_children, |g| max_children.div_ceil(g.size));
    let slots_set = f.get(cx, "worker.slots", value::slots);
    let worker_probe = f.or(cx, "worker.probe", WorkerProbe::Values, value::probe);
    if worker_probe == WorkerProbe::Request && f.array(&["warmup.request[]"]).next().is_none() {
        let at = f.location("worker.probe").expect("set to request");
        let msg = format!(
            "{}: worker.probe = request needs a warmup.request[] to send",
            f.what
        );
        cx.error(at, msg);
    }
    let worker_slots = group.as_ref().map(|g| g.size).or(slots_set);
    let fpm_engine = group.as_ref().is_some_and(|g| g.engine == PhpEngine::Fpm);
    let pm_mode = match (&mut group, pm.as_ref().map(|pm| pm.mode)) {
        // php-fpm starts and stops its own children within each group;
        // herd keeps the groups.
        (Some(g), Some(mode)) if g.engine == PhpEngine::Fpm => {
            g.pm = mode;
            Some(PmMode::Static)
        }
        (Some(g), Some(mode)) if mode != PmMode::Static => {
            let at = f.location("pm").expect("required");
            cx.warnings.push(format!(
                "{at}: {}: pm = {} runs as static: the PHP processes run in groups of {} (php.group_size) that the engine keeps whole",
                f.what,
                mode.as_str(),
                g.size
            ));
            Some(PmMode::Static)
        }
        (_, mode) => mode,
    };

    // Every directive is read before a missing required one returns `None`,
    // so its errors are reported too: the `?`s come last.
    Some(PoolConfig {
        listen_backlog: f.or(cx, "listen.backlog", 511, value::backlog),
        listen_owner: f
            .get(cx, "listen.owner", resolve::user)
            .map(|(name, _)| name),
        listen_group: f.get(cx, "listen.group", resolve::group),
        listen_mode: f.or(cx, "listen.mode", 0o660, value::mode),
        listen_allowed_clients: f
            .get(cx, "listen.allowed_clients", value::ip_list)
            .flatten(),
        listen_max_connections: f.or(cx, "listen.max_connections", 8192, value::whole),
        listen_acl_users: f.or(cx, "listen.acl_users", Vec::new(), |v| {
            value::items(v).map(resolve::uid).collect()
        }),
        listen_acl_groups: f.or(cx, "listen.acl_groups", Vec::new(), |v| {
            value::items(v).map(resolve::gid).collect()
        }),
        status_listen: f.get(cx, "pm.status_listen", |v| value::listen(v, &base)),
        access_suppress_paths: f
            .array(&["access.suppress_path[]"])
            .filter_map(|(entry, v)| {
                value::uri_path(v)
                    .map_err(|e| invalid(cx, entry, v, &e))
                    .ok()
            })
            .collect(),
        decorate_workers_output: f.or(cx, "decorate_workers_output", true, value::boolean),
        engine_settings: engine_settings(f, cx, fpm_engine),
        user,
        group: f.get(cx, "group", resolve::group),
        args,
        chdir: f
            .get(cx, "chdir", |v| {
                Ok((!v.is_empty()).then(|| PathBuf::from(prefixed(v))))
            })
            .flatten(),
        chroot,
        clear_env: f.or(cx, "clear_env", true, value::boolean),
        env: env(f, cx),
        rlimit_files: f.get(cx, "rlimit_files", value::whole),
        rlimit_core: f.get(cx, "rlimit_core", value::rlimit),
        process_priority: f.get(cx, "process.priority", value::priority),
        php_defines: php.defines,
        php: php.is_php,
        php_group: group,
        limit_extensions: php.limit_extensions,
        script_guard: php.script_guard,
        // With the php-fpm engine, php-fpm's default: its master reports
        // the engine's own failures on herd's pipe either way, and a child
        // whose output is caught writes a flush mark to it after every
        // request, a wakeup of php-fpm's master per request.
        catch_workers_output: f.or(cx, "catch_workers_output", !fpm_engine, value::boolean),
        spawn: f.or(cx, "spawn", default_spawn, value::spawn_mode),
        max_spawn_rate: spawn_rate,
        process_idle_timeout: idle_timeout,
        max_requests: f.or(cx, "pm.max_requests", 0, value::whole),
        max_queue: f.or(cx, "pm.max_queue", 1024, value::whole),
        request_queue_timeout: f.or(cx, "request.queue_timeout", secs(30), dur),
        request_read_timeout: f.or(cx, "request.read_timeout", secs(30), dur),
        request_header_timeout: f.or(cx, "request.header_timeout", secs(60), dur),
        request_body_timeout: f.or(cx, "request.body_timeout", secs(60), dur),
        request_body_min_rate: f.or(cx, "request.body_min_rate", 500, value::size),
        request_idle_timeout: f.or(cx, "request.idle_timeout", secs(120), dur),
        request_max_params_size: f.or(cx, "request.max_params_size", 128 << 10, |v| {
            value::size(v)
                .and_then(|n| usize::try_from(n).map_err(|_| "expected a smaller size".into()))
        }),
        request_terminate_timeout: f.or(cx, "request_terminate_timeout", Duration::ZERO, dur),
        request_slowlog_timeout: slowlog_timeout,
        response_hold: f.or(cx, "response.hold", Duration::from_millis(100), dur),
        slowlog,
        access_log: f.get(cx, "access.log", &path).flatten(),
        access_format: f.or(cx, "access.format", ACCESS_FORMAT.into(), |v| {
            Ok(v.to_string())
        }),
        status_path: f.get(cx, "pm.status_path", value::uri_path),
        ping_path: f.get(cx, "ping.path", value::uri_path),
        ping_response: f.or(cx, "ping.response", "pong".into(), |v| Ok(v.to_string())),
        worker_start_timeout: f.or(cx, "worker.start_timeout", secs(30), dur),
        worker_min_lifetime: f.or(cx, "worker.min_lifetime", secs(5), dur),
        worker_stop_signal: f.or(cx, "worker.stop_signal", libc::SIGTERM, value::signal),
        worker_kill_timeout: f.or(cx, "worker.kill_timeout", secs(5), dur),
        worker_max_memory: f
            .get(cx, "worker.max_memory", value::size)
            .filter(|n| *n > 0),
        worker_fatal_exit_codes: f.or(cx, "worker.fatal_exit_codes", Vec::new(), value::exit_codes),
        worker_slots,
        worker_probe,
        warmup_requests: f
            .array(&["warmup.request[]"])
            .filter_map(|(entry, v)| value::warmup(v).map_err(|e| invalid(cx, entry, v, &e)).ok())
            .collect(),
        warmup_timeout: f.or(cx, "warmup.timeout", secs(30), dur),
        rollout_surge: f
            .or(cx, "rollout.surge", Surge::Percent(25), value::surge)
            .resolve(workers),
        rollout_max_failures: f.or(cx, "rollout.max_failures", 3, value::whole),
        rollout_timeout: f.or(cx, "rollout.timeout", secs(300), dur),

        name,
        defined_at: at.clone(),
        listen: listen?,
        command: command?,
        pm: pm_mode?,
        max_children,
        start_servers: pm.as_ref()?.start_servers,
        min_spare_servers: pm.as_ref()?.min_spare_servers,
        max_spare_servers: pm?.max_spare_servers,
    })
}

/// The newest php-fpm installed where distributions put it, if any.
fn php_fpm_binary() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = ["/usr/sbin", "/usr/local/sbin"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("php-fpm") || (n.starts_with("php") && n.ends_with("-fpm"))
            })
        })
        .collect();
    found.sort();
    found.pop()
}

/// The directory the pool's relative paths are read against: `prefix`
/// (relative to the config file's directory) when set, else that directory.
/// php-fpm refuses a prefix that is not a directory; so does herd.
fn prefix(f: &Fields, cx: &mut Context) -> PathBuf {
    let base = cx.base.clone();
    let dir = f.get(cx, "prefix", |v| {
        let dir = value::join(&base, v);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(format!(
                "expected an existing directory ({} is not one)",
                dir.display()
            ))
        }
    });
    dir.unwrap_or(base)
}

/// php-fpm binds a bare port on every address; herd binds 127.0.0.1 only,
/// and `herd check` says so rather than leave it to be found out.
fn bare_port_note(f: &Fields, cx: &mut Context) {
    let Some(at) = f.location("listen") else {
        return;
    };
    let Some(port) = f
        .raw("listen")
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
    else {
        return;
    };
    cx.notes.push(format!(
        "{at}: {}: 'listen = {port}' binds 127.0.0.1:{port} only (php-fpm binds every address); write '*:{port}' or '[::]:{port}' to take connections from other hosts",
        f.what
    ));
}

/// php-fpm directives herd passes to php-fpm when it is the engine (and
/// that mean nothing for a worker herd starts itself), checked as php-fpm
/// checks them.
fn engine_settings(f: &Fields, cx: &mut Context, fpm: bool) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for name in [
        "process.dumpable",
        "request_terminate_timeout_track_finished",
    ] {
        if let Some(yes) = f.get(cx, name, value::boolean) {
            out.push((name, if yes { "yes" } else { "no" }.to_string()));
        }
    }
    if let Some(depth) = f.get(cx, "request_slowlog_trace_depth", value::whole::<u32>) {
        out.push(("request_slowlog_trace_depth", depth.to_string()));
    }
    if !fpm {
        for (name, _) in &out {
            let at = f.location(name).expect("read from the file");
            cx.notes.push(format!(
                "{at}: '{name}' has effect only with php-fpm as the engine (`command` a php-fpm); see the reference"
            ));
        }
    }
    out
}

/// `chroot` must be absolute (php-fpm); empty means unset.
fn absolute(v: &str) -> Result<Option<PathBuf>, String> {
    match v {
        "" => Ok(None),
        v if v.starts_with('/') => Ok(Some(PathBuf::from(v))),
        _ => Err("expected an absolute path".into()),
    }
}

/// `user`, with php-fpm's rule that a root master needs it (`-R` aside):
/// a pool left without it would run the application as root.
fn user(f: &Fields, cx: &mut Context, at: &Location) -> Option<String> {
    let user = f.get(cx, "user", resolve::user);
    if cx.is_root && !cx.opts.allow_root {
        let why = match (&user, f.location("user")) {
            (None, None) => Some((at, "set 'user'")),
            (Some((_, true)), Some(line)) => Some((line, "set 'user' to an unprivileged user")),
            _ => None,
        };
        if let Some((at, fix)) = why {
            let msg = format!(
                "{}: workers would run as root; {fix} (or start herd with --allow-root)",
                f.what
            );
            cx.error(at, msg);
        }
    }
    if !cx.is_root
        && let Some(line) = f.location("user")
    {
        // php-fpm warns too: only root can switch users.
        cx.warnings.push(format!(
            "{line}: {}: 'user' is ignored because herd does not run as root",
            f.what
        ));
    }
    user.map(|(name, _)| name)
}

/// `env[NAME]`; a value that is exactly `$VAR` copies VAR from herd's own
/// environment (empty when VAR is unset, with a warning), and an empty
/// value is an error, all as in php-fpm.
fn env(f: &Fields, cx: &mut Context) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (entry, v) in f.array(&["env[NAME]"]) {
        let name = entry.index.clone().expect("array entries have an index");
        let var = v
            .strip_prefix('$')
            .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        let value = match var {
            _ if v.is_empty() => {
                Err("expected a value (php-fpm does not allow an empty one)".to_string())
            }
            Some(var) => Ok(std::env::var(var).unwrap_or_else(|_| {
                cx.warnings.push(format!(
                    "{}: '{var}' is not set in herd's environment: the workers get {name} empty, as php-fpm does",
                    entry.location
                ));
                String::new()
            })),
            None => Ok(v.to_string()),
        };
        match value {
            Ok(value) => env.push((name, value)),
            Err(expected) => invalid(cx, entry, v, &expected),
        }
    }
    env
}

/// The process manager settings after php-fpm's checks.
struct Pm {
    mode: PmMode,
    max_children: u32,
    start_servers: u32,
    min_spare_servers: u32,
    max_spare_servers: u32,
}

fn pm(f: &Fields, cx: &mut Context, at: &Location) -> Option<Pm> {
    let mode = f.required(cx, at, "pm", value::pm_mode);
    let max_children = f.required(cx, at, "pm.max_children", value::whole);
    let min_spare = f.get(cx, "pm.min_spare_servers", value::whole);
    let max_spare = f.get(cx, "pm.max_spare_servers", value::whole);
    let start = f.get(cx, "pm.start_servers", value::whole);
    let (mode, max_children) = (mode?, max_children?);
    if max_children == 0 {
        let line = f.location("pm.max_children").expect("required");
        cx.error(
            line,
            format!("{}: pm.max_children must be a positive value", f.what),
        );
    }
    let mut pm = Pm {
        mode,
        max_children,
        start_servers: max_children,
        min_spare_servers: 0,
        max_spare_servers: 0,
    };
    match mode {
        PmMode::Static => {}
        PmMode::Ondemand => pm.start_servers = 0,
        PmMode::Dynamic => {
            for name in ["pm.min_spare_servers", "pm.max_spare_servers"] {
                if f.location(name).is_none() {
                    cx.error(
                        at,
                        format!(
                            "{}: missing required directive '{name}' (pm = dynamic needs it)",
                            f.what
                        ),
                    );
                }
            }
            let (min, max) = (min_spare?, max_spare?);
            (pm.min_spare_servers, pm.max_spare_servers) = (min, max);
            pm.start_servers = start.unwrap_or(min + max.saturating_sub(min) / 2);
            check_dynamic(f, cx, at, &pm);
        }
    }
    Some(pm)
}

/// php-fpm's rules for dynamic pools, with its messages, each at the line
/// of the value at fault.
fn check_dynamic(f: &Fields, cx: &mut Context, at: &Location, pm: &Pm) {
    let (min, max, start, children) = (
        pm.min_spare_servers,
        pm.max_spare_servers,
        pm.start_servers,
        pm.max_children,
    );
    let line = |name| f.location(name).unwrap_or(at);
    let what = &f.what;
    let problem = if min == 0 {
        Some((
            line("pm.min_spare_servers"),
            format!("pm.min_spare_servers({min}) must be a positive value"),
        ))
    } else if max == 0 {
        Some((
            line("pm.max_spare_servers"),
            format!("pm.max_spare_servers({max}) must be a positive value"),
        ))
    } else if min > children || max > children {
        let culprit = if max > children {
            "pm.max_spare_servers"
        } else {
            "pm.min_spare_servers"
        };
        let msg = format!(
            "pm.min_spare_servers({min}) and pm.max_spare_servers({max}) cannot be greater than pm.max_children({children})"
        );
        Some((line(culprit), msg))
    } else if max < min {
        Some((
            line("pm.max_spare_servers"),
            format!(
                "pm.max_spare_servers({max}) must not be less than pm.min_spare_servers({min})"
            ),
        ))
    } else if start < min || start > max {
        let msg = format!(
            "pm.start_servers({start}) must not be less than pm.min_spare_servers({min}) and not greater than pm.max_spare_servers({max})"
        );
        Some((line("pm.start_servers"), msg))
    } else {
        None
    };
    if let Some((at, msg)) = problem {
        cx.error(at, format!("{what}: {msg}"));
    }
}
