//! Interop: worker programs no one here wrote — php-cgi, Perl `FCGI`,
//! `FCGI::ProcManager`, a libfcgi C program, flup's threaded and forking
//! servers, Go's `net/http/fcgi` — and herd's own example app, each
//! started unchanged under herd behind real nginx. Every row: the workers pass the readiness gate and
//! serve; a worker with slots serves that many requests at once; a forced
//! reload under load fails no request and leaves only the new generation
//! serving; a graceful stop (SIGQUIT) fails no request in flight; and no
//! process the workers started outlives herd. How each library answers the
//! readiness probe is in `contrib/interop/PROBES.md`.
//!
//! The fixtures are in `tests/interop/`; a missing interpreter, library or
//! compiler fails the row (`contrib/test-all.sh` installs them).

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::nginx::{self, Nginx};
use support::{Dir, Herd, procfs, user_line, wait_for};

/// Workers per pool: two, so that a rollout retires one while the other serves.
const WORKERS: usize = 2;
/// The longest one request through nginx may take before it counts as failed.
const LIMIT: Duration = Duration::from_secs(10);

/// One row of the matrix: a worker program and how herd runs it.
struct Program {
    /// How its bodies begin: `lib=<name> ` (herd's example app, written
    /// before this test, says `gen=` first).
    lib: &'static str,
    /// The pool lines that start it (`command`, `args`, `env[]`, ...).
    pool: String,
    /// Requests one worker serves at once: its processes, for a forking
    /// program that keeps one connection per process.
    slots: usize,
    /// The processes a worker's slots are spread over: its slots for a
    /// forking program, 1 for one that serves them side by side in one
    /// process (goroutines).
    processes: usize,
}

// ---- the rows -----------------------------------------------------------

#[test]
fn php_cgi() {
    matrix_row(|_| Program {
        lib: "lib=php ",
        pool: format!(
            "command = {}\nenv[PHP_FCGI_MAX_REQUESTS] = 0\n",
            php_cgi_binary().display()
        ),
        slots: 1,
        processes: 1,
    });
}

/// php-cgi forking PHP_FCGI_CHILDREN children: one worker, and its
/// `FCGI_MAX_CONNS` answer (the children's count) says how many slots.
#[test]
fn php_cgi_with_children_slots_from_fcgi_max_conns() {
    matrix_row(|_| Program {
        lib: "lib=php ",
        pool: format!(
            "command = {}\nenv[PHP_FCGI_MAX_REQUESTS] = 0\nenv[PHP_FCGI_CHILDREN] = 2\n",
            php_cgi_binary().display()
        ),
        slots: 2,
        processes: 2,
    });
}

#[test]
fn perl_fcgi() {
    matrix_row(|dir| Program {
        lib: "lib=perl-fcgi ",
        pool: format!(
            "command = {}\nargs = {}\n",
            perl_with(&["FCGI"]).display(),
            fixture(dir, "perl_fcgi.pl", include_str!("interop/perl_fcgi.pl")).display()
        ),
        slots: 1,
        processes: 1,
    });
}

/// An FCGI::ProcManager script with pm_manage: one worker is the manager
/// and its two servers; FCGI::ProcManager answers nothing about them (each
/// server says `FCGI_MAX_CONNS` 1), so the pool says `worker.slots`.
#[test]
fn fcgi_procmanager_with_worker_slots() {
    matrix_row(|dir| Program {
        lib: "lib=procmanager ",
        pool: format!(
            "command = {}\nargs = {}\nworker.slots = 2\n",
            perl_with(&["FCGI", "FCGI::ProcManager"]).display(),
            fixture(
                dir,
                "procmanager.pl",
                include_str!("interop/procmanager.pl")
            )
            .display()
        ),
        slots: 2,
        processes: 2,
    });
}

#[test]
fn libfcgi_c() {
    matrix_row(|dir| Program {
        lib: "lib=libfcgi ",
        pool: format!("command = {}\n", build_libfcgi_app(dir).display()),
        slots: 1,
        processes: 1,
    });
}

