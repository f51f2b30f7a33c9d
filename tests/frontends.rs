//! FastCGI clients other than nginx, in front of herd's PHP engines:
//! Apache httpd's mod_proxy_fcgi with the config Debian's php8.2-fpm
//! package ships (`/etc/apache2/conf-available/php8.2-fpm.conf`, its socket
//! path pointed at herd's), and HAProxy's own FastCGI client (`fcgi-app`),
//! which asks for `FCGI_GET_VALUES`, keeps its connections and sends several
//! requests on one; lighttpd's mod_fastcgi and Caddy's php_fastcgi.
//!
//! Apache writes a request's stdin after its params and reads the answer
//! after that, and it names the script `proxy:fcgi://localhost/<path>`
//! unless told `ProxyFCGIBackendType GENERIC`; php-fpm reads that form,
//! php-cgi does not.

mod support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::haproxy::HaProxy;
use support::nginx;
use support::{Dir, Herd, user_line, wait_for};

/// The script every request runs: what PHP made of the request.
const SCRIPT: &str = "<?php header('Content-Type: text/plain'); \
    echo 'script=', $_SERVER['SCRIPT_FILENAME'], ' info=', $_SERVER['PATH_INFO'] ?? '-', \
    ' body=', strlen(file_get_contents('php://input')), ' sapi=', PHP_SAPI;";

/// Debian's Apache config for php-fpm, as its package installs it.
const DEBIAN_CONF: &str = "/etc/apache2/conf-available/php8.2-fpm.conf";

#[test]
fn php_fpm_engine_behind_debian_s_apache_config() {
    let (dir, herd) = herd_with(&support::php_fpm::binary().display().to_string());
    let apache = Apache::start(&dir, "");
    let (status, body) = apache.request("GET", "/index.php", b"");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("script={}", dir.join("www/index.php").display())),
        "{body}"
    );
    assert!(body.ends_with("sapi=fpm-fcgi"), "{body}");
    // php-fpm splits the path info off Apache's proxy path.
    let (status, body) = apache.request("GET", "/index.php/extra/path", b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(" info=/extra/path "), "{body}");
    // A body arrives whole.
    let (status, body) = apache.request("POST", "/index.php", &[b'x'; 100_000]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(" body=100000 "), "{body}");
    // No such script: php-fpm's 404, not a broken connection.
    let (status, _) = apache.request("GET", "/missing.php", b"");
    assert_eq!(status, 404, "{}", apache.errors());
    drop(herd);
}

/// php-cgi reads no file at Apache's `proxy:fcgi://` path: herd answers 403
/// saying what to set, and Apache gets that 403 even while it is still
/// sending the request's body (herd reads it to the end before it closes;
/// it once closed at once and Apache answered 503, "Broken pipe").
#[test]
fn php_cgi_engine_behind_apache_is_told_what_to_set_then_serves() {
    let (dir, herd) = herd_with(&format!(
        "{}\nphp.group_size = 2",
        support::installed("/usr/bin/php-cgi8.2", "php8.2-cgi").display()
    ));
    let apache = Apache::start(&dir, "");
    for _ in 0..5 {
        let (status, body) = apache.request("GET", "/index.php", b"");
        assert_eq!(status, 403, "{body}\n{}", apache.errors());
        let (status, body) = apache.request("POST", "/index.php", &[b'x'; 300_000]);
        assert_eq!(status, 403, "{body}\n{}", apache.errors());
    }
    assert!(
        !apache.errors().contains("Broken pipe"),
        "{}",
        apache.errors()
    );
    let warned = herd.log_lines("ProxyFCGIBackendType GENERIC");
    assert!(!warned.is_empty(), "{}", herd.log_text());
    drop(apache);

    // Told, Apache sends the file's own path, and php-cgi serves it.
    let apache = Apache::start(&dir, "ProxyFCGIBackendType GENERIC\n");
    let (status, body) = apache.request("GET", "/index.php/extra/path", b"");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("script={}", dir.join("www/index.php").display())),
        "{body}"
    );
    assert!(body.contains(" info=/extra/path "), "{body}");
    assert!(body.ends_with("sapi=cgi-fcgi"), "{body}");
    let (status, body) = apache.request("POST", "/index.php", &[b'x'; 300_000]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(" body=300000 "), "{body}");
    drop(herd);
}

