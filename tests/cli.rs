//! The command line: `herd check`, config errors with file and line, the
//! embedded default and the example configs.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Dir, HERD, herd_cmd, wait_for};

#[test]
fn check_accepts_the_example_configs() {
    let root = env!("CARGO_MANIFEST_DIR");
    for file in [
        "config/example.conf",
        "config/php.conf",
        "config/php-cgi.conf",
    ] {
        let path = format!("{root}/{file}");
        let (code, out, err) = herd_cmd(&["check", "-c", &path]);
        assert_eq!(code, 0, "{file}: {out}{err}");
        assert!(out.contains(": ok ("), "{out}");
        // Which php.ini php-cgi reads is said, since it is not php-fpm's.
        if file.ends_with("php-cgi.conf") {
            support::installed("/usr/bin/php-cgi8.2", "php8.2-cgi");
            assert!(
                err.contains("php-cgi reads /etc/php/8.2/cgi/php.ini"),
                "{err}"
            );
        }
    }
}

#[test]
fn check_names_file_and_line_of_every_error() {
    let dir = Dir::new();
    let included = dir.write("extra.conf", "[other]\nlisten = 127.0.0.1:1\npm = static\npm.max_children = two\ncommand = herd\nuser = nobody\n");
    let main = dir.write(
        "herd.conf",
        &format!(
            "[global]\nlog_level = loud\n\n[www]\nlisten = 127.0.0.1:2\npm = static\npm.max_children = 2\ncommand = herd\nuser = nobody\npm.bogus = 1\ninclude = {}\npm.max_chidren = 3\n",
            included.display()
        ),
    );
    let (code, _, err) = herd_cmd(&["check", "-c", main.to_str().unwrap()]);
    assert_eq!(code, 1);
    let main = main.display();
    let inc = included.display();
    assert!(
        err.contains(&format!("{main}:2: invalid value 'loud' for 'log_level'")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{main}:12: unknown directive 'pm.max_chidren' in pool 'other' (did you mean 'pm.max_children'?)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{main}:10: unknown directive 'pm.bogus' in pool 'www'\n"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{inc}:4: invalid value 'two' for 'pm.max_children'"
        )),
        "{err}"
    );
}

#[test]
fn reopened_pools_merge_and_missing_keys_are_errors() {
    let dir = Dir::new();
    let path = dir.write(
        "herd.conf",
        "[www]\nlisten = 127.0.0.1:3\npm = static\npm.max_children = 1\ncommand = herd\nuser = nobody\n\
         [www]\nlisten = 127.0.0.1:4\n",
    );
    // php-fpm's rule: the pool goes on, the later listen wins, and check
    // says so without calling it a problem.
    let (code, out, err) = herd_cmd(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("{}: ok (1 pool(s))", path.display()).as_str()),
        "{err}"
    );
    let p = path.display();
    assert_eq!(
        err.trim(),
        format!("herd: note: {p}:8: 'listen' in pool 'www' overrides the value set at {p}:2")
    );
    let missing = dir.write(
        "missing.conf",
        "[www]\nlisten = 127.0.0.1:5\npm = static\nuser = nobody\n",
    );
    let (code, _, err) = herd_cmd(&["check", "-c", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("missing required directive 'pm.max_children'"),
        "{err}"
    );
    assert!(
        err.contains("missing required directive 'command'"),
        "{err}"
    );
}

