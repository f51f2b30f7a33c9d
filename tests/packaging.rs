//! What herd ships beside the binary, checked by the programs that read
//! it: every repository path the README, contrib/, config/ and examples/
//! name exists, and so does every file the container build copies; nginx
//! (`nginx -t`) and HAProxy (`haproxy -c`) accept their configs, `herd
//! check` the shipped herd configs, systemd (`systemd-analyze verify`)
//! the units, whose timeouts must cover herd's own defaults; logrotate
//! rotates herd's logs with the shipped snippet and herd reopens them.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::shipped::{self, read, repo, rewrite, value, values};
use support::{Dir, HERD, Herd, fcgi, herd_cmd, wait_for};

/// Where a path a document names is looked for: the repository's own
/// top-level directories (`target/` is build output and not checked).
const TOP: [&str; 6] = [
    "contrib/",
    "config/",
    "tests/",
    "src/",
    "examples/",
    "fuzz/",
];

/// The repository paths `text` names: a word starting with one of `TOP`
/// (not inside a longer path or URL), up to the first character a path
/// here does not have, without trailing punctuation.
fn named_paths(text: &str) -> Vec<String> {
    let path_char = |c: char| c.is_ascii_alphanumeric() || "_./*-".contains(c);
    let mut found = Vec::new();
    for top in TOP {
        for (at, _) in text.match_indices(top) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| path_char(c) || c == '$') {
                continue;
            }
            let rest = &text[at..];
            let end = rest.find(|c: char| !path_char(c)).unwrap_or(rest.len());
            found.push(
                rest[..end]
                    .trim_end_matches(['.', ',', ':', ';'])
                    .to_string(),
            );
        }
    }
    found
}

/// Whether `path` names something in the repository: a file or directory,
/// a glob that matches one, or a Rust program by its name (`examples/hello`
/// for `examples/hello.rs`).
fn exists(path: &str) -> bool {
    let full = repo(path);
    if path.contains('*') {
        let pattern = full.to_str().unwrap();
        return glob::glob(pattern).unwrap().any(|m| m.is_ok());
    }
    full.exists() || repo(&format!("{path}.rs")).exists()
}

/// The text files to scan: README.md and every file below contrib/,
/// config/ and examples/ (binary files and ignore-pattern lists left out).
fn documents() -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let rel = format!("{rel}/{name}");
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &rel, out);
            } else if !name.ends_with("ignore") {
                out.push(rel);
            }
        }
    }
    let mut docs = vec!["README.md".to_string()];
    for top in ["contrib", "config", "examples"] {
        walk(&repo(top), top, &mut docs);
    }
    docs
}

