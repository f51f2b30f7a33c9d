//! A php-fpm user's own config runs under herd: the `php-fpm.conf` and
//! `pool.d/www.conf` that Debian's php8.2-fpm package installs, copied at
//! test time from the installed package (not a hand-written copy), with
//! only their paths moved into the test's directory and `command` added.

mod support;

use std::fs;
use std::process::Command;

use support::nginx::Nginx;
use support::{Dir, Herd};

const FPM_CONF: &str = "/etc/php/8.2/fpm/php-fpm.conf";
const WWW_CONF: &str = "/etc/php/8.2/fpm/pool.d/www.conf";

/// Debian's files in `dir`, paths moved there; `extra` is appended to the
/// pool file (herd's `command`, or nothing for php-fpm itself).
fn debian_layout(dir: &Dir, name: &str, extra: &str) -> std::path::PathBuf {
    support::installed(FPM_CONF, "php8.2-fpm");
    let root = dir.join(name);
    fs::create_dir_all(root.join("pool.d")).unwrap();
    fs::create_dir_all(dir.join("run")).unwrap();
    let d = dir.path().display().to_string();
    let main = fs::read_to_string(FPM_CONF)
        .unwrap()
        .replace(
            "/run/php/php8.2-fpm.pid",
            &format!("{d}/run/php8.2-fpm.pid"),
        )
        .replace("/var/log/php8.2-fpm.log", &format!("{d}/{name}.log"))
        .replace(
            "/etc/php/8.2/fpm/pool.d/",
            &format!("{}/pool.d/", root.display()),
        );
    let pool = fs::read_to_string(WWW_CONF).unwrap().replace(
        "/run/php/php8.2-fpm.sock",
        &format!("{d}/run/php8.2-fpm.sock"),
    );
    assert!(
        main.contains(&d) && pool.contains(&d),
        "Debian's paths moved"
    );
    fs::write(root.join("pool.d/www.conf"), format!("{pool}\n{extra}")).unwrap();
    let path = root.join("php-fpm.conf");
    fs::write(&path, main).unwrap();
    path
}