#[test]
fn flup_threaded() {
    matrix_row(|dir| flup(dir, ""));
}

#[test]
fn flup_forking() {
    matrix_row(|dir| flup(dir, " fork"));
}

/// Go's standard library (`net/http/fcgi`): one process serves each
/// request in a goroutine, as many at once as come. Its `FCGI_GET_VALUES`
/// answer names only `FCGI_MPXS_CONNS`, so the pool says `worker.slots`.
#[test]
fn go_net_http_fcgi_with_worker_slots() {
    matrix_row(|dir| Program {
        lib: "lib=go ",
        pool: format!(
            "command = {}\nworker.slots = 2\n",
            build_go_app(dir).display()
        ),
        slots: 2,
        processes: 1,
    });
}

#[test]
fn herd_example_app() {
    matrix_row(|_| Program {
        lib: "gen=",
        pool: "command = {herd}\nargs = example-app\n".into(),
        slots: 1,
        processes: 1,
    });
}

// ---- a CGI application through fcgiwrap -----------------------------------

/// fcgiwrap (Debian's, on libfcgi), the wrapper nginx users put in front of
/// CGI programs, with `-c 2`: one worker is fcgiwrap and two preforked
/// children on its socket, so `worker.slots = 2`. Behind it git's own
/// `git-http-backend`, a program no one here wrote either: a repository is
/// cloned and pushed to through nginx and herd, cloned over and over while
/// herd reloads (none fails, and the new generation serves once the
/// rollout is done), and nothing fcgiwrap forked outlives a graceful stop.
#[test]
fn git_over_http_through_fcgiwrap() {
    let fcgiwrap = support::installed("/usr/sbin/fcgiwrap", "fcgiwrap");
    let backend = git_http_backend();
    let dir = Dir::new();
    let trace = Trace {
        dir: dir.path().to_path_buf(),
        marker: format!("HERD_INTEROP={}", dir.path().display()),
    };
    let _reaper = Reaper(trace.clone());
    let repos = dir.join("repos");
    let seed = dir.join("seed");
    git(
        dir.path(),
        &["init", "--quiet", "--bare", "-b", "main", "repos/app.git"],
    );
    git(
        dir.path(),
        &[
            "--git-dir",
            "repos/app.git",
            "config",
            "http.receivepack",
            "true",
        ],
    );
    git(dir.path(), &["init", "--quiet", "-b", "main", "seed"]);
    fs::write(seed.join("README"), "first\n").unwrap();
    git(&seed, &["add", "README"]);
    git(&seed, &["commit", "--quiet", "-m", "first"]);
    git(&seed, &["push", "--quiet", "../repos/app.git", "main"]);
    if support::is_root() {
        // fcgiwrap runs git as nobody, which must own what it pushes to
        // (and git serves only repositories their reader owns).
        chown_tree(&repos, "nobody");
    }

    let program = Program {
        lib: "",
        pool: format!(
            "command = {}\nargs = -c 2\nworker.slots = 2\n",
            fcgiwrap.display()
        ),
        slots: 2,
        processes: 2,
    };
    let port = support::free_port();
    let herd = Herd::start_in(dir, &config(port, &program));
    herd.wait_ready(WORKERS);
    let ctl_sock = herd.dir.join("ctl.sock");
    let location = format!(
        "location ~ ^/git(/.*) {{\n include /etc/nginx/fastcgi_params;\n\
         fastcgi_param SCRIPT_FILENAME {};\n fastcgi_param PATH_INFO $1;\n\
         fastcgi_param GIT_PROJECT_ROOT {};\n fastcgi_param GIT_HTTP_EXPORT_ALL 1;\n\
         fastcgi_param REMOTE_USER tester;\n client_max_body_size 0;\n\
         fastcgi_keep_conn on;\n fastcgi_pass herd_app;\n}}",
        backend.display(),
        repos.display()
    );
    let nginx = Nginx::start(herd.dir.path(), &upstream(port), &location);
    let url = format!("http://127.0.0.1:{}/git/app.git", nginx.port);

    // Clone, commit, push: the push reaches the repository.
    git(herd.dir.path(), &["clone", "--quiet", &url, "work"]);
    let work = herd.dir.join("work");
    assert_eq!(fs::read_to_string(work.join("README")).unwrap(), "first\n");
    fs::write(work.join("README"), "second\n").unwrap();
    git(&work, &["commit", "--quiet", "-am", "second"]);
    git(&work, &["push", "--quiet", "origin", "main"]);
    let pushed = git(
        herd.dir.path(),
        &[
            "--git-dir",
            "repos/app.git",
            "log",
            "-1",
            "--format=%s",
            "main",
        ],
    );
    assert_eq!(pushed.trim(), "second");

    // Clones, one after another, through a forced reload: it starts once
    // a clone is done, and three more follow it.
    let cloned = AtomicUsize::new(0);
    let reloaded = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let mut after_reload = 0;
            while after_reload < 3 {
                if reloaded.load(Ordering::SeqCst) {
                    after_reload += 1;
                }
                let n = cloned.load(Ordering::SeqCst);
                let to = format!("clone{n}");
                git(herd.dir.path(), &["clone", "--quiet", &url, &to]);
                let got = fs::read_to_string(herd.dir.join(&to).join("README")).unwrap();
                assert_eq!(got, "second\n", "clone {n}");
                cloned.fetch_add(1, Ordering::SeqCst);
            }
        });
        wait_for("a first clone", Duration::from_secs(30), || {
            (cloned.load(Ordering::SeqCst) > 0).then_some(())
        });
        let (code, out, err) = herd.ctl(&ctl_sock, &["reload", "--force", "--wait"]);
        assert_eq!(code, 0, "reload --force --wait: {out}{err}");
        reloaded.store(true, Ordering::SeqCst);
    });
    wait_for("generation 1 to leave", Duration::from_secs(20), || {
        let status = herd.ctl_status(&ctl_sock);
        status["pools"][0]["processes"]
            .as_array()?
            .iter()
            .all(|p| p["generation"] == 2)
            .then_some(())
    });

    let mut herd = herd;
    herd.signal(libc::SIGQUIT);
    assert_eq!(
        herd.wait_exit(Duration::from_secs(30)),
        Some(0),
        "herd's exit after SIGQUIT"
    );
    nothing_left(&trace, &[]);
}

