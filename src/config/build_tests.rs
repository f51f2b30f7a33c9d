//! Unit tests for stage two: typed values, defaults, and every error kind
//! with its `file:line:` prefix.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::config::{PmMode, ScriptLookup};

const ORIGIN: &str = "/etc/herd/herd.conf";

/// Tests run as root here: pools name an unprivileged user.
const POOL: &str = "[www]\nlisten = 127.0.0.1:9000\npm = static\npm.max_children = 4\ncommand = herd\nuser = nobody\n";

/// Stage one and two, as `parse_str` runs them.
fn build_str(text: &str) -> Result<Config, ConfigErrors> {
    let doc = ini::read_str(text, Path::new(ORIGIN)).map_err(ConfigErrors)?;
    build(doc, Path::new(ORIGIN), &LoadOptions::default())
}

fn parse(text: &str) -> Config {
    build_str(text).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(text: &str) -> Vec<String> {
    let errors = build_str(text).expect_err("should fail");
    errors.0.iter().map(|e| e.to_string()).collect()
}

fn one_error(text: &str) -> String {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn a_php_fpm_style_file() {
    let text = r#"
[global]
pid = run/herd.pid
error_log = /var/log/herd.log
log_level = warning
process_control_timeout = 1m30s
emergency_restart_threshold = 10
emergency_restart_interval = 1m
daemonize = no

[www]
user = nobody
group = nogroup
listen = /run/php/$pool.sock
listen.owner = nobody
listen.group = nogroup
listen.mode = 0666
listen.allowed_clients = 127.0.0.1, ::1
command = herd
args = example-app --name "the $pool pool"
pm = dynamic
pm.max_children = 10
pm.min_spare_servers = 2
pm.max_spare_servers = 6
pm.max_requests = 500
pm.status_path = /status
ping.path = /ping
access.log = log/$pool.access.log
slowlog = log/$pool.slow.log
request_slowlog_timeout = 5s
request_terminate_timeout = 60
rlimit_core = unlimited
clear_env = no
env[HOSTNAME] = $HOSTNAME_FOR_HERD_TEST
env[TMP] = /tmp
php_admin_value[error_log] = /var/log/fpm-$pool.log
php_flag[display_errors] = off
php_admin_flag[log_errors] = On
php_value[memory_limit] = 256M
worker.max_memory = 256M
worker.stop_signal = SIGQUIT
worker.fatal_exit_codes = 78, 3
warmup.request[] = /ping.php
warmup.request[] = POST /warm
rollout.surge = 50%

[api]
user = nobody
listen = 9001
pm = ondemand
pm.max_children = 3
command = /bin/sh
"#;
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("HOSTNAME_FOR_HERD_TEST", "web1") };
    let cfg = parse(text);
    assert_eq!(cfg.file.as_deref(), Some(Path::new(ORIGIN)));
    let g = &cfg.global;
    assert_eq!(g.pid.as_deref(), Some(Path::new("/etc/herd/run/herd.pid")));
    assert_eq!(g.log_level, LogLevel::Warning);
    assert_eq!(g.process_control_timeout, Duration::from_secs(90));
    assert_eq!(g.emergency_restart_interval, Duration::from_secs(60));

    let www = cfg.pool("www").unwrap();
    assert_eq!(www.defined_at.to_string(), "/etc/herd/herd.conf:11");
    assert_eq!(www.listen, ListenAddr::Unix("/run/php/www.sock".into()));
    assert_eq!(www.listen_mode, 0o666);
    assert_eq!(www.listen_allowed_clients.as_ref().unwrap().len(), 2);
    assert_eq!(www.command, std::env::current_exe().unwrap());
    assert_eq!(www.args, ["example-app", "--name", "the www pool"]);
    assert_eq!(
        (
            www.pm,
            www.max_children,
            www.min_spare_servers,
            www.max_spare_servers
        ),
        (PmMode::Dynamic, 10, 2, 6)
    );
    assert_eq!(www.start_servers, 4);
    assert_eq!(
        www.access_log.as_deref(),
        Some(Path::new("/etc/herd/log/www.access.log"))
    );
    assert_eq!(www.request_terminate_timeout, Duration::from_secs(60));
    assert_eq!(www.rlimit_core, Some(u64::MAX));
    assert!(!www.clear_env);
    let env = [("HOSTNAME", "web1"), ("TMP", "/tmp")].map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(www.env, env);
    let defines = [
        ("error_log", "/var/log/fpm-www.log"),
        ("display_errors", "0"),
        ("log_errors", "1"),
        ("memory_limit", "256M"),
        // Pinned by herd for security.limit_extensions.
        ("cgi.fix_pathinfo", "1"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(pairs(&www.php_defines), defines);
    let admin: Vec<&str> = www
        .php_defines
        .iter()
        .filter(|d| d.admin)
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(admin, ["error_log", "log_errors", "cgi.fix_pathinfo"]);
    assert_eq!(www.worker_max_memory, Some(256 << 20));
    assert_eq!(www.worker_stop_signal, libc::SIGQUIT);
    assert_eq!(www.worker_fatal_exit_codes, [78, 3]);
    assert_eq!(www.warmup_requests.len(), 2);
    assert_eq!(www.warmup_requests[1].method, "POST");
    assert_eq!(www.rollout_surge, 5);

    let api = cfg.pool("api").unwrap();
    assert_eq!(
        api.listen,
        ListenAddr::Tcp("127.0.0.1:9001".parse::<SocketAddr>().unwrap())
    );
    assert_eq!((api.pm, api.start_servers), (PmMode::Ondemand, 0));
    assert_eq!(api.command, PathBuf::from("/bin/sh"));
}

#[test]
fn defaults() {
    let cfg = parse(POOL);
    let (g, p) = (&cfg.global, &cfg.pools[0]);
    assert_eq!(
        (g.pid.as_ref(), g.log_level, g.process_control_timeout),
        (None, LogLevel::Notice, Duration::from_secs(10))
    );
    assert_eq!(
        (p.listen_backlog, p.listen_mode, p.listen_max_connections),
        (511, 0o660, 8192)
    );
    assert!(p.clear_env && p.catch_workers_output);
    assert_eq!(
        (p.start_servers, p.max_spawn_rate, p.max_queue),
        (4, 32, 1024)
    );
    assert_eq!(p.access_format, r#"%R - %u %t "%m %r" %s"#);
    assert_eq!(
        (p.ping_response.as_str(), p.request_max_params_size),
        ("pong", 128 << 10)
    );
    assert_eq!(
        (
            p.worker_stop_signal,
            p.rollout_surge,
            p.rollout_max_failures
        ),
        (libc::SIGTERM, 1, 3)
    );
    assert_eq!(p.rollout_timeout, Duration::from_secs(300));
    assert!(cfg.warnings.is_empty());
}

#[test]
fn load_follows_includes_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("pool.d")).unwrap();
    fs::write(dir.path().join("pool.d/www.conf"), POOL).unwrap();
    let main = dir.path().join("herd.conf");
    fs::write(
        &main,
        "[global]\npid = herd.pid\ninclude = pool.d/*.conf\ninclude = pool.d/*.extra\n",
    )
    .unwrap();
    let cfg = load(&main, &LoadOptions::default()).unwrap();
    assert_eq!(
        cfg.pools[0].defined_at,
        Location {
            file: dir.path().join("pool.d/www.conf"),
            line: 1
        }
    );
    assert_eq!(cfg.global.pid, Some(dir.path().join("herd.pid")));
    assert_eq!(
        cfg.warnings,
        [format!(
            "{}:4: include 'pool.d/*.extra' matched no files",
            main.display()
        )]
    );
}

#[test]
fn missing_file_is_an_error() {
    let err = load(Path::new("/nonexistent/herd.conf"), &LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to read /nonexistent/herd.conf: "),
        "{err}"
    );
}

#[test]
fn env_copies_and_rejects() {
    // php-fpm sets it empty; herd does too, and warns.
    let cfg = parse(&format!("{POOL}env[A] = $HERD_TEST_SURELY_UNSET\n"));
    assert_eq!(cfg.pools[0].env, [("A".to_string(), String::new())]);
    assert_eq!(
        cfg.warnings,
        [
            "/etc/herd/herd.conf:7: 'HERD_TEST_SURELY_UNSET' is not set in herd's environment: the workers get A empty, as php-fpm does"
        ]
    );
    let e = one_error(&format!("{POOL}env[A] =\n"));
    assert!(
        e.starts_with("/etc/herd/herd.conf:7: invalid value '' for 'env[A]': expected a value"),
        "{e}"
    );
    let cfg = parse(&format!("{POOL}env[POOL] = $pool\nenv[X] = a$b\n"));
    assert_eq!(cfg.pools[0].env[0].1, "www");
    assert_eq!(cfg.pools[0].env[1].1, "a$b");
}

#[test]
fn bad_values_name_the_line_and_the_expectation() {
    let text = POOL.replace("pm.max_children = 4", "pm.max_children = abc");
    assert_eq!(
        one_error(&text),
        "/etc/herd/herd.conf:4: invalid value 'abc' for 'pm.max_children': expected a whole number"
    );
    let e = errors(&format!(
        "{POOL}listen.mode = 999\nrequest.read_timeout = 5x\nuser.x = 1\n"
    ));
    assert_eq!(
        e[0],
        "/etc/herd/herd.conf:7: invalid value '999' for 'listen.mode': expected an octal mode like 0660"
    );
    assert_eq!(
        e[1],
        "/etc/herd/herd.conf:8: invalid value '5x' for 'request.read_timeout': expected a duration like 30s, 5m or 1m30s"
    );
    assert_eq!(
        e[2],
        "/etc/herd/herd.conf:9: unknown directive 'user.x' in pool 'www'"
    );
    let e = one_error(&format!("{POOL}args = -c 'open\n"));
    assert_eq!(e, "/etc/herd/herd.conf:7: expected a closing quote");
    let e = one_error(&format!("{POOL}args = -c x\\\n"));
    assert_eq!(
        e,
        "/etc/herd/herd.conf:7: invalid value '-c x\\' for 'args': expected a character after the final backslash"
    );
    let e = one_error(&POOL.replace("user = nobody", "user = herd-no-such-user"));
    assert_eq!(
        e,
        "/etc/herd/herd.conf:6: invalid value 'herd-no-such-user' for 'user': expected a user that exists on this system"
    );
}

#[test]
fn unknown_and_misplaced_directives() {
    let e = errors(&format!(
        "[global]\npm.bogus = 1\npm = static\n{POOL}pid = x\nwarmup.request = /\nenv[] = x\npm[x] = 1\n"
    ));
    assert_eq!(
        e,
        [
            "/etc/herd/herd.conf:2: unknown directive 'pm.bogus' in [global]",
            "/etc/herd/herd.conf:3: 'pm' is a pool directive; it belongs in a pool section, not in [global]",
            "/etc/herd/herd.conf:10: 'pid' belongs in [global], not in pool 'www'",
            "/etc/herd/herd.conf:11: 'warmup.request' needs brackets: write 'warmup.request[]'",
            "/etc/herd/herd.conf:12: 'env[]' needs a name in the brackets: write 'env[NAME]'",
            "/etc/herd/herd.conf:13: 'pm' does not take brackets",
        ]
    );
}

#[test]
fn reopened_sections_merge_and_later_values_win() {
    // php-fpm's rules, which override files such as Docker's
    // `zz-docker.conf` rely on: `[GLOBAL]` is `[global]`, a pool reopened
    // under any case goes on, and the last value of a key stands.
    let cfg = parse(&format!(
        "[GLOBAL]\nlog_level = debug\n{POOL}env[A] = 1\nenv[A] = 2\n\
         warmup.request[] = /a\nwarmup.request[] = /b\n\
         [global]\nlog_level = error\n[WWW]\nlisten = 127.0.0.1:9001\n"
    ));
    assert_eq!(cfg.global.log_level, LogLevel::Error);
    assert_eq!(cfg.pools.len(), 1);
    let www = &cfg.pools[0];
    assert_eq!(www.name, "www");
    assert_eq!(www.listen.to_string(), "127.0.0.1:9001");
    assert_eq!(www.env, [("A".to_string(), "2".to_string())]);
    assert_eq!(www.warmup_requests.len(), 2);
    assert_eq!(
        cfg.notes,
        [
            "/etc/herd/herd.conf:14: 'log_level' in [global] overrides the value set at /etc/herd/herd.conf:2",
            "/etc/herd/herd.conf:10: 'env[A]' in pool 'www' overrides the value set at /etc/herd/herd.conf:9",
            "/etc/herd/herd.conf:16: 'listen' in pool 'www' overrides the value set at /etc/herd/herd.conf:4",
        ]
    );
}

#[test]
fn php_fpm_directives_without_effect_are_noted_not_refused() {
    let cfg = parse(&format!(
        "[global]\nsyslog.ident = php\nevents.mechanism = epoll\n{}apparmor_hat = x\n",
        POOL.replace("127.0.0.1:9000", "9000")
    ));
    assert_eq!(
        cfg.notes,
        [
            "/etc/herd/herd.conf:2: 'syslog.ident' has no effect under herd: herd does not write to syslog: leave error_log unset and the service manager (journald) collects stderr",
            "/etc/herd/herd.conf:3: 'events.mechanism' has no effect under herd: herd's event loop always uses epoll",
            "/etc/herd/herd.conf:10: 'apparmor_hat' has no effect under herd: herd does not change AppArmor hats; confine the workers by their own program's AppArmor profile",
            "/etc/herd/herd.conf:5: pool 'www': 'listen = 9000' binds 127.0.0.1:9000 only (php-fpm binds every address); write '*:9000' or '[::]:9000' to take connections from other hosts",
        ]
    );
}

#[test]
fn shared_listen_address_is_an_error() {
    let e = one_error(&format!("{POOL}{}", POOL.replace("[www]", "[api]")));
    assert_eq!(
        e,
        "/etc/herd/herd.conf:8: listen address '127.0.0.1:9000' is already used by pool 'www' (at /etc/herd/herd.conf:2)"
    );
}

#[test]
fn missing_required_directives() {
    let mut e = errors("[global]\n[www]\nuser = nobody\n");
    // What `command` is, with the php-fpm found on this machine if any.
    let command = e.remove(1);
    assert!(
        command.starts_with("/etc/herd/herd.conf:2: pool 'www': missing required directive 'command' (the worker program")
            && command.ends_with("see \"Coming from php-fpm\" in the README)"),
        "{command}"
    );
    assert_eq!(
        e,
        [
            "/etc/herd/herd.conf:2: pool 'www': missing required directive 'listen'",
            "/etc/herd/herd.conf:2: pool 'www': missing required directive 'pm'",
            "/etc/herd/herd.conf:2: pool 'www': missing required directive 'pm.max_children'",
        ]
    );
    assert_eq!(
        errors("[global]\n"),
        ["/etc/herd/herd.conf: no pools defined; add a section such as [www]"]
    );
}

#[test]
fn dynamic_cross_checks() {
    let dynamic = |extra: &str| {
        POOL.replace("pm = static", "pm = dynamic")
            .replace("pm.max_children = 4", "pm.max_children = 8")
            + extra
    };
    let e = errors(&dynamic(""));
    assert_eq!(
        e[0],
        "/etc/herd/herd.conf:1: pool 'www': missing required directive 'pm.min_spare_servers' (pm = dynamic needs it)"
    );
    assert_eq!(e.len(), 2);
    let cases = [
        (
            "pm.min_spare_servers = 2\npm.max_spare_servers = 9\n",
            8,
            "pm.min_spare_servers(2) and pm.max_spare_servers(9) cannot be greater than pm.max_children(8)",
        ),
        (
            "pm.min_spare_servers = 4\npm.max_spare_servers = 3\n",
            8,
            "pm.max_spare_servers(3) must not be less than pm.min_spare_servers(4)",
        ),
        (
            "pm.min_spare_servers = 2\npm.max_spare_servers = 0\n",
            8,
            "pm.max_spare_servers(0) must be a positive value",
        ),
        (
            "pm.min_spare_servers = 0\npm.max_spare_servers = 6\n",
            7,
            "pm.min_spare_servers(0) must be a positive value",
        ),
    ];
    for (extra, line, want) in cases {
        assert_eq!(
            one_error(&dynamic(extra)),
            format!("/etc/herd/herd.conf:{line}: pool 'www': {want}")
        );
    }
    let e = one_error(&dynamic(
        "pm.min_spare_servers = 2\npm.max_spare_servers = 6\npm.start_servers = 7\n",
    ));
    assert_eq!(
        e,
        "/etc/herd/herd.conf:9: pool 'www': pm.start_servers(7) must not be less than pm.min_spare_servers(2) and not greater than pm.max_spare_servers(6)"
    );
    let cfg = parse(&dynamic(
        "pm.min_spare_servers = 1\npm.max_spare_servers = 4\n",
    ));
    assert_eq!(cfg.pools[0].start_servers, 2);
}

#[test]
fn other_cross_checks() {
    let e = one_error(&POOL.replace("pm.max_children = 4", "pm.max_children = 0"));
    assert_eq!(
        e,
        "/etc/herd/herd.conf:4: pool 'www': pm.max_children must be a positive value"
    );
    let e = one_error(&format!("{POOL}request_slowlog_timeout = 5s\n"));
    assert_eq!(
        e,
        "/etc/herd/herd.conf:7: pool 'www': 'slowlog' must be set to use 'request_slowlog_timeout'"
    );
    let e = one_error(&format!("{POOL}pm.process_idle_timeout = 500ms\n"));
    assert_eq!(
        e,
        "/etc/herd/herd.conf:7: pool 'www': pm.process_idle_timeout(500ms) must be at least 1s"
    );
    let e = one_error(&format!("[global]\ndaemonize = yes\n{POOL}"));
    assert_eq!(
        e,
        "/etc/herd/herd.conf:2: herd runs in the foreground; run it under systemd or another supervisor (daemonize = yes is not supported)"
    );
    let e = one_error(&POOL.replace("[www]", "[w w]"));
    assert_eq!(
        e,
        "/etc/herd/herd.conf:1: invalid pool name 'w w': use only letters, digits, '_', '.' and '-'"
    );
}

#[test]
fn root_workers_need_consent() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let text = POOL.replace("user = nobody\n", "");
    let e = one_error(&text);
    assert_eq!(
        e,
        "/etc/herd/herd.conf:1: pool 'www': workers would run as root; set 'user' (or start herd with --allow-root)"
    );
    let e = one_error(&POOL.replace("user = nobody", "user = root"));
    assert!(
        e.starts_with("/etc/herd/herd.conf:6: pool 'www': workers would run as root"),
        "{e}"
    );
    let opts = LoadOptions {
        allow_root: true,
        ..LoadOptions::default()
    };
    assert!(parse_str(&text, Path::new(ORIGIN), &opts).is_ok());
}

#[test]
fn command_resolution() {
    let cfg = parse(&POOL.replace("command = herd", "command = sh"));
    assert!(cfg.pools[0].command.is_absolute());
    let e = one_error(&POOL.replace("command = herd", "command = ./missing"));
    assert!(e.starts_with("/etc/herd/herd.conf:5: invalid value './missing' for 'command': expected an executable file (/etc/herd/missing: "), "{e}");
}

#[test]
fn every_error_is_collected() {
    let text = "[www]\nlisten = 9000\npm = sometimes\npm.max_children = -1\ncommand = herd\nuser = nobody\nbogus = 1\n[api]\nuser = nobody\n";
    assert_eq!(errors(text).len(), 7);
}

/// `php_*` settings as (name, value).
fn pairs(defines: &[crate::config::PhpDefine]) -> Vec<(String, String)> {
    defines
        .iter()
        .map(|d| (d.name.clone(), d.value.clone()))
        .collect()
}

/// A pool section running `command`, with `extra` lines.
fn pool_with(command: &str, extra: &str) -> String {
    format!(
        "[www]\nlisten = 127.0.0.1:9000\npm = static\npm.max_children = 1\nuser = nobody\ncommand = {command}\n{extra}"
    )
}

/// A php-cgi on this machine's PATH, or a stand-in named like one.
fn php_cgi_command() -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let php = dir.path().join("php-cgi8.2");
    fs::write(&php, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&php, fs::Permissions::from_mode(0o755)).unwrap();
    let command = php.display().to_string();
    (dir, command)
}

