//! Scalar values of the php-fpm dialect: booleans, whole numbers, durations,
//! sizes, modes, signals, lists and shell-like words.
//!
//! Each parser takes the trimmed value and returns what it expected on
//! failure ("a whole number"); `build` turns that into
//! "invalid value 'x' for 'key': expected …" with the entry's location.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::{ListenAddr, LogFormat, LogLevel, PmMode, SpawnMode, WarmupRequest};

/// What a value should have looked like, e.g. "expected a whole number".
pub type Expected = String;

/// `v` read against `base` when relative, without `.` components; symlinks
/// are left alone, since they may change between reloads.
pub fn join(base: &Path, v: &str) -> PathBuf {
    base.join(v).components().collect()
}

/// php's ini booleans; an empty value is false, as in php.
pub fn boolean(v: &str) -> Result<bool, Expected> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" | "1" => Ok(true),
        "no" | "off" | "false" | "0" | "" => Ok(false),
        _ => Err("expected yes or no".into()),
    }
}

/// Digits only: php-fpm allows a leading `-`, but none of herd's counts can
/// be negative, so a sign is a mistake worth reporting.
pub fn whole<T: FromStr>(v: &str) -> Result<T, Expected> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a whole number".into());
    }
    v.parse()
        .map_err(|_| "expected a smaller whole number".into())
}

/// `listen.backlog`: -1 asks the kernel for its maximum (php-fpm on BSD).
pub fn backlog(v: &str) -> Result<i32, Expected> {
    match v.parse::<i32>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => Err("expected a whole number or -1".into()),
    }
}

/// A bare number is seconds (php-fpm); units `ms`, `s`, `m`, `h`, `d`, and
/// herd also accepts compound forms like `1m30s`.
pub fn duration(v: &str) -> Result<Duration, Expected> {
    let expected = || "expected a duration like 30s, 5m or 1m30s".to_string();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().map(Duration::from_secs).map_err(|_| expected());
    }
    if v.is_empty() {
        return Err(expected());
    }
    let mut rest = v;
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        let scale: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(expected()),
        };
        let n: u64 = number.parse().map_err(|_| expected())?;
        millis = n
            .checked_mul(scale)
            .and_then(|ms| millis.checked_add(ms))
            .ok_or_else(expected)?;
        rest = &rest[digits + unit_len..];
    }
    Ok(Duration::from_millis(millis))
}

/// Bytes with an optional binary `K`, `M` or `G` suffix, as php.ini writes them.
pub fn size(v: &str) -> Result<u64, Expected> {
    let expected = || "expected a size like 512K or 256M".to_string();
    let (number, scale) = match v.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    let n: u64 = whole(number).map_err(|_| expected())?;
    n.checked_mul(scale).ok_or_else(expected)
}

/// `rlimit_core` also takes `unlimited` (RLIM_INFINITY), as php-fpm does.
pub fn rlimit(v: &str) -> Result<u64, Expected> {
    if v.eq_ignore_ascii_case("unlimited") {
        return Ok(u64::MAX);
    }
    whole(v).map_err(|_| "expected a whole number or 'unlimited'".into())
}

/// An octal permission mode such as `0660`.
pub fn mode(v: &str) -> Result<u32, Expected> {
    let expected = || "expected an octal mode like 0660".to_string();
    if v.is_empty() || v.len() > 5 || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(expected());
    }
    u32::from_str_radix(v, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(expected)
}

/// A signal name with or without `SIG`, or its number.
pub fn signal(v: &str) -> Result<i32, Expected> {
    let upper = v.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = match name {
        "TERM" => libc::SIGTERM,
        "QUIT" => libc::SIGQUIT,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "KILL" => libc::SIGKILL,
        _ => match whole::<i32>(v) {
            Ok(n) if (1..=libc::SIGRTMAX()).contains(&n) => n,
            _ => return Err("expected a signal name like TERM or QUIT, or its number".into()),
        },
    };
    Ok(number)
}

pub fn log_level(v: &str) -> Result<LogLevel, Expected> {
    match v.to_ascii_lowercase().as_str() {
        "alert" => Ok(LogLevel::Alert),
        "error" => Ok(LogLevel::Error),
        "warning" => Ok(LogLevel::Warning),
        "notice" => Ok(LogLevel::Notice),
        "debug" => Ok(LogLevel::Debug),
        _ => Err("expected alert, error, warning, notice or debug".into()),
    }
}

/// A nice(2) value, -19 to 20 as php-fpm's `process.priority` takes.
pub fn priority(v: &str) -> Result<i32, Expected> {
    match v.trim().parse::<i32>() {
        Ok(n) if (-19..=20).contains(&n) => Ok(n),
        _ => Err("expected a nice value from -19 to 20".into()),
    }
}

pub fn log_format(v: &str) -> Result<LogFormat, Expected> {
    match v.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected text or json".into()),
    }
}

pub fn spawn_mode(v: &str) -> Result<SpawnMode, Expected> {
    match v.to_ascii_lowercase().as_str() {
        "exec" => Ok(SpawnMode::Exec),
        "preload" => Ok(SpawnMode::Preload),
        _ => Err("expected exec or preload".into()),
    }
}

pub fn pm_mode(v: &str) -> Result<PmMode, Expected> {
    match v {
        "static" => Ok(PmMode::Static),
        "dynamic" => Ok(PmMode::Dynamic),
        "ondemand" => Ok(PmMode::Ondemand),
        _ => Err("expected static, dynamic or ondemand".into()),
    }
}

/// Items separated by commas and/or whitespace; empty items are skipped.
pub fn items(v: &str) -> impl Iterator<Item = &str> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