/// `git-http-backend`, where this machine's git keeps its helpers.
fn git_http_backend() -> PathBuf {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git is not installed: run contrib/test-all.sh, which installs it");
    let backend = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("git-http-backend");
    assert!(backend.exists(), "no {}", backend.display());
    backend
}

/// Runs git in `cwd` with no user or system config, failing the test if it
/// fails or takes over 30 s; returns its output.
fn git(cwd: &Path, args: &[&str]) -> String {
    let mut child = Command::new("git")
        .args([
            "-c",
            "user.name=herd test",
            "-c",
            "user.email=test@localhost",
        ])
        .args(args)
        .current_dir(cwd)
        .env("HOME", cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("git is not installed: run contrib/test-all.sh, which installs it");
    let mut status = None;
    let waited = wait_for_or_none(Duration::from_secs(30), || match child.try_wait() {
        Ok(Some(s)) => {
            status = Some(s);
            Ok(())
        }
        _ => Err(()),
    });
    if waited.is_err() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "git {args:?} in {} ({}): {}{}",
        cwd.display(),
        status.map_or("still running after 30 s".into(), |s| s.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Gives `path` and everything under it to `user`.
fn chown_tree(path: &Path, user: &str) {
    let status = Command::new("chown")
        .args(["-R", user])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown -R {user} {}", path.display());
}

// ---- one row --------------------------------------------------------------

fn matrix_row(setup: impl FnOnce(&Dir) -> Program) {
    let dir = Dir::new();
    dir.write("app.php", include_str!("interop/app.php"));
    let program = setup(&dir);
    let trace = Trace {
        dir: dir.path().to_path_buf(),
        marker: format!("HERD_INTEROP={}", dir.path().display()),
    };
    let _reaper = Reaper(trace.clone());
    let port = support::free_port();
    let herd = Herd::start_in(dir, &config(port, &program));
    herd.wait_ready(WORKERS);
    let ctl_sock = herd.dir.join("ctl.sock");
    wait_for("the control socket", Duration::from_secs(10), || {
        (herd.ctl(&ctl_sock, &["status", "--json"]).0 == 0).then_some(())
    });
    let nginx = Nginx::start(herd.dir.path(), &upstream(port), &location(&herd.dir));

    let mut seen = identify(serves(&nginx, &program));
    seen.extend(identify(serves_slots_at_once(&nginx, &program)));
    seen.extend(identify(reload_under_load(
        &herd, &ctl_sock, &nginx, &program,
    )));
    let mut herd = herd;
    seen.extend(identify(graceful_stop(
        &mut herd, &ctl_sock, &trace, &nginx, &program,
    )));
    nothing_left(&trace, &seen);
}

/// Sequential requests are served by generation 1.
fn serves(nginx: &Nginx, program: &Program) -> Vec<u32> {
    (0..6)
        .map(|i| {
            let r = answer(nginx.try_get("/?ms=0", LIMIT), program.lib)
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(r.generation, 1, "request {i}: {r:?}");
            r.pid
        })
        .collect()
}

/// As many slow requests as the pool has slots run at once, each in a
/// process of its own.
fn serves_slots_at_once(nginx: &Nginx, program: &Program) -> Vec<u32> {
    const MS: u64 = 800;
    let n = WORKERS * program.slots;
    let began = Instant::now();
    let replies: Vec<Result<Answer, String>> = thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| answer(nginx.try_get(&format!("/?ms={MS}"), LIMIT), program.lib)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = began.elapsed();
    let replies: Vec<Answer> = replies
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{n} requests at once: {e}")))
        .collect();
    let mut pids: Vec<u32> = replies.iter().map(|r| r.pid).collect();
    pids.sort();
    pids.dedup();
    let processes = WORKERS * program.processes;
    assert_eq!(
        pids.len(),
        processes,
        "{n} slots ({WORKERS} workers of {} slots): {n} requests at once ran in {processes} processes: {replies:?}",
        program.slots
    );
    assert!(
        took < Duration::from_millis(MS * 2 - 100),
        "{n} requests of {MS} ms on {n} slots ran side by side, not queued: {took:?}"
    );
    pids
}

/// `herd ctl reload --force --wait` while three clients loop: no request
/// fails, only generation 2 answers once the rollout is done, and every
/// generation-1 process exits.
fn reload_under_load(herd: &Herd, ctl_sock: &Path, nginx: &Nginx, program: &Program) -> Vec<u32> {
    let port = nginx.port;
    let lib = program.lib;
    let clients = (0..3)
        .map(|client| {
            move || {
                let start = Instant::now();
                let outcome = answer(nginx::try_get(port, "/?ms=20", LIMIT), lib);
                let failed = outcome.is_err();
                ((client, start, outcome), failed)
            }
        })
        .collect();
    let began = Instant::now();
    let load = support::load::Load::spawn(clients, Duration::from_secs(60), 100_000);
    let each = |n: usize, since: Instant| {
        wait_for(
            &format!("3 clients with {n} answers each"),
            Duration::from_secs(20),
            || {
                let s = load.snapshot();
                (0..3)
                    .all(|c| s.iter().filter(|x| x.0 == c && x.1 >= since).count() >= n)
                    .then_some(())
            },
        )
    };
    each(5, began);
    let (code, out, err) = herd.ctl(ctl_sock, &["reload", "--force", "--wait"]);
    let done = Instant::now();
    assert_eq!(code, 0, "reload --force --wait: {out}{err}");
    each(10, done);
    let samples = load.finish();

    let failed: Vec<_> = samples.iter().filter(|s| s.2.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed over the reload: {failed:#?}",
        failed.len(),
        samples.len()
    );
    let answers: Vec<(Instant, Answer)> = samples
        .into_iter()
        .map(|(_, start, r)| (start, r.unwrap()))
        .collect();
    let stale: Vec<_> = answers
        .iter()
        .filter(|(start, r)| *start > done && r.generation != 2)
        .collect();
    assert!(
        stale.is_empty(),
        "answers after the rollout from an old generation: {stale:#?}"
    );
    let old: Vec<u32> = answers
        .iter()
        .filter(|(_, r)| r.generation == 1)
        .map(|(_, r)| r.pid)
        .collect();
    wait_for(
        &format!("the generation-1 processes {old:?} to exit"),
        Duration::from_secs(20),
        || old.iter().all(|&p| !support::alive(p)).then_some(()),
    );
    answers.into_iter().map(|(_, r)| r.pid).collect()
}

/// SIGQUIT while slow requests are in flight and one more than the slots
/// waits in herd's queue: each is answered, then herd exits 0.
fn graceful_stop(
    herd: &mut Herd,
    ctl_sock: &Path,
    trace: &Trace,
    nginx: &Nginx,
    program: &Program,
) -> Vec<u32> {
    let n = WORKERS * program.slots + 1;
    let port = nginx.port;
    let lib = program.lib;
    let in_flight: Vec<_> = (0..n)
        .map(|_| thread::spawn(move || answer(nginx::try_get(port, "/?ms=1500", LIMIT), lib)))
        .collect();
    // Every request has reached herd before the signal (one sent later is
    // refused, as it should be): herd has every slot busy and the last
    // request in its queue, and a worker process serving one sleeps in
    // nanosleep (idle ones wait in accept or poll). A Go process waits in
    // futex or epoll whether its goroutines sleep or not: for it herd's
    // count alone says so.
    let sleepers = if program.processes == program.slots {
        n - 1
    } else {
        0
    };
    wait_for(
        "the slow requests to reach the workers and herd's queue",
        Duration::from_secs(5),
        || {
            let sleeping = trace
                .processes()
                .into_iter()
                .filter(|&p| sleeping(p))
                .count();
            let pool = &herd.ctl_status(ctl_sock)["pools"][0];
            let busy = pool["active processes"].as_u64().unwrap_or(0);
            let queued = pool["listen queue"].as_u64().unwrap_or(0);
            (sleeping >= sleepers && busy == (n - 1) as u64 && queued >= 1).then_some(())
        },
    );
    herd.signal(libc::SIGQUIT);
    let answers: Vec<Answer> = in_flight
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap()
                .unwrap_or_else(|e| panic!("a request in flight at SIGQUIT failed: {e}"))
        })
        .collect();
    assert!(answers.iter().all(|a| a.generation == 2), "{answers:?}");
    let code = herd.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "herd's exit after SIGQUIT");
    answers.into_iter().map(|a| a.pid).collect()
}

/// No process the workers started is left: none of the row's (see
/// [`Trace`]), and none of the processes that answered.
fn nothing_left(trace: &Trace, seen: &[(u32, u64)]) {
    let outcome = wait_for_or_none(Duration::from_secs(15), || {
        let mut left: Vec<u32> = trace.processes();
        left.extend(
            seen.iter()
                .filter(|&&(pid, start)| started(pid) == Some(start))
                .map(|&(pid, _)| pid),
        );
        left.sort();
        left.dedup();
        left.is_empty().then_some(()).ok_or(left)
    });
    if let Err(left) = outcome {
        let described: Vec<String> = left.iter().map(|&p| describe(p)).collect();
        panic!("processes outlived herd: {described:#?}");
    }
}

// ---- config and nginx -----------------------------------------------------

fn config(port: u16, program: &Program) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\ncontrol.listen = {{dir}}/ctl.sock\n\
         [app]\nlisten = 127.0.0.1:{port}\npm = static\npm.max_children = {WORKERS}\n\
         rollout.surge = 1\nworker.kill_timeout = 3s\nchdir = {{dir}}\nenv[HERD_INTEROP] = {{dir}}\n\
         {user}{pool}",
        user = user_line(),
        pool = program.pool
    )
}