/// A stand-in named like php-fpm, which makes the pool a php-fpm engine's.
fn php_fpm_command(dir: &tempfile::TempDir) -> String {
    use std::os::unix::fs::PermissionsExt;
    let php = dir.path().join("php-fpm8.2");
    fs::write(&php, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&php, fs::Permissions::from_mode(0o755)).unwrap();
    php.display().to_string()
}

#[test]
fn catch_workers_output_defaults_to_php_fpms_no_for_its_engine_only() {
    let (dir, cgi) = php_cgi_command();
    let fpm = php_fpm_command(&dir);
    assert!(parse(&pool_with(&cgi, "")).pools[0].catch_workers_output);
    assert!(parse(&pool_with("herd", "")).pools[0].catch_workers_output);
    let engine = &parse(&pool_with(&fpm, "")).pools[0];
    assert!(engine.php_group.is_some());
    assert!(!engine.catch_workers_output);
    let asked = "catch_workers_output = yes\n";
    assert!(parse(&pool_with(&fpm, asked)).pools[0].catch_workers_output);
}

#[test]
fn php_pools_limit_script_extensions_by_default() {
    let (_dir, php) = php_cgi_command();
    let cfg = parse(&pool_with(&php, ""));
    let www = &cfg.pools[0];
    assert!(www.php);
    let guard = www.script_guard.as_ref().expect("on by default");
    assert_eq!(guard.extensions, [".php", ".phar"]);
    assert_eq!(guard.lookup, ScriptLookup::FixPathinfo);
    // php-cgi is told the setting herd's lookup follows.
    assert_eq!(
        pairs(&www.php_defines),
        [("cgi.fix_pathinfo".to_string(), "1".to_string())]
    );
}

