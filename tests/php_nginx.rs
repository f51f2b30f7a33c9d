//! The production setup: real php-cgi workers under herd, and nginx in
//! front over TCP (with and without upstream keep-alive) and a unix socket.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::Duration;

use support::fcgi;
use support::nginx::Nginx;
use support::{Dir, Herd, user_line};

const HELLO: &str = "<?php header('X-Test: yes'); echo 'php says ', 6*7, ' ', getenv('HERD_POOL');";
const ECHO: &str = "<?php echo file_get_contents('php://input');";
const SLOW: &str = "<?php usleep(300000); echo 'slept ', getmypid();";
const SAID: &str = "php says 42 www";

/// The time one request may take before the test fails instead of waiting.
const LIMIT: Duration = Duration::from_secs(10);

/// A test directory with the PHP scripts in it.
fn scripts() -> Dir {
    let dir = Dir::new();
    dir.write("hello.php", HELLO);
    dir.write("echo.php", ECHO);
    dir.write("slow.php", SLOW);
    dir
}

/// Pool `www` of `workers` php-cgi workers on `listen`.
fn php_conf(listen: &str, workers: u32, extra: &str) -> String {
    let php = support::php_cgi().expect(
        "php-cgi is not installed: run the test command from the README, which installs it",
    );
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [www]\nlisten = {listen}\npm = static\npm.max_children = {workers}\n\
         command = {php}\nenv[PHP_FCGI_MAX_REQUESTS] = 0\n{user}{extra}",
        php = php.display(),
        user = user_line()
    )
}

const PHP_LOCATION: &str = "include /etc/nginx/fastcgi_params;\n\
     fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n";

/// `n` sequential GETs of `path` through nginx, each answered in time
/// with 200 and `body`.
fn sequential(nginx: &Nginx, path: &str, n: usize, body: &str) {
    for i in 0..n {
        let (status, got) = nginx.get_within(path, LIMIT);
        assert_eq!((status, got.as_str()), (200, body), "request {i} of {n}");
    }
}

/// `n` concurrent GETs of `path` through nginx; returns their bodies once
/// every one was answered in time with 200.
fn concurrent(nginx: &Nginx, path: &str, n: usize) -> Vec<String> {
    thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| nginx.get_within(path, LIMIT)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let (status, body) = h.join().expect("a request through nginx");
                assert_eq!(status, 200, "{body}");
                body
            })
            .collect()
    })
}

#[test]
fn php_cgi_serves_through_herd() {
    let dir = scripts();
    let root = dir.path().to_str().unwrap().to_string();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(dir, &php_conf(&addr, 2, ""));
    herd.wait_ready(2);

    let (code, out, err) = support::herd_cmd(&["call", &addr, "/hello.php", "--root", &root]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("X-Test: yes"), "{out}");
    assert!(out.ends_with(SAID), "{out}");

    // A request body reaches PHP whole, across many stdin records.
    let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let script = herd.dir.join("echo.php");
    let reply = fcgi::request(
        &addr,
        "/echo.php",
        &[
            ("SCRIPT_FILENAME", script.to_str().unwrap()),
            ("CONTENT_TYPE", "application/octet-stream"),
        ],
        &body,
    );
    assert_eq!(reply.status(), 200, "{}", reply.text());
    assert_eq!(reply.body().len(), body.len());
    assert!(
        reply.body().as_bytes() == &body[..],
        "the body came back changed"
    );

    // And through `herd call -X POST --body`.
    let file = herd.dir.write("post.txt", "posted through herd call");
    let (code, out, err) = support::herd_cmd(&[
        "call",
        &addr,
        "/echo.php",
        "--root",
        &root,
        "-X",
        "POST",
        "--body",
        file.to_str().unwrap(),
        "-p",
        "CONTENT_TYPE=text/plain",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("posted through herd call"), "{out}");
}

#[test]
fn nginx_in_front_without_keepalive() {
    let dir = scripts();
    let port = support::free_port();
    let herd = Herd::start_in(dir, &php_conf(&format!("127.0.0.1:{port}"), 2, ""));
    herd.wait_ready(2);
    let nginx = Nginx::start(
        herd.dir.path(),
        "",
        &format!("location ~ \\.php$ {{\n{PHP_LOCATION}fastcgi_pass 127.0.0.1:{port};\n}}"),
    );
    sequential(&nginx, "/hello.php", 20, SAID);
    for body in concurrent(&nginx, "/hello.php", 5) {
        assert_eq!(body, SAID);
    }
    // Two slow requests at once run on the two workers.
    let bodies = concurrent(&nginx, "/slow.php", 2);
    assert_ne!(bodies[0], bodies[1], "two workers served: {bodies:?}");
    assert!(herd.running());
}

#[test]
fn nginx_keepalive_connections_never_pin_the_only_worker() {
    // php-fpm ties a worker to each keep-alive connection from nginx: with
    // one worker, the second of two concurrent requests (on a second
    // upstream connection) waits until nginx closes the first connection.
    let dir = scripts();
    let port = support::free_port();
    let herd = Herd::start_in(dir, &php_conf(&format!("127.0.0.1:{port}"), 1, ""));
    herd.wait_ready(1);
    let nginx = Nginx::start(
        herd.dir.path(),
        &format!("upstream herd_www {{\n server 127.0.0.1:{port};\n keepalive 8;\n}}"),
        &format!(
            "location ~ \\.php$ {{\n{PHP_LOCATION}fastcgi_keep_conn on;\n\
             fastcgi_pass herd_www;\n}}"
        ),
    );
    sequential(&nginx, "/hello.php", 20, SAID);
    for round in 0..3 {
        let bodies = concurrent(&nginx, "/slow.php", 2);
        assert!(
            bodies.iter().all(|b| b.starts_with("slept ")),
            "round {round}: {bodies:?}"
        );
        // nginx now holds (at least) two idle keep-alive connections.
        let established = support::tcp_states(port)
            .iter()
            .filter(|&&s| s == support::TCP_ESTABLISHED)
            .count();
        assert!(
            established >= 2,
            "round {round}: nginx keeps its upstream connections open ({established})"
        );
    }
    for body in concurrent(&nginx, "/hello.php", 5) {
        assert_eq!(body, SAID);
    }
    sequential(&nginx, "/hello.php", 5, SAID);
    assert!(herd.running());
}

#[test]
fn nginx_to_herd_over_a_unix_socket() {
    let dir = scripts();
    let herd = Herd::start_in(dir, &php_conf("{dir}/www.sock", 2, "listen.mode = 0666\n"));
    herd.wait_ready(2);
    let sock = herd.dir.join("www.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o666, "mode {mode:o}");
    // Plain fastcgi_pass: one connection per request.
    let plain = Nginx::start(
        herd.dir.path(),
        "",
        &format!(
            "location ~ \\.php$ {{\n{PHP_LOCATION}fastcgi_pass unix:{};\n}}",
            sock.display()
        ),
    );
    sequential(&plain, "/hello.php", 10, SAID);
    drop(plain);
    // Upstream keep-alive.
    let nginx = Nginx::start(
        herd.dir.path(),
        &format!(
            "upstream herd_unix {{\n server unix:{};\n keepalive 4;\n}}",
            sock.display()
        ),
        &format!(
            "location ~ \\.php$ {{\n{PHP_LOCATION}fastcgi_keep_conn on;\n\
             fastcgi_pass herd_unix;\n}}"
        ),
    );
    sequential(&nginx, "/hello.php", 20, SAID);
    for body in concurrent(&nginx, "/hello.php", 5) {
        assert_eq!(body, SAID);
    }
    assert!(herd.running());
}
