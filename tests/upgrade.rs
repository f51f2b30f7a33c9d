//! `herd ctl upgrade`: a new master takes over the listening sockets
//! without refusing or resetting a connection; a failed one changes nothing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use support::fcgi;
use support::{Herd, user_line, wait_for};

fn config(tcp: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\ncontrol.listen = {{dir}}/ctl.sock\npid = {{dir}}/herd.pid\n\
         [tcp]\nlisten = {tcp}\npm = static\npm.max_children = 2\ncommand = {{herd}}\nargs = example-app\n{u}\
         [unix]\nlisten = {{dir}}/app.sock\npm = static\npm.max_children = 2\ncommand = {{herd}}\nargs = example-app\n{u}",
        u = user_line()
    )
}

fn master_pid(herd: &Herd) -> u32 {
    std::fs::read_to_string(herd.dir.join("herd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn upgrade_under_load_drops_no_request() {
    let tcp = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&config(&tcp));
    herd.wait_ready(4);
    let old = master_pid(&herd);
    let old_workers = herd.worker_pids();
    let unix = herd.dir.join("app.sock").to_str().unwrap().to_string();

    // Clients on both listeners, one of them on slow requests that are in
    // flight on the old master when it hands over.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = [
        (tcp.clone(), "/?ms=5"),
        (unix.clone(), "/?ms=5"),
        (tcp.clone(), "/?ms=700"),
    ]
    .into_iter()
    .map(|(addr, uri)| {
        let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
        thread::spawn(move || {
            for _ in 0..2000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match fcgi::try_get(&addr, uri, Duration::from_secs(10)) {
                    Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("failed: {other:?}");
                        failures.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        })
    })
    .collect();
    wait_for(
        "some requests to be served",
        Duration::from_secs(10),
        || (served.load(Ordering::SeqCst) > 20).then_some(()),
    );

    let (code, out, err) = herd.ctl(&herd.dir.join("ctl.sock"), &["upgrade"]);
    assert_eq!(code, 0, "{out}{err}\n{}", herd.log_text());
    let new = master_pid(&herd);
    assert_ne!(new, old, "the pid file names the new master");
    let _guard = StopOnDrop(new);
    wait_for("the old master to exit", Duration::from_secs(20), || {
        (!support::alive(old)).then_some(())
    });
    for pid in &old_workers {
        wait_for("the old workers to exit", Duration::from_secs(10), || {
            (!support::alive(*pid)).then_some(())
        });
    }
    let before = served.load(Ordering::SeqCst);
    wait_for(
        "requests served by the new master",
        Duration::from_secs(10),
        || (served.load(Ordering::SeqCst) > before + 20).then_some(()),
    );
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "no request failed across the upgrade\n{}",
        herd.log_text()
    );
    // The new master's workers are the next generation; the socket file and
    // control socket survived the old master's exit.
    assert!(fcgi::get(&unix, "/").generation() >= 2);
    let (code, status, _) = herd.ctl(&herd.dir.join("ctl.sock"), &["status"]);
    assert_eq!(code, 0, "{status}");
    // Stop the new master through its control socket (the harness's pid is
    // the old one's).
    let (code, _, _) = herd.ctl(&herd.dir.join("ctl.sock"), &["stop"]);
    assert_eq!(code, 0);
    wait_for("the new master to stop", Duration::from_secs(20), || {
        (!support::alive(new)).then_some(())
    });
}

#[test]
fn a_new_master_that_cannot_start_changes_nothing() {
    let tcp = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&config(&tcp));
    let workers = herd.wait_ready(4);
    let old = master_pid(&herd);
    // The new master re-reads the config: broken, it cannot start.
    let text = std::fs::read_to_string(&herd.config).unwrap() + "pm.bogus = 1\n";
    std::fs::write(&herd.config, text).unwrap();
    let (code, out, err) = herd.ctl(&herd.dir.join("ctl.sock"), &["upgrade"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("upgrade failed"), "{err}");
    assert_eq!(master_pid(&herd), old);
    assert!(
        workers.iter().all(|p| support::alive(*p)),
        "the old workers serve on"
    );
    assert_eq!(fcgi::get(&tcp, "/").status(), 200);
    let unix = herd.dir.join("app.sock");
    assert_eq!(fcgi::get(unix.to_str().unwrap(), "/").status(), 200);
}

/// The new master is not the harness's child: stop it by pid however the
/// test ends.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if support::alive(self.0) {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

/// A package upgrade replaces the herd binary under a running master
/// (unlink, new file at the same path): a reload of `command = herd`
/// pools still works, and starts the new build.
#[test]
fn a_reload_after_the_herd_binary_was_replaced_starts_the_new_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = support::Dir::new();
    let bin = dir.join("herd-installed");
    std::fs::copy(support::HERD, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tcp = format!("127.0.0.1:{}", support::free_port());
    let conf = format!(
        "[global]\nerror_log = {{dir}}/herd.log\ncontrol.listen = {{dir}}/ctl.sock\n\
         [app]\nlisten = {tcp}\npm = static\npm.max_children = 1\ncommand = herd\nargs = example-app\n{}",
        user_line()
    );
    let herd = Herd::start_with(dir, &conf, |config| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["run", "-c"]).arg(config);
        cmd
    });
    herd.wait_ready(1);
    // What a package manager does: a new file, then a rename over the old.
    let new = herd.dir.join("herd-installed.new");
    std::fs::copy(support::HERD, &new).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, &bin).unwrap();
    let socket = herd.dir.join("ctl.sock");
    let (code, out, err) = herd.ctl(&socket, &["reload", "--force", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for("generation 2 to serve", Duration::from_secs(10), || {
        (fcgi::get(&tcp, "/").generation() == 2).then_some(())
    });
    // The new worker runs the file now at the path.
    let pid = fcgi::get(&tcp, "/").pid();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, bin, "the worker runs the replaced file");
}