fn upstream(port: u16) -> String {
    format!("upstream herd_app {{\n server 127.0.0.1:{port};\n keepalive 8;\n}}")
}

fn location(dir: &Dir) -> String {
    format!(
        "location / {{\n include /etc/nginx/fastcgi_params;\n\
         fastcgi_param SCRIPT_FILENAME {};\n fastcgi_keep_conn on;\n\
         fastcgi_pass herd_app;\n}}",
        dir.join("app.php").display()
    )
}

// ---- answers --------------------------------------------------------------

/// A worker's answer: `lib=<name> pid=<pid> gen=<generation>`.
#[derive(Clone, Debug)]
struct Answer {
    pid: u32,
    generation: u32,
}

/// A 200 from the program's library, or what went wrong.
fn answer(got: Result<(u16, String), String>, lib: &str) -> Result<Answer, String> {
    let (status, body) = got?;
    let (pid, generation) = (support::field(&body, "pid"), support::field(&body, "gen"));
    match (status, pid, generation) {
        (200, Some(pid), Some(generation)) if body.starts_with(lib) => {
            Ok(Answer { pid, generation })
        }
        _ => Err(format!("status {status}, body {body:?}")),
    }
}

// ---- the fixtures and their tools -----------------------------------------

/// Writes a fixture into the test's directory (workers run as `nobody`
/// and may not read the source tree).
fn fixture(dir: &Dir, name: &str, text: &str) -> PathBuf {
    dir.write(name, text)
}