#[test]
fn other_programs_have_no_script_check_unless_asked() {
    let cfg = parse(&pool_with("herd", ""));
    assert!(!cfg.pools[0].php);
    assert_eq!(cfg.pools[0].script_guard, None);
    assert!(cfg.pools[0].php_defines.is_empty());
    let cfg = parse(&pool_with("herd", "security.limit_extensions = .pl .cgi\n"));
    let guard = cfg.pools[0].script_guard.as_ref().expect("set");
    assert_eq!(guard.extensions, [".pl", ".cgi"]);
    assert_eq!(guard.lookup, ScriptLookup::AsSent);
}

#[test]
fn fix_pathinfo_set_by_the_pool_decides_the_lookup() {
    let (_dir, php) = php_cgi_command();
    let off = "php_admin_value[cgi.fix_pathinfo] = 0\n";
    let www = &parse(&pool_with(&php, off)).pools[0];
    let guard = www.script_guard.as_ref().unwrap();
    assert_eq!(
        guard.lookup,
        ScriptLookup::Translated {
            discard_path: false
        }
    );
    let pinned: Vec<_> = www
        .php_defines
        .iter()
        .map(|d| format!("{}={}", d.name, d.value))
        .collect();
    assert_eq!(pinned, ["cgi.fix_pathinfo=0", "cgi.discard_path=0"]);

    let both = "php_admin_flag[cgi.fix_pathinfo] = off\nphp_value[cgi.discard_path] = On\n";
    let www = &parse(&pool_with(&php, both)).pools[0];
    let guard = www.script_guard.as_ref().unwrap();
    assert_eq!(
        guard.lookup,
        ScriptLookup::Translated { discard_path: true }
    );
    assert_eq!(www.php_defines.len(), 2);
}

#[test]
fn an_empty_limit_in_a_php_pool_is_allowed_with_a_warning() {
    let (_dir, php) = php_cgi_command();
    let cfg = parse(&pool_with(&php, "security.limit_extensions =\n"));
    assert_eq!(cfg.pools[0].script_guard, None);
    assert!(cfg.pools[0].php_defines.is_empty());
    let warning = cfg
        .warnings
        .iter()
        .find(|w| w.contains("security.limit_extensions"));
    let warning = warning.expect("a warning");
    assert!(warning.starts_with("/etc/herd/herd.conf:7: "), "{warning}");
}
