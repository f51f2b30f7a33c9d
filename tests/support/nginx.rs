//! nginx in front of herd, as production runs it: started on a loopback
//! port with its own config, pid and logs in the test's directory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Tries at starting nginx on fresh ports.
const ATTEMPTS: usize = 3;

pub struct Nginx {
    child: Child,
    /// The first server's port.
    pub port: u16,
    /// Every server's port, in the order given.
    pub ports: Vec<u16>,
    pub error_log: PathBuf,
}

/// The nginx binary; the test suite's installer puts it there.
pub fn binary() -> PathBuf {
    super::installed("/usr/sbin/nginx", "nginx")
}

impl Nginx {
    /// Starts nginx with `locations` (nginx config text inside `server {}`)
    /// and `upstreams` (inside `http {}`).
    pub fn start(dir: &Path, upstreams: &str, locations: &str) -> Nginx {
        Nginx::start_servers(dir, upstreams, &[locations])
    }

    /// Starts nginx with one server per entry of `servers` (the text inside
    /// its `server {}`), each on a port of its own, all with `dir` as root.
    /// A port another process took between [`free_port`] and nginx's bind
    /// (tests run in parallel) means new ports and another try.
    pub fn start_servers(dir: &Path, upstreams: &str, servers: &[&str]) -> Nginx {
        let mut why = String::new();
        for _ in 0..ATTEMPTS {
            let ports: Vec<u16> = servers.iter().map(|_| free_port()).collect();
            let text: String = servers
                .iter()
                .zip(&ports)
                .map(|(locations, port)| {
                    format!(
                        "server {{\n listen 127.0.0.1:{port};\n root {dir};\n {locations}\n}}\n",
                        dir = dir.display()
                    )
                })
                .collect();
            match Nginx::try_start_http(dir, &format!("{upstreams}\n{text}"), ports) {
                Ok(nginx) => return nginx,
                Err(e) => why = e,
            }
        }
        panic!("nginx did not start in {ATTEMPTS} tries: {why}");
    }

    /// Starts nginx with `http`, the inside of its `http {}` (servers
    /// included), whose servers listen on `ports` of 127.0.0.1.
    pub fn start_http(dir: &Path, http: &str, ports: Vec<u16>) -> Nginx {
        Nginx::try_start_http(dir, http, ports).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Nginx::start_http`], or why not: nginx did not come up holding
    /// every one of its ports (one of them taken by another process, whose
    /// answers would otherwise pass for nginx's).
    fn try_start_http(dir: &Path, http: &str, ports: Vec<u16>) -> Result<Nginx, String> {
        let error_log = dir.join("nginx-error.log");
        let conf = format!(
            "worker_processes 1;\n\
             daemon off;\n\
             master_process off;\n\
             pid {dir}/nginx.pid;\n\
             error_log {err} info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {dir}/body;\n\
               fastcgi_temp_path {dir}/fastcgi;\n\
               proxy_temp_path {dir}/proxy;\n\
               uwsgi_temp_path {dir}/uwsgi;\n\
               scgi_temp_path {dir}/scgi;\n\
               {http}\n\
             }}\n",
            dir = dir.display(),
            err = error_log.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            child,
            port: ports[0],
            ports,
            error_log,
        };
        let pid = nginx.child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !nginx.ports.iter().all(|port| holds_listener(pid, *port)) {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(&nginx.error_log).unwrap_or_default();
                return Err(format!("nginx exited ({status}): {log}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not listen on {:?} within 10 s",
                    nginx.ports
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(nginx)
    }

    /// One HTTP/1.0 GET (so the body is never chunked); returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.get_within(path, Duration::from_secs(30))
    }

    /// [`Nginx::get`] that panics if the response takes longer than `within`.
    pub fn get_within(&self, path: &str, within: Duration) -> (u16, String) {
        self.try_get(path, within)
            .unwrap_or_else(|e| panic!("GET {path} through nginx: {e} (within {within:?})"))
    }

    /// One HTTP/1.0 GET; what went wrong instead of a panic, for load
    /// loops that count failures.
    pub fn try_get(&self, path: &str, within: Duration) -> Result<(u16, String), String> {
        try_get(self.port, path, within)
    }
}

/// [`Nginx::try_get`] on the nginx listening on `port` (for client threads,
/// which need not hold the `Nginx`).
pub fn try_get(port: u16, path: &str, within: Duration) -> Result<(u16, String), String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    http(port, request.as_bytes(), within)
}

/// Sends `request` (HTTP/1.0, so the server closes after its answer) to
/// 127.0.0.1:`port`; (status, body).
pub fn http(port: u16, request: &[u8], within: Duration) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(within))
        .map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.error_log).unwrap_or_default();
            eprintln!("--- nginx error log ---\n{log}");
        }
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`:
/// the inode `/proc/net/tcp` gives for that listener is one of its
/// descriptors.
fn holds_listener(pid: u32, port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Fields: sl, local, remote, state (0A: listening), ..., inode.
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}