fn php_cgi_binary() -> PathBuf {
    support::php_cgi()
        .expect("php-cgi is not installed: run contrib/test-all.sh, which installs it (php8.2-cgi)")
}

/// `/usr/bin/perl`, once it loads `modules`.
fn perl_with(modules: &[&str]) -> PathBuf {
    let perl = support::installed("/usr/bin/perl", "perl");
    for m in modules {
        let ok = Command::new(&perl)
            .arg(format!("-M{m}"))
            .arg("-e1")
            .status()
            .is_ok_and(|s| s.success());
        let package = match *m {
            "FCGI" => "libfcgi-perl",
            _ => "libfcgi-procmanager-perl",
        };
        assert!(
            ok,
            "perl cannot load {m}: run contrib/test-all.sh, which installs {package}"
        );
    }
    perl
}

/// Builds `libfcgi_app.c` with gcc into the test's directory.
fn build_libfcgi_app(dir: &Dir) -> PathBuf {
    let src = fixture(dir, "libfcgi_app.c", include_str!("interop/libfcgi_app.c"));
    let exe = dir.join("libfcgi_app");
    let mut gcc = Command::new("gcc");
    gcc.arg("-O2").arg("-o").arg(&exe).arg(&src).arg("-lfcgi");
    built(gcc, exe, "gcc and libfcgi-dev")
}