/// `herd run -c path`, which must exit 1; its stderr.
fn run_failing(path: &std::path::Path) -> String {
    let out = Command::new(HERD)
        .args(["run", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_refuses_a_bad_config_and_starts_nothing() {
    let dir = Dir::new();
    let path = dir.write("herd.conf", "[www]\nlisten = 127.0.0.1:6\npm = sometimes\n");
    let err = run_failing(&path);
    assert!(err.contains(&format!("{}:3:", path.display())), "{err}");
}

#[test]
fn run_fails_clearly_when_the_listen_address_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = Dir::new();
    let path = dir.write(
        "herd.conf",
        &format!("[www]\nlisten = {addr}\npm = static\npm.max_children = 1\ncommand = herd\nargs = example-app\n{}", support::user_line()),
    );
    let err = run_failing(&path);
    assert!(
        err.contains("pool 'www'") && err.contains(&format!("failed to bind {addr}")),
        "{err}"
    );

    // With error_log set, the reason still reaches the terminal (and
    // systemd's journal), not only the file: php-fpm does the same.
    let log = dir.path().join("herd.log");
    let text = std::fs::read_to_string(&path).unwrap();
    let path = dir.write(
        "logged.conf",
        &format!("[global]\nerror_log = {}\n{text}", log.display()),
    );
    let err = run_failing(&path);
    let logged = std::fs::read_to_string(&log).unwrap();
    for (what, text) in [("stderr", &*err), ("error_log", &*logged)] {
        assert!(
            text.contains(&format!("failed to bind {addr}")),
            "{what}: {text}"
        );
    }
}

#[test]
fn run_without_a_config_serves_the_embedded_default() {
    let mut child = Command::new(HERD)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // The first lines name the `herd call` command that queries it.
    let mut call_line = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if line.contains(" call ") {
            call_line = line.trim().to_string();
            break;
        }
        line.clear();
    }
    let words: Vec<&str> = call_line.split_whitespace().collect();
    assert_eq!(words[1..3], ["call", "127.0.0.1:9900"], "{call_line}");
    // Drain the log so herd never blocks on a full pipe.
    std::thread::spawn(move || support::read_all(stderr));
    let reply = wait_for(
        "the embedded default to answer",
        Duration::from_secs(20),
        || {
            let out = Command::new(words[0]).args(&words[1..]).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    assert!(reply.contains("gen=1 pid="), "{reply}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for("herd to stop", Duration::from_secs(15), || {
        child.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
}

#[test]
fn log_format_json_writes_one_object_per_event() {
    let port = support::free_port();
    let herd = support::Herd::start(&format!(
        "[global]\nerror_log = {{dir}}/herd.log\nlog_format = json\n\
         [app]\nlisten = 127.0.0.1:{port}\npm = static\npm.max_children = 1\ncommand = {{herd}}\nargs = example-app\n{}",
        support::user_line()
    ));
    let ready = support::wait_for("a worker ready event", Duration::from_secs(20), || {
        herd.log_text()
            .lines()
            .find(|l| l.contains("worker ready"))
            .map(String::from)
    });
    let v: serde_json::Value =
        serde_json::from_str(&ready).unwrap_or_else(|e| panic!("not JSON ({e}): {ready}"));
    assert_eq!(v["message"], "worker ready");
    assert_eq!(v["pool"], "app");
    assert!(
        v["pid"].as_u64().is_some() && v["level"] == "INFO" && v["timestamp"].is_string(),
        "{v}"
    );
}

#[test]
fn php_fpm_flags_work() {
    // A php-fpm unit's habits: -t to test, -y/--fpm-config for the file,
    // -p for the prefix that relative paths and includes are read against.
    let dir = Dir::new();
    let prefix = dir.join("prefix");
    std::fs::create_dir_all(prefix.join("pool.d")).unwrap();
    std::fs::write(
        prefix.join("pool.d/www.conf"),
        format!(
            "[www]\nlisten = www.sock\npm = static\npm.max_children = 1\ncommand = herd\n{}",
            support::user_line()
        ),
    )
    .unwrap();
    let conf = dir.write("php-fpm.conf", "[global]\ninclude = pool.d/*.conf\n");
    let conf = conf.to_str().unwrap();
    let p = prefix.to_str().unwrap();
    for args in [
        &["run", "-t", "-p", p, "-y", conf][..],
        &[
            "run",
            "--test",
            "--prefix",
            p,
            "--fpm-config",
            conf,
            "--nodaemonize",
        ],
        &["check", "-p", p, conf],
    ] {
        let (code, out, err) = herd_cmd(args);
        assert_eq!(
            (code, out.trim()),
            (0, format!("{conf}: ok (1 pool(s))").as_str()),
            "{args:?}: {err}"
        );
    }
    // Without the prefix, the include is read beside the file: not there.
    let (code, _, err) = herd_cmd(&["check", conf]);
    assert_eq!(code, 1);
    assert!(err.contains("pool.d/*.conf': directory"), "{err}");
}
