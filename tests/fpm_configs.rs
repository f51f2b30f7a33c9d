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
    // herd, with the one addition.
    let conf = debian_layout(&dir, "herd", "command = /usr/sbin/php-fpm8.2\n");
    let (code, out, err) = support::herd_cmd(&["check", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let root = dir.path().to_path_buf();
    let text = fs::read_to_string(&conf).unwrap();
    let herd = Herd::start_in(dir, &text);
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