#[test]
fn debians_stock_php_fpm_config_serves_with_only_command_added() {
    let dir = Dir::new();
    dir.write("index.php", "<?php echo 'served by ', PHP_SAPI;");
    // php-fpm itself accepts the files as moved.
    let plain = debian_layout(&dir, "php-fpm", "");
    let test = Command::new(support::php_fpm::binary())
        .args(["-t", "-y"])
        .arg(&plain)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "php-fpm -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    // Pointed at php-fpm's file itself, herd names the one thing missing.
    let (code, _, err) = support::herd_cmd(&["check", plain.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("www.conf:") && err.contains("command = /usr/sbin/php-fpm8.2"),
        "{err}"
    );
    // herd reads the same files, unchanged, through a file of its own
    // with the one addition (the README's migration): php-fpm's merge
    // rules let `[www]` go on there.
    let herd_conf = format!(
        "include = {}\n[www]\ncommand = /usr/sbin/php-fpm8.2\n",
        plain.display()
    );
    let conf = dir.write("herd-check.conf", &herd_conf);
    let (code, out, err) = support::herd_cmd(&["check", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let root = dir.path().to_path_buf();
    let mut herd = Herd::start_in(dir, &herd_conf);
    // Debian's error_log, moved: herd logs there, as php-fpm would.
    herd.log = root.join("php-fpm.log");
    herd.wait_ready(1);
    // The control socket is not the pool's listener (Debian puts the pid
    // file beside it: php8.2-fpm.pid, php8.2-fpm.sock).
    let sock = root.join("run/php8.2-fpm.sock");
    let snippet = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/nginx/herd-php.conf");
    fs::copy("/etc/nginx/fastcgi_params", root.join("fastcgi_params")).unwrap();
    let nginx = Nginx::start(
        &root,
        "",
        &format!(
            "location ~ [^/]\\.php(/|$) {{ include {snippet}; fastcgi_pass unix:{}; }}",
            sock.display()
        ),
    );
    let (status, body) = nginx.get("/index.php");
    assert_eq!((status, body.as_str()), (200, "served by fpm-fcgi"));
    let ctl = root.join("run/php8.2-fpm.herd-ctl.sock");
    let (code, out, err) = herd.ctl(&ctl, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The official Docker image's layout (docker-library/php, 8.2 fpm):
/// `/usr/local/etc/php-fpm.conf` and `php-fpm.d/www.conf` are php-src's
/// templates, the ones Debian's package installs too, so they are taken
/// from the installed package with Docker's values put back (the relative
/// `include=etc/php-fpm.d/*.conf` read against php-fpm's prefix, no pid
/// file, `listen = 127.0.0.1:9000`); `docker.conf` and `zz-docker.conf` are
/// written as the image's Dockerfile writes them, `listen = 9000` moved to
/// a free port. Returns the prefix (`<dir>/usr/local`).
fn docker_layout(dir: &Dir, port: u16, extra: &str) -> std::path::PathBuf {
    support::installed(FPM_CONF, "php8.2-fpm");
    let prefix = dir.join("usr/local");
    let etc = prefix.join("etc");
    fs::create_dir_all(etc.join("php-fpm.d")).unwrap();
    let main = fs::read_to_string(FPM_CONF)
        .unwrap()
        .replace("pid = /run/php/php8.2-fpm.pid", ";pid = run/php-fpm.pid")
        .replace(
            "error_log = /var/log/php8.2-fpm.log",
            ";error_log = log/php-fpm.log",
        )
        .replace(
            "include=/etc/php/8.2/fpm/pool.d/*.conf",
            "include=etc/php-fpm.d/*.conf",
        );
    assert!(main.contains("\ninclude=etc/php-fpm.d/*.conf"), "{main}");
    fs::write(etc.join("php-fpm.conf"), main).unwrap();
    let www = fs::read_to_string(WWW_CONF).unwrap().replace(
        "listen = /run/php/php8.2-fpm.sock",
        "listen = 127.0.0.1:9000",
    );
    assert!(www.contains("\nlisten = 127.0.0.1:9000"), "{www}");
    fs::write(etc.join("php-fpm.d/www.conf"), format!("{www}\n{extra}")).unwrap();
    fs::write(
        etc.join("php-fpm.d/docker.conf"),
        "[global]\nerror_log = /proc/self/fd/2\n\n\
         ; https://github.com/docker-library/php/pull/725#issuecomment-443540114\nlog_limit = 8192\n\n\
         [www]\n; php-fpm closes STDOUT on startup, so sending logs to /proc/self/fd/1 does not work.\n\
         ; https://bugs.php.net/bug.php?id=73886\naccess.log = /proc/self/fd/2\n\n\
         clear_env = no\n\n; Ensure worker stdout and stderr are sent to the main error log.\n\
         catch_workers_output = yes\ndecorate_workers_output = no\n",
    )
    .unwrap();
    fs::write(
        etc.join("php-fpm.d/zz-docker.conf"),
        format!("[global]\ndaemonize = no\n\n[www]\nlisten = {port}\n"),
    )
    .unwrap();
    prefix
}

/// `php-fpm8.2 -t` on a file, with php-fpm's prefix: (success, output).
fn fpm_test(prefix: &std::path::Path, conf: &std::path::Path) -> (bool, String) {
    let out = Command::new(support::php_fpm::binary())
        .arg("-t")
        .arg("-p")
        .arg(prefix)
        .arg("-y")
        .arg(conf)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dockers_three_file_layout_serves_with_only_command_added() {
    let dir = Dir::new();
    dir.write("index.php", "<?php echo 'served by ', PHP_SAPI;");
    let port = support::free_port();
    // php-fpm accepts the layout.
    let plain = Dir::new();
    let fpm_prefix = docker_layout(&plain, port, "");
    let (ok, out) = fpm_test(&fpm_prefix, &fpm_prefix.join("etc/php-fpm.conf"));
    assert!(ok, "php-fpm -t: {out}");
    // herd, with `command` added and no flag but the file (no -p: the
    // file in `<prefix>/etc/` says where the prefix is).
    let prefix = docker_layout(&dir, port, "command = /usr/sbin/php-fpm8.2\n");
    let main = prefix.join("etc/php-fpm.conf");
    let (code, out, err) = support::herd_cmd(&["check", main.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // The override file wins, and check says so; the bare port is noted.
    assert!(
        err.contains("zz-docker.conf:5: 'listen' in pool 'www' overrides the value set at"),
        "{err}"
    );
    assert!(
        err.contains(&format!("'listen = {port}' binds 127.0.0.1:{port} only")),
        "{err}"
    );
    let root = dir.path().to_path_buf();
    let herd = Herd::start_with(dir, "", |_| {
        let mut cmd = Command::new(support::HERD);
        cmd.args(["run", "--nodaemonize", "--fpm-config"])
            .arg(&main);
        cmd
    });
    herd.wait_ready(1);
    fs::copy("/etc/nginx/fastcgi_params", root.join("fastcgi_params")).unwrap();
    let snippet = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/nginx/herd-php.conf");
    let nginx = Nginx::start(
        &root,
        "",
        &format!(
            "location ~ [^/]\\.php(/|$) {{ include {snippet}; fastcgi_pass 127.0.0.1:{port}; }}"
        ),
    );
    let (status, body) = nginx.get("/index.php");
    assert_eq!((status, body.as_str()), (200, "served by fpm-fcgi"));
    // docker.conf's access.log (/proc/self/fd/2) is herd's stderr.
    herd.wait_log(
        "\"GET /index.php\" 200",
        1,
        std::time::Duration::from_secs(10),
    );

    // Without the pool directory, both refuse to start.
    fs::remove_dir_all(fpm_prefix.join("etc/php-fpm.d")).unwrap();
    let (ok, out) = fpm_test(&fpm_prefix, &fpm_prefix.join("etc/php-fpm.conf"));
    assert!(!ok, "php-fpm -t: {out}");
    let (code, _, err) = support::herd_cmd(&[
        "check",
        fpm_prefix.join("etc/php-fpm.conf").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    let missing = fpm_prefix.join("etc/php-fpm.d");
    assert!(
        err.contains(&format!("directory {} does not exist", missing.display())),
        "{err}"
    );
}

#[test]
fn herd_check_refuses_a_control_socket_or_pid_file_on_a_listener() {
    let dir = Dir::new();
    let conf = format!(
        "[global]\npid = {d}/www.sock\ncontrol.listen = {d}/www.sock\n\
         [www]\nlisten = {d}/www.sock\npm = static\npm.max_children = 1\ncommand = herd\n{}",
        support::user_line(),
        d = dir.path().display()
    );
    let path = dir.write("herd.conf", &conf);
    let (code, _, err) = support::herd_cmd(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("herd.conf:2: 'pid'"), "{err}");
    assert!(err.contains("herd.conf:3: 'control.listen'"), "{err}");
    assert!(err.contains("listening socket of pool 'www'"), "{err}");
}

/// Every directive php-fpm 8.2 has, each set to a value php-fpm accepts
/// (`{d}` is the test's directory). The test below holds php-fpm's own
/// list (`php-fpm -tt`) against it, so a directive missing here fails.
const EVERY_DIRECTIVE: &str = r#"[global]
pid = {d}/fpm.pid
error_log = {d}/error.log
syslog.facility = daemon
syslog.ident = php-fpm
log_level = notice
log_limit = 4096
log_buffering = yes
emergency_restart_threshold = 10
emergency_restart_interval = 1m
process_control_timeout = 10s
process.max = 128
process.priority = 5
daemonize = no
rlimit_files = 4096
rlimit_core = unlimited
events.mechanism = epoll
systemd_interval = 10

[www]
prefix = {d}
user = nobody
group = nogroup
listen = {d}/www.sock
listen.backlog = 511
listen.owner = nobody
listen.group = nogroup
listen.mode = 0660
listen.acl_users = nobody
listen.acl_groups = nogroup
listen.allowed_clients = 127.0.0.1
process.priority = 5
process.dumpable = yes
pm = dynamic
pm.max_children = 5
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 3
pm.max_spawn_rate = 32
pm.process_idle_timeout = 10s
pm.max_requests = 500
pm.status_path = /status
pm.status_listen = 127.0.0.1:{port}
ping.path = /ping
ping.response = pong
access.log = {d}/$pool.access.log
access.format = "%R - %u %t \"%m %r%Q%q\" %s %f %{mili}d %{kilo}M %C%%"
access.suppress_path[] = /ping
slowlog = {d}/$pool.slow.log
request_slowlog_timeout = 5s
request_slowlog_trace_depth = 20
request_terminate_timeout = 30s
request_terminate_timeout_track_finished = no
rlimit_files = 1024
rlimit_core = 0
chroot = {d}
chdir = /www
catch_workers_output = yes
decorate_workers_output = no
clear_env = no
security.limit_extensions = .php .php7
apparmor_hat = www
env[HOSTNAME] = $HOSTNAME
env[TMP] = /tmp
php_value[memory_limit] = 64M
php_flag[display_errors] = off
php_admin_value[error_log] = /var/log/fpm-php.www.log
php_admin_flag[log_errors] = on
"#;

/// The directive names of php-fpm's `-tt` dump (or of a config file):
/// `key` from each `key = value` line, brackets kept (`env[TMP]`); the
/// dump lists `php_flag[x]` as `php_value[x]`, so both sides do.
fn keys(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .map(|l| l.split_once("NOTICE: ").map_or(l, |(_, rest)| rest).trim())
        .filter(|l| !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| {
            l.split_once(" = ")
                .map(|(k, _)| k.trim().replace("_flag[", "_value["))
        })
        .collect()
}

#[test]
fn every_php_fpm_directive_is_accepted() {
    support::installed(FPM_CONF, "php8.2-fpm");
    let dir = Dir::new();
    // What chroot, chdir and command point at exists.
    fs::create_dir_all(dir.join("www")).unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    let app = dir.write("bin/app", "#!/bin/sh\n");
    fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = EVERY_DIRECTIVE
        .replace("{d}", dir.path().to_str().unwrap())
        .replace("{port}", &support::free_port().to_string());
    let fpm_conf = dir.write("php-fpm.conf", &text);
    let dump = Command::new(support::php_fpm::binary())
        .args(["-tt", "-y"])
        .arg(&fpm_conf)
        .output()
        .unwrap();
    let dumped = String::from_utf8_lossy(&dump.stderr).into_owned();
    assert!(dump.status.success(), "php-fpm -tt: {dumped}");
    // php-fpm's own list of what it has: every name in its dump is set here.
    let ours = keys(&text);
    let missing: Vec<_> = keys(&dumped).difference(&ours).cloned().collect();
    assert!(
        missing.is_empty(),
        "php-fpm has directives this test does not set: {missing:?}"
    );
    assert!(ours.len() >= 60, "{ours:?}");

    // herd takes the same file with `command` added: nothing refused; the
    // directives without effect under herd are noted, each with its reason.
    let herd_conf = dir.write("herd.conf", &format!("{text}command = /bin/app\n"));
    let (code, out, err) = support::herd_cmd(&["check", "-c", herd_conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    for inert in [
        "syslog.facility",
        "syslog.ident",
        "log_buffering",
        "events.mechanism",
        "systemd_interval",
        "apparmor_hat",
    ] {
        assert!(
            err.contains(&format!("'{inert}' has no effect under herd: ")),
            "{inert}: {err}"
        );
    }
    // Without php-fpm as the engine, its pass-through settings say so.
    for engine_only in [
        "process.dumpable",
        "request_slowlog_trace_depth",
        "request_terminate_timeout_track_finished",
    ] {
        assert!(
            err.contains(&format!(
                "'{engine_only}' has effect only with php-fpm as the engine"
            )),
            "{engine_only}: {err}"
        );
    }
}