/// `listen.allowed_clients`; empty means any client, as in php-fpm.
pub fn ip_list(v: &str) -> Result<Option<Vec<IpAddr>>, Expected> {
    let ips: Vec<IpAddr> = items(v)
        .map(|s| {
            s.parse().map_err(|_| {
                format!("expected IP addresses separated by commas ('{s}' is not one)")
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((!ips.is_empty()).then_some(ips))
}

pub fn exit_codes(v: &str) -> Result<Vec<i32>, Expected> {
    items(v)
        .map(|s| match whole::<i32>(s) {
            Ok(n) if n <= 255 => Ok(n),
            _ => Err(format!(
                "expected exit codes 0 to 255 separated by commas ('{s}' is not one)"
            )),
        })
        .collect()
}

/// `rollout.surge` before it is resolved against `pm.max_children`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surge {
    Count(u32),
    Percent(u32),
}

pub fn surge(v: &str) -> Result<Surge, Expected> {
    let expected = || "expected a count like 2 or a percentage like 25%".to_string();
    match v.strip_suffix('%') {
        Some(p) => whole(p)
            .ok()
            .filter(|p| *p <= 100)
            .map(Surge::Percent)
            .ok_or_else(expected),
        None => whole(v).map(Surge::Count).map_err(|_| expected()),
    }
}

impl Surge {
    /// Percentages round up so a small pool still surges; never below one
    /// worker, or a rollout could not start a new generation beside the old.
    pub fn resolve(self, max_children: u32) -> u32 {
        let n = match self {
            Surge::Count(n) => n,
            Surge::Percent(p) => (u64::from(max_children) * u64::from(p)).div_ceil(100) as u32,
        };
        n.max(1)
    }
}

/// `pm.status_path` and `ping.path`, with php-fpm's rule.
pub fn uri_path(v: &str) -> Result<String, Expected> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/_-.~".contains(c);
    if v.len() >= 2 && v.starts_with('/') && v.chars().all(allowed) {
        Ok(v.to_string())
    } else {
        Err("expected a path starting with '/', of at least 2 characters from letters, digits and /_-.~".into())
    }
}

/// `warmup.request[] = [METHOD] /uri`; the method defaults to GET.
pub fn warmup(v: &str) -> Result<WarmupRequest, Expected> {
    let expected = || "expected '[METHOD] /uri', e.g. 'GET /ping.php'".to_string();
    let (method, uri) = match v.split_once(char::is_whitespace) {
        Some((m, u)) => (m, u.trim()),
        None => ("GET", v),
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !uri.starts_with('/') || uri.contains(char::is_whitespace) {
        return Err(expected());
    }
    Ok(WarmupRequest {
        method: method.to_string(),
        uri: uri.to_string(),
    })
}

/// A value with a `/`, or with neither a colon nor only digits, is a unix
/// socket path; otherwise `host:port`, `[v6]:port`, `*:port` or a bare port. A bare port listens on 127.0.0.1
/// only, where php-fpm takes every address: exposing workers to the network
/// should be written out.
pub fn listen(v: &str, base: &Path) -> Result<ListenAddr, Expected> {
    if let Some(name) = v.strip_prefix("systemd:") {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(
                "expected systemd:NAME, NAME being a FileDescriptorName of the socket unit".into(),
            );
        }
        return Ok(ListenAddr::Systemd(name.to_string()));
    }
    if v.contains('/') {
        return Ok(ListenAddr::Unix(join(base, v)));
    }
    let expected = || "expected a socket path, host:port, [ipv6]:port or a port".to_string();
    let port = |p: &str| {
        whole::<u16>(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(expected)
    };
    // php-fpm's rule: no colon and not a port is a socket path, relative
    // ones read against the prefix (here `base`).
    if !v.contains(':') && !v.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(ListenAddr::Unix(join(base, v)));
    }
    if !v.contains(':') {
        return Ok(ListenAddr::Tcp(SocketAddr::new(
            Ipv4Addr::LOCALHOST.into(),
            port(v)?,
        )));
    }
    if let Ok(addr) = v.parse::<SocketAddr>() {
        return Ok(ListenAddr::Tcp(addr));
    }
    let (host, p) = v.rsplit_once(':').ok_or_else(expected)?;
    let p = port(p)?;
    if host == "*" {
        return Ok(ListenAddr::Tcp(SocketAddr::new(
            Ipv4Addr::UNSPECIFIED.into(),
            p,
        )));
    }
    // Host names are resolved once, here, as php-fpm does at start.
    match (host, p).to_socket_addrs() {
        Ok(mut addrs) => addrs.next().map(ListenAddr::Tcp).ok_or_else(expected),
        Err(e) => Err(format!("expected a host name that resolves ({e})")),
    }
}

/// Splits `args` into words like a POSIX shell, without expansions: blanks
/// separate, quotes group, a backslash escapes the next character (inside
/// double quotes only before `"`, `\`, `$` and `` ` ``).
/// `worker.probe`: `values` or `request`.
pub fn probe(v: &str) -> Result<super::WorkerProbe, Expected> {
    match v {
        "values" => Ok(super::WorkerProbe::Values),
        "request" => Ok(super::WorkerProbe::Request),
        _ => Err("expected 'values' or 'request'".into()),
    }
}

/// `worker.slots`: 1 to 1024 requests at once.
pub fn slots(v: &str) -> Result<u32, Expected> {
    match v.parse::<u32>() {
        Ok(n @ 1..=1024) => Ok(n),
        _ => Err("expected a number of requests from 1 to 1024".into()),
    }
}

pub fn words(v: &str) -> Result<Vec<String>, Expected> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("expected a closing ' quote".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => w.extend(['\\', c]),
                            None => return Err("expected a closing \" quote".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("expected a closing \" quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("expected a character after the final backslash".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
#[path = "value_tests.rs"]
mod tests;
