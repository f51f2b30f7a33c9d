//! `spawn = preload`: a herd::worker application loaded once per
//! generation, its workers forked from the preloader and sharing its memory.

mod support;

use std::time::Duration;

use support::fcgi;
use support::{Herd, example, user_line, wait_for};

fn preload_pool(addr: &str, app: &str, workers: u32, extra: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\ncontrol.listen = {{dir}}/ctl.sock\n\
         [app]\nlisten = {addr}\npm = static\npm.max_children = {workers}\n\
         spawn = preload\ncommand = {}\n{user}{extra}",
        example(app).display(),
        user = user_line()
    )
}

/// Proportional set size of a process, in bytes: its private pages plus
/// its share of pages shared with others.
fn pss(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn preloaded_workers_share_the_table_copy_on_write() {
    const TABLE_MB: u64 = 64;
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&preload_pool(
        &addr,
        "big_table",
        8,
        &format!("env[BIG_TABLE_MB] = {TABLE_MB}\n"),
    ));
    let pids = herd.wait_ready(8);
    // Every worker answers from the table (so each has touched it).
    for _ in 0..16 {
        let r = fcgi::get(&addr, "/?i=12345");
        assert_eq!(r.status(), 200, "{}", r.text());
    }
    let workers: u64 = pids.iter().map(|p| pss(*p)).sum();
    let table = TABLE_MB << 20;
    eprintln!(
        "8 workers, {TABLE_MB} MiB table: PSS of the workers together {} MiB",
        workers >> 20
    );
    // Eight private copies would be 8 × 64 MiB; shared, the table counts
    // about once across the preloader and its workers.
    assert!(
        workers < 2 * table,
        "workers' PSS {} MiB: the table is not shared",
        workers >> 20
    );
    // They really are the preloader's children, not eight separate loads.
    let preloader = herd.log_lines("preloader started");
    assert_eq!(preloader.len(), 1, "{}", herd.log_text());
}

#[test]
fn a_generation_whose_validate_fails_is_refused_with_its_error() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&preload_pool(
        &addr,
        "big_table",
        2,
        "env[BIG_TABLE_MB] = 1\n",
    ));
    let old = herd.wait_ready(2);
    // The deploy: validate finds the table empty.
    let text = std::fs::read_to_string(&herd.config)
        .unwrap()
        .replace("env[BIG_TABLE_MB] = 1", "env[BIG_TABLE_MB] = 0");
    std::fs::write(&herd.config, text).unwrap();
    let socket = herd.dir.join("ctl.sock");
    let (code, out, err) = support::herd_cmd(&[
        "ctl",
        "--socket",
        socket.to_str().unwrap(),
        "reload",
        "--wait",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("deploy refused") && err.contains("the table is empty"),
        "{err}"
    );
    // The old generation keeps serving, at full size.
    for _ in 0..4 {
        let r = fcgi::get(&addr, "/?i=1");
        assert_eq!(r.status(), 200);
    }
    let (_, status, _) =
        support::herd_cmd(&["ctl", "--socket", socket.to_str().unwrap(), "status"]);
    assert!(
        status.contains("deploy refused") && status.contains("the table is empty (BIG_TABLE_MB=0)"),
        "{status}"
    );
    let live: Vec<u32> = old.iter().copied().filter(|p| support::alive(*p)).collect();
    assert_eq!(live, old, "the old workers were not touched");
}

#[test]
fn a_panicking_handler_gets_a_500_and_its_forked_worker_is_replaced() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&preload_pool(&addr, "hello", 1, ""));
    let first = herd.wait_ready(1)[0];
    let r = fcgi::get(&addr, "/?panic");
    assert_eq!(r.status(), 500);
    wait_for(
        "the panicked worker to exit",
        Duration::from_secs(10),
        || (!support::alive(first)).then_some(()),
    );
    let next = wait_for(
        "a new worker forked from the preloader",
        Duration::from_secs(10),
        || {
            let r = fcgi::get(&addr, "/");
            (r.status() == 200).then(|| r.text())
        },
    );
    assert!(next.contains("Hello from generation 1"), "{next}");
    assert!(
        !herd.log_lines("exited with code 70").is_empty(),
        "{}",
        herd.log_text()
    );
    assert_eq!(
        herd.log_lines("preloader started").len(),
        1,
        "the preloader survived"
    );
}

#[test]
fn workers_die_with_their_preloader_and_herd_starts_another() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&preload_pool(&addr, "hello", 2, ""));
    let workers = herd.wait_ready(2);
    let line = herd.log_lines("preloader started").remove(0);
    let preloader = support::field(&line, "pid").unwrap();
    unsafe { libc::kill(preloader as i32, libc::SIGKILL) };
    for pid in workers {
        wait_for(
            "a worker to die with its preloader",
            Duration::from_secs(5),
            || (!support::alive(pid)).then_some(()),
        );
    }
    wait_for("herd to serve again", Duration::from_secs(10), || {
        (fcgi::try_get(&addr, "/", Duration::from_secs(5)).map(|r| r.status()) == Ok(200))
            .then_some(())
    });
    assert_eq!(herd.log_lines("preloader started").len(), 2);
}

#[test]
fn a_program_can_be_its_own_manager() {
    // examples/managed runs herd's master in its own binary; here with a
    // config file on a free port instead of its built-in one.
    let dir = support::Dir::new();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let conf = dir.write(
        "managed.conf",
        &format!("[global]\ncontrol.listen = {}/ctl.sock\n[greeter]\nlisten = {addr}\npm = static\npm.max_children = 2\n{}", dir.path().display(), user_line()),
    );
    let log = dir.join("managed.log");
    let mut child = std::process::Command::new(example("managed"))
        .args(["--config", conf.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let reply = wait_for(
        "the self-managed program to serve",
        Duration::from_secs(15),
        || {
            fcgi::try_get(&addr, "/", Duration::from_secs(5))
                .ok()
                .filter(|r| r.status() == 200)
        },
    );
    let body = reply.body();
    assert!(
        body.starts_with("Hello from a self-managed program, generation 1, pid "),
        "{body}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("preloader ready"),
        "forked from a preloader:\n{text}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for("it to stop", Duration::from_secs(15), || {
        child.try_wait().unwrap()
    });
    assert!(
        status.success(),
        "{status:?}\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
}