#[test]
fn every_repository_path_the_docs_name_exists() {
    let mut checked = 0;
    let mut missing = Vec::new();
    for doc in documents() {
        let Ok(text) = fs::read_to_string(repo(&doc)) else {
            continue; // not text (a PNG)
        };
        for path in named_paths(&text) {
            checked += 1;
            if !exists(&path) {
                missing.push(format!("{doc}: {path}"));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} paths found: the scan is broken"
    );
    assert!(
        missing.is_empty(),
        "named but not in the repository:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_path_scan_finds_what_it_must_and_skips_urls() {
    let text = "see contrib/nginx/herd.conf, (`config/php.conf`) and \
                https://example.com/src/x.rs or /usr/share/doc/herd/examples/php.conf \
                or $REPO/target/release/herd; contrib/bench/*.sh.";
    assert_eq!(
        named_paths(text),
        [
            "contrib/nginx/herd.conf",
            "contrib/bench/*.sh",
            "config/php.conf"
        ]
    );
    assert!(exists("contrib/bench/*.sh") && exists("examples/hello"));
    assert!(!exists("contrib/PRODUCTION.md") && !exists("contrib/*.nothing"));
}

/// The COPY sources of a Dockerfile stage that copies from the build
/// context (not `--from=` another stage).
fn context_sources(dockerfile: &str) -> Vec<String> {
    dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|args| !args.starts_with("--from="))
        .flat_map(|args| {
            let words: Vec<&str> = args.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_container_build_copies_only_files_that_exist() {
    let dockerfile = read("contrib/kubernetes/Dockerfile");
    let ignored: Vec<String> = read("contrib/kubernetes/Dockerfile.dockerignore")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.trim().to_string())
        .collect();
    let sources = context_sources(&dockerfile);
    assert!(
        sources.iter().any(|s| s == "contrib/kubernetes/app/"),
        "{sources:?}"
    );
    for source in &sources {
        assert!(
            source == "." || exists(source),
            "the Dockerfile copies {source}, which the repository does not have"
        );
        for pattern in &ignored {
            assert!(
                !source.starts_with(pattern.as_str()),
                "the Dockerfile copies {source}, which Dockerfile.dockerignore leaves out ({pattern})"
            );
        }
    }
    // The image installs the .deb the first stage builds with
    // contrib/deb/build.sh, from where that script puts it.
    assert!(
        dockerfile.contains("RUN contrib/deb/build.sh"),
        "{dockerfile}"
    );
    let build = read("contrib/deb/build.sh");
    assert!(build.contains("target/debian"), "build.sh's output moved");

    assert!(
        dockerfile.contains("COPY --from=build /src/target/debian/ "),
        "{dockerfile}"
    );
    // The application the warm-up and nginx's root name.
    assert!(exists("contrib/kubernetes/app/public/health.php"));
    assert!(exists("contrib/kubernetes/app/public/index.php"));
}

/// `nginx -t` on `http` (the inside of `http {}`) in `dir`, where relative
/// includes resolve; every `listen` moved to a free loopback port, since
/// nginx binds its ports to test them.
fn nginx_test(dir: &Dir, http: &str) {
    let port = support::free_port();
    let http: String = http
        .lines()
        .map(|l| match l.trim().strip_prefix("listen ") {
            Some(_) => format!("listen 127.0.0.1:{port};"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::copy("/etc/nginx/fastcgi_params", dir.join("fastcgi_params"))
        .expect("nginx's fastcgi_params (package nginx)");
    let d = dir.path().display();
    let conf = dir.write(
        "nginx.conf",
        &format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n\
             client_body_temp_path {d}/body;\nfastcgi_temp_path {d}/fastcgi;\n\
             proxy_temp_path {d}/proxy;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
             {http}\n}}\n"
        ),
    );
    let out = Command::new(support::nginx::binary())
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run nginx -t");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("test is successful") && !said.contains("[warn]"),
        "nginx -t:\n{said}\n{http}"
    );
}

#[test]
fn nginx_accepts_the_shipped_snippets() {
    let dir = Dir::new();
    fs::create_dir(dir.join("snippets")).unwrap();
    fs::copy(
        repo("contrib/nginx/herd-php.conf"),
        dir.join("snippets/herd-php.conf"),
    )
    .unwrap();
    nginx_test(&dir, &read("contrib/nginx/herd.conf"));
    // The Kubernetes pod's nginx config, as its ConfigMap has it.
    let pod = shipped::yaml_block(&read("contrib/kubernetes/deployment.yaml"), "default.conf");
    assert!(pod.contains("location = /herd-ping"), "{pod}");
    nginx_test(&Dir::new(), &pod);
}

#[test]
fn haproxy_accepts_the_shipped_config() {
    let haproxy = support::installed("/usr/sbin/haproxy", "haproxy");
    let out = Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(repo("contrib/haproxy/haproxy.cfg"))
        .output()
        .expect("run haproxy -c");
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !said.contains("WARNING"),
        "haproxy -c:\n{said}"
    );
}

#[test]
fn herd_check_accepts_the_shipped_herd_configs() {
    let dir = Dir::new();
    let pod = shipped::yaml_block(&read("contrib/kubernetes/deployment.yaml"), "herd.conf");
    for (name, path) in [
        (
            "contrib/systemd/herd.conf",
            repo("contrib/systemd/herd.conf"),
        ),
        ("deployment.yaml's herd.conf", dir.write("pod.conf", &pod)),
    ] {
        let (code, out, err) = herd_cmd(&["check", "-c", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains(": ok (1 pool(s))"), "{name}: {out}");
    }
}

#[test]
fn the_units_pass_systemd_analyze_verify_and_cover_herds_timeouts() {
    let Some(tool) = shipped::systemd_analyze() else {
        return;
    };
    // verify checks ExecStart='s binary: this herd stands in for /usr/bin/herd.
    let dir = Dir::new();
    let units: Vec<_> = ["herd.service", "herd.socket"]
        .iter()
        .map(|unit| {
            let text = read(&format!("contrib/systemd/{unit}"));
            dir.write(unit, &text.replace("/usr/bin/herd", HERD))
        })
        .collect();
    shipped::verify_units(&tool, &units);

    let service = read("contrib/systemd/herd.service");
    // systemd bounds `ExecReload=herd ctl reload --wait` by TimeoutStartSec=,
    // and herd gives a rollout rollout.timeout before refusing it.
    let start = shipped::timespan(&tool, value(&service, "TimeoutStartSec"));
    let rollout = shipped::default_secs("rollout.timeout");
    let first_start = shipped::default_secs("worker.start_timeout");
    assert!(
        start > rollout && start > first_start,
        "TimeoutStartSec={start}s"
    );
    assert!(value(&service, "ExecReload").ends_with("reload --wait"));
    // A graceful stop: depool delay, drain, the workers' kill timeout, 2 s.
    let stop = shipped::timespan(&tool, value(&service, "TimeoutStopSec"));
    let drain = shipped::default_secs("shutdown.depool_delay")
        + shipped::default_secs("process_control_timeout")
        + shipped::default_secs("worker.kill_timeout")
        + 2.0;
    assert!(
        stop > drain,
        "TimeoutStopSec={stop}s, a graceful stop takes up to {drain}s"
    );
    assert_eq!(value(&service, "KillSignal"), "SIGQUIT");
}

#[test]
fn every_systemd_socket_the_shipped_config_names_comes_with_the_service() {
    let service = read("contrib/systemd/herd.service");
    let config = read("contrib/systemd/herd.conf");
    let names: Vec<&str> = values(&config, "listen")
        .into_iter()
        .filter_map(|l| l.strip_prefix("systemd:"))
        .collect();
    assert_eq!(names, ["www"], "{config}");
    let socket = read("contrib/systemd/herd.socket");
    assert_eq!(value(&socket, "FileDescriptorName"), "www");
    assert_eq!(value(&socket, "Service"), "herd.service");
    // Starting herd.service starts herd.socket first, and enabling it
    // enables the socket.
    let wants = values(&service, "Wants").join(" ");
    let after = values(&service, "After").join(" ");
    assert!(
        wants.split_whitespace().any(|u| u == "herd.socket"),
        "Wants={wants}"
    );
    assert!(
        after.split_whitespace().any(|u| u == "herd.socket"),
        "After={after}"
    );
    assert_eq!(value(&service, "Also"), "herd.socket");
}

#[test]
fn logrotate_rotates_herds_logs_and_herd_reopens_them() {
    let logrotate = support::installed("/usr/sbin/logrotate", "logrotate");
    let addr = format!("127.0.0.1:{}", support::free_port());
    let dir = Dir::new();
    fs::create_dir(dir.join("log")).unwrap();
    let herd = Herd::start_in(
        dir,
        &format!(
            "[global]\npid = {{dir}}/herd.pid   ; herd ctl finds herd.sock beside it\n\
             error_log = {{dir}}/herd.log\n\
             [app]\nlisten = {addr}\npm = static\npm.max_children = 1\n\
             command = {{herd}}\nargs = example-app\naccess.log = {{dir}}/log/app.access.log\n{}",
            support::user_line()
        ),
    );
    herd.wait_ready(1);
    let access = herd.dir.join("log/app.access.log");
    assert_eq!(fcgi::get(&addr, "/before").status(), 200);
    wait_for("the first access log line", Duration::from_secs(10), || {
        fs::read_to_string(&access)
            .ok()
            .filter(|t| t.contains("/before"))
    });

    let d = herd.dir.path().display();
    let conf = rewrite(
        "contrib/logrotate/herd",
        &read("contrib/logrotate/herd"),
        &[
            (
                "/var/log/herd.log /var/log/herd/*.log {",
                format!("{d}/herd.log {d}/log/*.log {{"),
            ),
            ("/etc/herd/herd.conf", herd.config.display().to_string()),
        ],
    );
    let conf = herd.dir.write("logrotate.conf", &conf);
    let out = Command::new(logrotate)
        .arg("--force")
        .arg("--state")
        .arg(herd.dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("run logrotate");
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // delaycompress: the first rotation leaves .1 uncompressed.
    let rotated = fs::read_to_string(herd.dir.join("herd.log.1")).unwrap();
    assert!(rotated.contains("worker ready"), "{rotated}");
    herd.wait_log("reopened", 1, Duration::from_secs(10));
    assert_eq!(fcgi::get(&addr, "/after").status(), 200);
    let new = wait_for(
        "a line in the new access log",
        Duration::from_secs(10),
        || {
            fs::read_to_string(&access)
                .ok()
                .filter(|t| t.contains("/after"))
        },
    );
    assert!(!new.contains("/before"), "{new}");
    let old = fs::read_to_string(herd.dir.join("log/app.access.log.1")).unwrap();
    assert!(old.contains("/before") && !old.contains("/after"), "{old}");
    assert!(herd.running());
}