/// Builds `go_fcgi_app.go` with Go's own toolchain into the test's
/// directory (its build cache there too).
fn build_go_app(dir: &Dir) -> PathBuf {
    let src = fixture(
        dir,
        "go_fcgi_app.go",
        include_str!("interop/go_fcgi_app.go"),
    );
    let exe = dir.join("go_fcgi_app");
    let mut go = Command::new("go");
    go.arg("build")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .env("GOCACHE", dir.join("go-cache"))
        .env("GOPATH", dir.join("go-path"))
        .env("GO111MODULE", "off");
    built(go, exe, "golang-go")
}

/// Runs `build`, a compiler writing `exe`; a missing tool or a failed
/// build fails the row, saying which package `contrib/test-all.sh`
/// installs for it.
fn built(mut build: Command, exe: PathBuf, package: &str) -> PathBuf {
    let tool = build.get_program().to_string_lossy().into_owned();
    let out = build.output().unwrap_or_else(|e| {
        panic!("{tool}: {e}: run contrib/test-all.sh, which installs {package}")
    });
    assert!(
        out.status.success(),
        "{tool} failed to build {} (run contrib/test-all.sh, which installs {package}): {}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// The flup app on the system's python3. flup comes from PyPI, installed
/// for the `python3` on PATH, perhaps under a home directory that `nobody`
/// cannot read: the package (pure Python) is copied beside the app.
fn flup(dir: &Dir, args: &str) -> Program {
    let python = support::installed("/usr/bin/python3", "python3");
    let out = Command::new("python3")
        .args([
            "-c",
            "import flup, os; print(os.path.dirname(flup.__file__))",
        ])
        .output()
        .expect("run python3");
    let package = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !package.is_empty(),
        "python3 cannot import flup: run contrib/test-all.sh, which installs it from PyPI: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = dir.join("pylib");
    copy_tree(Path::new(&package), &lib.join("flup"));
    let app = fixture(dir, "flup_app.py", include_str!("interop/flup_app.py"));
    Program {
        lib: "lib=flup ",
        pool: format!(
            "command = {}\nargs = {}{args}\nenv[PYTHONPATH] = {}\n",
            python.display(),
            app.display(),
            lib.display()
        ),
        slots: 1,
        processes: 1,
    }
}

/// Copies a directory tree of regular files, readable by everyone.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

// ---- processes ------------------------------------------------------------

/// The processes of one row. Every process its workers start, forks
/// included, has the row's directory as its working directory (`chdir`)
/// and `HERD_INTEROP` in its environment; either alone can be lost (a
/// program may chdir; FCGI::ProcManager assigns `$0`, and perl then
/// overwrites the environment block /proc shows), so a process with either
/// is the row's.
#[derive(Clone)]
struct Trace {
    dir: PathBuf,
    marker: String,
}

impl Trace {
    /// The row's live processes.
    fn processes(&self) -> Vec<u32> {
        let Ok(procs) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| (self.in_dir(pid) || self.marked(pid)) && support::alive(pid))
            .collect()
    }

    fn in_dir(&self, pid: u32) -> bool {
        // Once the row's directory is removed (the reaper runs after it),
        // /proc shows the working directory as "<dir> (deleted)".
        fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| {
            let (cwd, dir) = (cwd.to_string_lossy(), self.dir.to_string_lossy());
            cwd == dir || cwd.strip_suffix(" (deleted)") == Some(&*dir)
        })
    }

    fn marked(&self, pid: u32) -> bool {
        fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
            env.split(|&b| b == 0)
                .any(|kv| kv == self.marker.as_bytes())
        })
    }
}

