//! The Debian package, as `contrib/deb/build.sh` builds it (from the herd
//! binary the tests run, not a fresh release build): its control data and
//! contents, then installed into a private root with `dpkg-deb -x` (nothing
//! on the machine changes) and run from there as its units would run it,
//! without systemctl: `ExecStartPre=`, then `ExecStart=` under systemd's
//! own `systemd-socket-activate` playing `herd.socket`, with a notify
//! socket standing in for systemd's; a request on the pool's socket, `herd
//! ctl status` and `ExecReload=`, then `KillSignal=`, all by pid.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::notify::NotifySocket;
use support::shipped::{self, read, rewrite, value};
use support::{Dir, HERD, Herd, alive, fcgi, output_within, wait_for};

/// The package, built into `dir` from this test run's herd binary.
fn build(dir: &Dir) -> PathBuf {
    for tool in ["dpkg-deb", "dpkg-shlibdeps"] {
        support::installed(&format!("/usr/bin/{tool}"), "dpkg-dev");
    }
    let out = dir.join("out");
    let (code, stdout, stderr) = output_within(
        Command::new("bash")
            .arg(shipped::repo("contrib/deb/build.sh"))
            .env("HERD_BIN", HERD)
            .env("OUT", &out),
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "build.sh:\n{stdout}{stderr}");
    let deb = PathBuf::from(stdout.trim());
    assert!(
        deb.starts_with(&out) && deb.exists(),
        "build.sh printed {stdout:?}"
    );
    deb
}

/// `dpkg-deb OPTION DEB ARGS...`: its output.
fn dpkg_deb(option: &[&str], deb: &Path, args: &[&str]) -> String {
    let (code, out, err) = output_within(
        Command::new("dpkg-deb").args(option).arg(deb).args(args),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "dpkg-deb {option:?} {args:?}: {err}");
    out
}

/// Installed into `root` as dpkg would unpack it.
fn extract(deb: &Path, root: &Path) {
    dpkg_deb(&["--extract"], deb, &[root.to_str().unwrap()]);
}

