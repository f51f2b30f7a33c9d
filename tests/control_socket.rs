//! The control socket seen from outside: out of file descriptors, its
//! accept loop pauses instead of spinning, and serves once some are free.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use support::{Dir, Herd, example_pool, example_pool_with, herd_cmd_within, wait_until};

/// herd's hard limit on open files in this test: a few dozen connections
/// use it up.
const FD_LIMIT: u32 = 64;

#[test]
fn out_of_descriptors_the_control_socket_pauses_instead_of_spinning() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let conf = example_pool(&addr, 1, "").replacen(
        "[global]\n",
        "[global]\ncontrol.listen = {dir}/ctl.sock\n",
        1,
    );
    // A hard limit herd cannot raise.
    let herd = Herd::start_with(Dir::new(), &conf, |config| {
        support::herd_via_shell(&format!("ulimit -n {FD_LIMIT} &&"), config)
    });
    herd.wait_ready(1);
    let pid = herd.pid();

    // Connections that each send a byte (so they are accepted at once)
    // and then wait, until herd has no descriptor left for the next one.
    let mut held = Vec::new();
    wait_until(
        "herd to run out of descriptors",
        Duration::from_secs(10),
        || {
            let mut c = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
            let _ = c.write_all(&[1]);
            held.push(c);
            match herd.log_lines("failed to accept a connection").is_empty() {
                true => Err(format!("{} connections held", held.len())),
                false => Ok(()),
            }
        },
    );

    // A `herd ctl` waits in the control socket's backlog meanwhile.
    let socket = herd.dir.join("ctl.sock");
    let ctl = thread::spawn(move || {
        let socket = socket.to_str().unwrap().to_string();
        herd_cmd_within(
            &["ctl", "--socket", &socket, "status", "--json"],
            Duration::from_secs(20),
        )
    });
    herd.wait_log(
        "failed to accept a control connection",
        1,
        Duration::from_secs(5),
    );
    let before = support::cpu_ticks(pid);
    thread::sleep(Duration::from_secs(1));
    let used = support::cpu_ticks(pid) - before;
    assert!(
        used < 30,
        "herd used {used} clock ticks of CPU in one second out of descriptors: it spins"
    );
    // Descriptors come back as the connections go; the ctl is answered.
    drop(held);
    let (code, out, err) = ctl.join().expect("ctl thread");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"phase\":\"serving\""), "{out}");
    assert!(
        herd.log_lines("failed to accept a control connection")
            .len()
            <= 3,
        "at most a line a second"
    );
}

/// `herd ctl -c FILE` needs only the control socket's path from the file:
/// after a typo lands in the config on disk (an edit not reloaded yet),
/// `status` and `stop` still reach the master, with the errors as
/// warnings; a reload still refuses the file.
#[test]
fn herd_ctl_c_reaches_the_master_through_a_config_with_errors() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    // The control socket is derived from the pid file, as in production.
    let conf = example_pool_with("pid = {dir}/herd.pid\n", &addr, 1, "");
    let mut herd = Herd::start(&conf);
    herd.wait_ready(1);
    let broken = format!(
        "{conf}pm.max_childern = 3\nthis line is no directive\n\
         [second]\nlisten = 127.0.0.1:1\npm = sometimes\n"
    );
    herd.rewrite_config(&broken);
    let file = herd.config.to_str().unwrap().to_string();
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "-c", &file];
        all.extend_from_slice(args);
        herd_cmd_within(&all, Duration::from_secs(10))
    };
    let (code, out, err) = ctl(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("master pid {}: serving\n", herd.pid())),
        "{out}"
    );
    let at = |line: u32| format!("herd ctl: warning: {file}:{line}: ");
    for needle in [
        format!("{}unknown directive 'pm.max_childern'", at(11)),
        format!("{}expected 'key = value'", at(12)),
        format!("{}invalid value 'sometimes' for 'pm'", at(15)),
        "herd ctl needs only the control socket's path".into(),
    ] {
        assert!(err.contains(&needle), "no {needle:?} in:\n{err}");
    }
    let (code, out, err) = ctl(&["reload"]);
    assert_eq!(code, 1, "a reload reads the whole file: {out}{err}");
    let (code, out, err) = ctl(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(herd.wait_exit(Duration::from_secs(15)), Some(0));
}