/// `(pid, start time)` of each pid still running, so that a later check
/// is not fooled by a reused pid.
fn identify(pids: Vec<u32>) -> Vec<(u32, u64)> {
    pids.into_iter()
        .filter_map(|pid| Some((pid, started(pid)?)))
        .collect()
}

/// When a process started, in clock ticks since boot (field 22 of
/// /proc/<pid>/stat), if it is alive.
fn started(pid: u32) -> Option<u64> {
    if !support::alive(pid) {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at 3.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

/// Whether a thread of `pid` is blocked in nanosleep or clock_nanosleep
/// (a flup or herd worker sleeps in a thread other than the first); true
/// where /proc cannot tell (other architectures).
fn sleeping(pid: u32) -> bool {
    let sleeps: &[u64] = if cfg!(target_arch = "x86_64") {
        &[35, 230]
    } else if cfg!(target_arch = "aarch64") {
        &[101, 115]
    } else {
        return true;
    };
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        fs::read_to_string(t.path().join("syscall"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .is_some_and(|nr| sleeps.contains(&nr))
    })
}

/// `pid (ppid N): command line`, for a failure message.
fn describe(pid: u32) -> String {
    let cmd = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    format!("{pid} (ppid {:?}): {}", procfs::ppid(pid), cmd.trim())
}

/// Like [`wait_for`], but returns the last `Err` at the deadline instead
/// of panicking, so the caller can say what was left.
fn wait_for_or_none<E>(within: Duration, mut cond: impl FnMut() -> Result<(), E>) -> Result<(), E> {
    let deadline = Instant::now() + within;
    loop {
        match cond() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Kills, when the row ends (passed or failed), every process of the row
/// left, so that a failing row leaks nothing into the next.
struct Reaper(Trace);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in self.0.processes() {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}