#[test]
fn the_package_installs_what_the_readme_says() {
    let dir = Dir::new();
    let deb = build(&dir);
    let name = deb.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("herd_") && name.ends_with(".deb"),
        "{name}"
    );
    assert_eq!(dpkg_deb(&["--field"], &deb, &["Package"]).trim(), "herd");
    let depends = dpkg_deb(&["--field"], &deb, &["Depends"]);
    assert!(depends.contains("libc6"), "Depends: {depends}");
    // A conffile survives upgrades with the admin's edits.
    let control = dir.join("control");
    dpkg_deb(&["--control"], &deb, &[control.to_str().unwrap()]);
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/herd/herd.conf", "/etc/logrotate.d/herd"]
    );

    let root = dir.join("root");
    extract(&deb, &root);
    let installed = |p: &str| root.join(p.trim_start_matches('/'));
    // The files that are copies of the repository's, unchanged.
    for (path, source) in [
        (
            "/lib/systemd/system/herd.service",
            "contrib/systemd/herd.service",
        ),
        (
            "/lib/systemd/system/herd.socket",
            "contrib/systemd/herd.socket",
        ),
        ("/etc/herd/herd.conf", "contrib/systemd/herd.conf"),
        ("/etc/logrotate.d/herd", "contrib/logrotate/herd"),
        ("/usr/share/doc/herd/README.md", "README.md"),
        (
            "/usr/share/doc/herd/examples/nginx/herd-php.conf",
            "contrib/nginx/herd-php.conf",
        ),
    ] {
        let text = std::fs::read_to_string(installed(path))
            .unwrap_or_else(|e| panic!("{path} is not in the package: {e}"));
        assert_eq!(text, read(source), "{path} differs from {source}");
    }
    let version = Command::new(installed("/usr/bin/herd"))
        .arg("--version")
        .output()
        .expect("the installed herd runs");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("herd "));
    // Every man page herd makes, compressed as Debian ships them; man reads
    // them as they are.
    let made = dir.join("man");
    let (code, _, err) = support::herd_cmd(&["generate", "man", made.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let names = |d: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let man1 = installed("/usr/share/man/man1");
    let pages: Vec<String> = names(&made).iter().map(|p| format!("{p}.gz")).collect();
    assert_eq!(names(&man1), pages);
    let page = man1.join("herd-ctl-reload.1.gz");
    let man = Command::new(support::installed("/usr/bin/man", "man-db"))
        .args(["--warnings", "-l", "-Tutf8", "-Z"])
        .arg(&page)
        .output()
        .expect("run man");
    assert!(
        man.status.success() && man.stderr.is_empty(),
        "{}: {}",
        page.display(),
        String::from_utf8_lossy(&man.stderr)
    );
    for (path, marker) in [
        (
            "/usr/share/bash-completion/completions/herd",
            "complete -F _herd",
        ),
        ("/usr/share/zsh/vendor-completions/_herd", "#compdef herd"),
        (
            "/usr/share/fish/vendor_completions.d/herd.fish",
            "complete -c herd",
        ),
    ] {
        let text = std::fs::read_to_string(installed(path))
            .unwrap_or_else(|e| panic!("{path} is not in the package: {e}"));
        assert!(text.contains(marker), "{path}:\n{text}");
    }

    // systemd's parser on the installed units, with the installed binary.
    if let Some(tool) = shipped::systemd_analyze() {
        let units: Vec<PathBuf> = ["herd.service", "herd.socket"]
            .iter()
            .map(|unit| {
                let text =
                    std::fs::read_to_string(installed(&format!("/lib/systemd/system/{unit}")))
                        .unwrap();
                let bin = installed("/usr/bin/herd");
                dir.write(unit, &text.replace("/usr/bin/herd", bin.to_str().unwrap()))
            })
            .collect();
        shipped::verify_units(&tool, &units);
    }
}

/// The words of a unit's `Key=` command line, with the installed paths
/// moved under `root` and the config to `config`.
fn command_line(unit: &str, key: &str, root: &Path, config: &Path) -> Command {
    let line = value(unit, key);
    let mut words = line.split_whitespace().map(|w| match w {
        "/usr/bin/herd" => root.join("usr/bin/herd").into_os_string(),
        "/etc/herd/herd.conf" => config.as_os_str().to_owned(),
        other => other.into(),
    });
    let mut cmd = Command::new(words.next().unwrap());
    cmd.args(words);
    cmd
}

#[test]
fn the_installed_package_serves_as_its_units_run_it() {
    let activate = Path::new("/usr/bin/systemd-socket-activate");
    if !activate.exists() {
        return support::skip("systemd-socket-activate is not installed (package systemd)");
    }
    let dir = Dir::new();
    let deb = build(&dir);
    let root = dir.join("root");
    extract(&deb, &root);
    let service = std::fs::read_to_string(root.join("lib/systemd/system/herd.service")).unwrap();
    let socket = std::fs::read_to_string(root.join("lib/systemd/system/herd.socket")).unwrap();

    // The package's own config, with its run directory moved into the
    // test's (the service's RuntimeDirectory=/run/herd).
    let config_text = rewrite(
        "/etc/herd/herd.conf",
        &std::fs::read_to_string(root.join("etc/herd/herd.conf")).unwrap(),
        &[(
            "pid = /run/herd/herd.pid",
            "pid = {dir}/run/herd.pid\nworker.socket_dir = {dir}/run".to_string(),
        )],
    );
    std::fs::create_dir(dir.join("run")).unwrap();
    std::fs::set_permissions(
        dir.join("run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let config = dir.join("herd.conf");
    // What herd.socket listens on, where the test may create it.
    assert_eq!(value(&socket, "ListenStream"), "/run/herd-www.sock");
    let www = dir.join("herd-www.sock");
    let notify_path = dir.join("notify.sock");
    let mut notify = NotifySocket::bind(&notify_path);

    // Herd::start_with writes the same file again, as herd.conf in `dir`.
    std::fs::write(&config, support::expand(&config_text, &dir)).unwrap();
    let (code, out, err) = output_within(
        &mut command_line(&service, "ExecStartPre", &root, &config),
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "ExecStartPre: {out}{err}");

    let start = command_line(&service, "ExecStart", &root, &config);
    let mut herd = Herd::start_with(dir, &config_text, |_| {
        let mut cmd = Command::new(activate);
        cmd.arg(format!("--listen={}", www.display()))
            .arg(format!("--fdname={}", value(&socket, "FileDescriptorName")))
            // The tool passes on only the variables it is told to.
            .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
            .arg(start.get_program())
            .args(start.get_args());
        cmd
    });
    // systemd-socket-activate listens, and the first connection execs herd
    // in its process: the request waits in the backlog and is served.
    let www = www.to_str().unwrap().to_string();
    let reply = wait_for("the activating request", Duration::from_secs(30), || {
        fcgi::try_get(&www, "/", Duration::from_secs(30)).ok()
    });
    assert_eq!(reply.status(), 200, "{}", reply.text());
    assert!(reply.body().starts_with("gen=1 pid="), "{}", reply.body());
    let ready = notify.wait("READY=1", Duration::from_secs(20), |m| m.has("READY=1"));
    assert_eq!(
        ready.pid,
        Some(herd.pid()),
        "READY=1 must come from the main pid"
    );

    // herd ctl as the unit's comments and ExecReload= use it.
    let bin = root.join("usr/bin/herd");
    let (code, out, err) = output_within(
        Command::new(&bin)
            .args(["ctl", "-c"])
            .arg(&config)
            .arg("status"),
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "herd ctl status: {out}{err}");
    assert!(out.contains("www"), "{out}");
    let (code, out, err) = output_within(
        &mut command_line(&service, "ExecReload", &root, &config),
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "ExecReload: {out}{err}");

    // systemctl stop: KillSignal= to the main pid, within TimeoutStopSec=.
    let workers = herd.worker_pids();
    assert!(!workers.is_empty());
    assert_eq!(value(&service, "KillSignal"), "SIGQUIT");
    herd.signal(libc::SIGQUIT);
    assert_eq!(
        herd.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        herd.log_text()
    );
    notify.wait("STOPPING=1", Duration::from_secs(5), |m| {
        m.has("STOPPING=1")
    });
    for pid in workers {
        wait_for(
            "the workers to exit with herd",
            Duration::from_secs(10),
            || (!alive(pid)).then_some(()),
        );
    }
    assert!(
        !herd.dir.join("run/herd.pid").exists(),
        "herd left its pid file"
    );
}