/// HAProxy's fcgi-app, with `get-values`, `keep-conn` and `mpxs-conns`:
/// pages, path info and a body arrive as through nginx, and eight requests
/// at once on two PHP processes all get their answer, herd queueing what
/// the children cannot take yet.
#[test]
fn php_fpm_engine_behind_haproxy_s_fastcgi_client() {
    let (dir, herd) = herd_with(&support::php_fpm::binary().display().to_string());
    std::fs::write(
        dir.join("www/sleep.php"),
        "<?php usleep(300000); echo getmypid();",
    )
    .unwrap();
    let haproxy = start_haproxy(&dir);
    let (status, body) = http_request(haproxy.port, "GET", "/index.php/extra/path", b"");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("script={}", dir.join("www/index.php").display())),
        "{body}"
    );
    assert!(body.contains(" info=/extra/path "), "{body}");
    let (status, body) = http_request(haproxy.port, "POST", "/index.php", &[b'x'; 100_000]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(" body=100000 "), "{body}");
    let port = haproxy.port;
    let at_once: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || nginx::try_get(port, "/sleep.php", Duration::from_secs(30)))
        })
        .collect();
    let answers: Vec<_> = at_once.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        answers.iter().all(|a| matches!(a, Ok((200, _)))),
        "{answers:?}\n{}",
        haproxy.log_text()
    );
    let pids: std::collections::BTreeSet<_> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok()?.1.trim().parse::<u32>().ok())
        .collect();
    assert!(pids.len() <= 2, "two PHP processes served them: {pids:?}");
    assert!(herd.warnings().is_empty(), "{:?}", herd.warnings());
}

/// lighttpd's mod_fastcgi and Caddy's php_fastcgi, each as its
/// documentation writes the PHP block, in front of the same herd: pages,
/// path info and bodies up to 1 MB.
#[test]
fn php_fpm_engine_behind_lighttpd_and_caddy() {
    let (dir, herd) = herd_with(&support::php_fpm::binary().display().to_string());
    let www = dir.join("www");
    let socket = dir.join("herd.sock");
    let lighttpd_port = support::free_port();
    let lighttpd_conf = dir.join("lighttpd.conf");
    std::fs::write(
        &lighttpd_conf,
        format!(
            "server.document-root = \"{www}\"\nserver.bind = \"127.0.0.1\"\n\
             server.port = {lighttpd_port}\nserver.errorlog = \"{dir}/lighttpd-error.log\"\n\
             server.modules = ( \"mod_fastcgi\" )\nindex-file.names = ( \"index.php\" )\n\
             fastcgi.server = ( \".php\" => (( \"socket\" => \"{socket}\", \
             \"check-local\" => \"enable\", \"broken-scriptfilename\" => \"enable\" )) )\n",
            www = www.display(),
            dir = dir.display(),
            socket = socket.display(),
        ),
    )
    .unwrap();
    let mut lighttpd = Command::new(support::installed("/usr/sbin/lighttpd", "lighttpd"));
    lighttpd.arg("-D").arg("-f").arg(&lighttpd_conf);
    let caddy_port = support::free_port();
    let caddyfile = dir.join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {dir}/caddy\n}}\n\
             http://:{caddy_port} {{\n\tbind 127.0.0.1\n\troot * {www}\n\
             \tphp_fastcgi unix/{socket}\n}}\n",
            www = www.display(),
            dir = dir.display(),
            socket = socket.display(),
        ),
    )
    .unwrap();
    let mut caddy = Command::new(support::installed("/usr/bin/caddy", "caddy"));
    caddy
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir);
    for (name, command, port) in [
        ("lighttpd", lighttpd, lighttpd_port),
        ("caddy", caddy, caddy_port),
    ] {
        let front = Front::start(name, command, port, &dir);
        let (status, body) = http_request(port, "GET", "/index.php/extra/path", b"");
        assert_eq!(status, 200, "{name}: {status} {body}\n{}", front.log());
        assert!(
            body.contains(&format!("script={}", www.join("index.php").display())),
            "{name}: {body}"
        );
        assert!(body.contains(" info=/extra/path "), "{name}: {body}");
        for size in [8_000, 65_000, 1_000_000] {
            let (status, body) = http_request(port, "POST", "/index.php", &vec![b'x'; size]);
            assert_eq!(status, 200, "{name}: {body}");
            assert!(body.contains(&format!(" body={size} ")), "{name}: {body}");
        }
    }
    assert!(herd.warnings().is_empty(), "{:?}", herd.warnings());
}

// ---- herd -------------------------------------------------------------------

/// herd with a PHP pool of two processes running `command` (and any more
/// pool lines after it) on a unix socket Apache's user may use, and the
/// document root `www/` with `index.php`.
fn herd_with(command: &str) -> (PathBuf, Herd) {
    let dir = Dir::new();
    std::fs::create_dir(dir.join("www")).unwrap();
    dir.write("www/index.php", SCRIPT);
    let conf = format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [www]\nlisten = {{dir}}/herd.sock\nlisten.mode = 0666\n\
         pm = static\npm.max_children = 2\ncommand = {command}\n{}",
        user_line()
    );
    let herd = Herd::start_in(dir, &conf);
    herd.wait_ready(1);
    (herd.dir.path().to_path_buf(), herd)
}

// ---- Apache -----------------------------------------------------------------

