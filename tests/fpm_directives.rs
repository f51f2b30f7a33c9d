//! php-fpm 8.2's directives that herd implements with php-fpm's meaning,
//! each shown on a running herd: `access.suppress_path[]`,
//! `pm.status_listen`, `listen.acl_users`, `decorate_workers_output` and
//! `log_limit`, `prefix`, and `rlimit_files` in `[global]`.

mod support;

use std::fs;
use std::time::Duration;

use support::fcgi;
use support::{Herd, free_port};

#[test]
fn access_suppress_path_drops_successful_health_checks_only() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let herd = Herd::start(&support::example_pool(
        &addr,
        1,
        "access.log = {dir}/access.log\naccess.format = \"%s %r\"\n\
         access.suppress_path[] = /health\naccess.suppress_path[] = /ping-me\n",
    ));
    herd.wait_ready(1);
    for uri in [
        "/health",
        "/health?x=1",
        "/health?status=500",
        "/other",
        "/ping-me",
        "/last",
    ] {
        fcgi::get(&addr, uri);
    }
    let log = herd.dir.join("access.log");
    let lines = support::wait_until("the last request logged", Duration::from_secs(10), || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        if text.contains("/last") {
            Ok(lines)
        } else {
            Err(text)
        }
    });
    // A failing health check is still logged; so is every other path.
    assert_eq!(lines, ["500 /health", "200 /other", "200 /last"]);
}

#[test]
fn pm_status_listen_answers_status_and_ping_only() {
    let (port, status_port) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{port}");
    let status_addr = format!("127.0.0.1:{status_port}");
    let herd = Herd::start(&support::example_pool(
        &addr,
        1,
        &format!("pm.status_path = /status\nping.path = /ping\npm.status_listen = {status_addr}\n"),
    ));
    herd.wait_ready(1);
    let status = fcgi::get(&status_addr, "/status?json");
    assert_eq!(status.status(), 200, "{}", status.text());
    let json: serde_json::Value = serde_json::from_str(&status.body()).unwrap();
    assert_eq!(json["pool"], "app");
    assert_eq!(fcgi::get(&status_addr, "/ping").body(), "pong\n");
    // Nothing else runs there: no worker sees it.
    let other = fcgi::get(&status_addr, "/index.php");
    assert_eq!(other.status(), 404, "{}", other.text());
    assert!(
        other.body().contains("only the pool's status and ping"),
        "{}",
        other.body()
    );
    // The pool's own address serves both.
    assert_eq!(fcgi::get(&addr, "/status").status(), 200);
    assert!(
        fcgi::get(&addr, "/index.php")
            .body()
            .starts_with("gen=1 pid=")
    );
    let (code, out, err) = support::herd_cmd(&["check", "-c", herd.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn listen_acl_users_lets_that_user_connect_and_no_other() {
    if !support::is_root() {
        return support::skip("listen.acl_users needs root to run a client as another user");
    }
    let herd = Herd::start(&support::example_pool(
        "{dir}/app.sock",
        1,
        "listen.mode = 0600\nlisten.acl_users = nobody\n",
    ));
    herd.wait_ready(1);
    let sock = herd.dir.join("app.sock");
    // The test directory must be passable for the other users.
    fs::set_permissions(
        herd.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let connect_as = |user: &str| {
        let out = std::process::Command::new("setpriv")
            .args([&format!("--reuid={user}"), "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c"])
            .arg("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')")
            .arg(&sock)
            .output()
            .expect("setpriv (util-linux) and /usr/bin/python3");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
            + &String::from_utf8_lossy(&out.stderr)
    };
    assert_eq!(connect_as("nobody"), "connected");
    let other = connect_as("daemon");
    assert!(other.contains("Permission denied"), "{other}");
    // The ACL is what php-fpm's libacl call writes.
    let acl = xattr(&sock, "system.posix_acl_access");
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let named: Vec<(u16, u16, u32)> = acl[4..]
        .chunks(8)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            (tag, perm, u32::from_le_bytes([e[4], e[5], e[6], e[7]]))
        })
        .filter(|(tag, ..)| *tag == 0x02)
        .collect();
    assert_eq!(named, [(0x02, 0o6, nobody)]);
}

fn xattr(path: &std::path::Path, name: &str) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and a buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        len > 0,
        "getxattr {name}: {}",
        std::io::Error::last_os_error()
    );
    buf.truncate(len as usize);
    buf
}

#[test]
fn decorate_workers_output_and_log_limit() {
    let (port_a, port_b) = (free_port(), free_port());
    // Each worker writes one 3000-byte line to stderr, then serves.
    let pool = |name: &str, port: u16, extra: &str| {
        format!(
            "[{name}]\nlisten = 127.0.0.1:{port}\npm = static\npm.max_children = 1\n\
             command = /bin/sh\nargs = \"-c 'head -c 3000 /dev/zero | tr \\\\\\\\0 {name} >&2; echo >&2; exec {{herd}} example-app'\"\n\
             {}{extra}",
            support::user_line()
        )
    };
    let config = format!(
        "[global]\nerror_log = {{dir}}/herd.log\nlog_limit = 100\n{}{}",
        pool("a", port_a, ""),
        pool("b", port_b, "decorate_workers_output = no\n")
    );
    let herd = Herd::start(&config);
    herd.wait_ready(2);
    let a = herd.wait_log(&"a".repeat(100), 1, Duration::from_secs(10));
    let b = herd.wait_log(&"b".repeat(100), 1, Duration::from_secs(10));
    // Cut at log_limit bytes.
    assert!(
        !a[0].contains(&"a".repeat(101)) && !b[0].contains(&"b".repeat(101)),
        "{a:?} {b:?}"
    );
    // Decorated: pool, pid and "worker said"; undecorated: the line alone.
    assert!(
        a[0].contains("worker said: ") && a[0].contains("pool=a"),
        "{}",
        a[0]
    );
    assert!(
        !b[0].contains("worker said") && !b[0].contains("pool=b"),
        "{}",
        b[0]
    );
}

#[test]
fn prefix_is_where_relative_paths_of_the_pool_live() {
    let config = support::example_pool("app.sock", 1, "prefix = run\naccess.log = access.log\n");
    // php-fpm refuses a prefix that is not a directory; so does herd.
    let dir = support::Dir::new();
    let path = dir.write("check.conf", &support::expand(&config, &dir));
    let (code, _, err) = support::herd_cmd(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("check.conf:") && err.contains("'prefix'"),
        "{err}"
    );
    // With the directory there, socket and access log are inside it.
    fs::create_dir(dir.join("run")).unwrap();
    let herd = Herd::start_in(dir, &config);
    herd.wait_ready(1);
    let sock = herd.dir.join("run/app.sock");
    let reply = fcgi::get(sock.to_str().unwrap(), "/x");
    assert_eq!(reply.status(), 200);
    support::wait_until(
        "the access log in the prefix",
        Duration::from_secs(10),
        || {
            fs::read_to_string(herd.dir.join("run/access.log"))
                .ok()
                .filter(|t| t.contains("/x"))
                .ok_or_else(|| "not yet".to_string())
        },
    );
}

#[test]
fn global_rlimit_files_sets_the_master_and_its_workers() {
    let addr = format!("127.0.0.1:{}", free_port());
    let config = support::example_pool(&addr, 1, "")
        .replace("[global]\n", "[global]\nrlimit_files = 2000\n");
    let herd = Herd::start(&config);
    let workers = herd.wait_ready(1);
    for pid in [herd.pid(), workers[0]] {
        let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(line, "Max open files 2000 2000 files", "pid {pid}");
    }
}
