//! The control socket seen from outside: out of file descriptors, its
//! accept loop pauses instead of spinning, and serves once some are free.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use support::{Dir, Herd, example_pool, herd_cmd_within, wait_until};

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