/// httpd in one process (`-X`), on a loopback port, with the modules
/// Debian's php-fpm config needs and that config included, its socket
/// herd's; stopped by its pid when dropped.
struct Apache {
    child: Child,
    port: u16,
    error_log: PathBuf,
}

impl Apache {
    fn start(dir: &Path, extra: &str) -> Apache {
        let httpd = support::installed("/usr/sbin/apache2", "apache2");
        let shipped = std::fs::read_to_string(DEBIAN_CONF).unwrap_or_else(|e| {
            panic!("{DEBIAN_CONF}: {e}: run contrib/test-all.sh, which installs php8.2-fpm")
        });
        let socket = dir.join("herd.sock");
        let php_conf = shipped.replace("/run/php/php8.2-fpm.sock", socket.to_str().unwrap());
        assert_ne!(
            php_conf, shipped,
            "{DEBIAN_CONF} no longer names /run/php/php8.2-fpm.sock"
        );
        let port = support::free_port();
        let run = dir.join(format!("apache-{port}"));
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("php-fpm.conf"), php_conf).unwrap();
        let modules = "/usr/lib/apache2/modules";
        let conf = format!(
            "ServerRoot {run}\nPidFile {run}/httpd.pid\nListen 127.0.0.1:{port}\n\
             ServerName localhost\nErrorLog {run}/error.log\nLogLevel warn\n\
             LoadModule mpm_event_module {modules}/mod_mpm_event.so\n\
             LoadModule authz_core_module {modules}/mod_authz_core.so\n\
             LoadModule dir_module {modules}/mod_dir.so\n\
             LoadModule mime_module {modules}/mod_mime.so\nTypesConfig /etc/mime.types\n\
             LoadModule setenvif_module {modules}/mod_setenvif.so\n\
             LoadModule proxy_module {modules}/mod_proxy.so\n\
             LoadModule proxy_fcgi_module {modules}/mod_proxy_fcgi.so\n\
             User www-data\nGroup www-data\n\
             DocumentRoot {www}\n<Directory {www}>\n Require all granted\n</Directory>\n\
             Include {run}/php-fpm.conf\n{extra}",
            run = run.display(),
            www = dir.join("www").display(),
        );
        std::fs::write(run.join("httpd.conf"), conf).unwrap();
        let child = Command::new(httpd)
            .args(["-X", "-f"])
            .arg(run.join("httpd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(run.join("stderr.log")).unwrap())
            .spawn()
            .expect("start apache2");
        let mut apache = Apache {
            child,
            port,
            error_log: run.join("error.log"),
        };
        wait_for("Apache to listen", Duration::from_secs(10), || {
            if let Ok(Some(status)) = apache.child.try_wait() {
                let err = std::fs::read_to_string(run.join("stderr.log")).unwrap_or_default();
                panic!("apache2 exited {status}: {err}{}", apache.errors());
            }
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        apache
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        http_request(self.port, method, path, body)
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

// ---- HAProxy ----------------------------------------------------------------

/// HAProxy with its FastCGI client in front of herd's socket.
fn start_haproxy(dir: &Path) -> HaProxy {
    let port = support::free_port();
    let cfg = dir.join(format!("haproxy-{port}.cfg"));
    std::fs::write(
        &cfg,
        format!(
            "defaults\n mode http\n timeout connect 5s\n timeout client 30s\n\
             timeout server 30s\n\
             fcgi-app php\n docroot {www}\n index index.php\n\
             path-info ^(/.+\\.php)(/.*)?$\n\
             option get-values\n option keep-conn\n option mpxs-conns\n\
             frontend www\n bind 127.0.0.1:{port}\n default_backend php\n\
             backend php\n use-fcgi-app php\n\
             server herd {socket} proto fcgi\n",
            www = dir.join("www").display(),
            socket = dir.join("herd.sock").display(),
        ),
    )
    .unwrap();
    HaProxy::run(&cfg, port, "/index.php")
}

// ---- lighttpd, Caddy --------------------------------------------------------

/// A web server started with `command`, in the foreground, serving on
/// 127.0.0.1:`port`; its output in the test's directory; stopped by its pid
/// when dropped.
struct Front {
    child: Child,
    log: PathBuf,
}

impl Front {
    fn start(name: &str, mut command: Command, port: u16, dir: &Path) -> Front {
        let log = dir.join(format!("{name}.log"));
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut front = Front { child, log };
        wait_for(
            &format!("{name} to listen"),
            Duration::from_secs(10),
            || {
                if let Ok(Some(status)) = front.child.try_wait() {
                    panic!("{name} exited {status}: {}", front.log());
                }
                TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
            },
        );
        front
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 request to 127.0.0.1:`port`; (status, body).
fn http_request(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut out = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n").into_bytes();
    if method == "POST" {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        out.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    nginx::http(port, &out, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- Apache error log ---\n{}", self.errors());
        }
    }
}
