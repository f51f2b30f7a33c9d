//! `access.log` lines in php-fpm's `access.format` language: `%R - %u %t
//! "%m %r" %s` and the other letters of php-fpm's `fpm_log.c`, with
//! `%{...}` arguments where php-fpm takes them.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::fastcgi::pairs;
use crate::pool::RequestUsage;
use crate::pool::usage::Cpu;

/// What one finished request tells the access log.
pub struct Entry<'a> {
    pub pool: &'a str,
    pub params: &'a [u8],
    /// The start of the response's CGI headers, when any came.
    pub response_head: &'a [u8],
    pub status: u16,
    pub received: SystemTime,
    pub duration: Duration,
    pub worker_pid: u32,
    /// What the request cost its worker, when it was measured.
    pub usage: Option<RequestUsage>,
}

/// `access.suppress_path[]`: a successful request for one of `paths`
/// (the request URI without its query, as php-fpm compares it) is not
/// logged; a failing one still is.
pub fn suppressed(paths: &[String], e: &Entry<'_>) -> bool {
    if paths.is_empty() || !(200..300).contains(&e.status) {
        return false;
    }
    let uri = pairs::find(e.params, b"REQUEST_URI").unwrap_or_default();
    let path = uri.split(|b| *b == b'?').next().unwrap_or_default();
    paths.iter().any(|p| p.as_bytes() == path)
}

/// Renders `format` for `e`. Unknown letters are written as they are.
pub fn format(format: &str, e: &Entry<'_>) -> String {
    let mut out = String::with_capacity(128);
    for token in tokens(format) {
        match token {
            Token::Text(c) => out.push(c),
            Token::Letter(letter, arg) => letter_value(&mut out, letter, arg.as_deref(), e),
        }
    }
    out
}

/// Whether `format` shows what a request cost its worker (`%C`, `%M`),
/// which the router then measures for every request.
pub fn measures_usage(format: &str) -> bool {
    tokens(format).any(|t| matches!(t, Token::Letter('C' | 'M', _)))
}

/// A piece of an `access.format`: a character as it is, or a `%` letter
/// with its `{argument}`.
enum Token {
    Text(char),
    Letter(char, Option<String>),
}

fn tokens(format: &str) -> impl Iterator<Item = Token> + '_ {
    let mut chars = format.chars().peekable();
    std::iter::from_fn(move || {
        let c = chars.next()?;
        if c != '%' {
            return Some(Token::Text(c));
        }
        let mut arg = None;
        if chars.peek() == Some(&'{') {
            chars.next();
            let a: String = chars.by_ref().take_while(|c| *c != '}').collect();
            arg = Some(a);
        }
        // A `%` at the very end is written as it is.
        Some(match chars.next() {
            Some(letter) => Token::Letter(letter, arg),
            None => Token::Text('%'),
        })
    })
}

fn letter_value(out: &mut String, letter: char, arg: Option<&str>, e: &Entry<'_>) {
    let param = |name: &[u8]| {
        String::from_utf8_lossy(pairs::find(e.params, name).unwrap_or_default()).into_owned()
    };
    let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    let uri = param(b"REQUEST_URI");
    let _ = match letter {
        '%' => write!(out, "%"),
        // php-fpm's %CPU of the request and its memory peak; `-` where
        // herd could not measure them (see `pool::usage`).
        'C' => match (e.usage, cpu_part(arg)) {
            (Some(u), Some(part)) => write!(out, "{:.2}", u.cpu_percent(part)),
            _ => write!(out, "-"),
        },
        'd' => match arg {
            Some("milliseconds") | Some("milli") | Some("mili") => {
                write!(out, "{:.3}", e.duration.as_secs_f64() * 1e3)
            }
            Some("microseconds") | Some("micro") => write!(out, "{}", e.duration.as_micros()),
            _ => write!(out, "{:.3}", e.duration.as_secs_f64()),
        },
        'e' => write!(out, "{}", or_dash(param(arg.unwrap_or("").as_bytes()))),
        'f' => write!(out, "{}", or_dash(param(b"SCRIPT_FILENAME"))),
        'l' => write!(
            out,
            "{}",
            param(b"CONTENT_LENGTH").parse::<u64>().unwrap_or(0)
        ),
        'm' => write!(out, "{}", or_dash(param(b"REQUEST_METHOD"))),
        'M' => match (e.usage.and_then(|u| u.memory), memory_unit(arg)) {
            (Some(bytes), Some(unit)) => write!(out, "{}", bytes / unit),
            _ => write!(out, "-"),
        },
        'n' => write!(out, "{}", e.pool),
        'o' => write!(
            out,
            "{}",
            or_dash(header(e.response_head, arg.unwrap_or("")))
        ),
        'p' => write!(out, "{}", e.worker_pid),
        'P' => write!(out, "{}", std::process::id()),
        'q' => write!(out, "{}", param(b"QUERY_STRING")),
        'Q' => write!(
            out,
            "{}",
            if param(b"QUERY_STRING").is_empty() {
                ""
            } else {
                "?"
            }
        ),
        'r' => write!(out, "{}", uri.split('?').next().unwrap_or("")),
        'R' => write!(out, "{}", or_dash(param(b"REMOTE_ADDR"))),
        's' => write!(out, "{}", e.status),
        't' => write!(out, "{}", strftime(e.received, arg.unwrap_or(CLF))),
        'T' => write!(out, "{}", strftime(SystemTime::now(), arg.unwrap_or(CLF))),
        'u' => write!(out, "{}", or_dash(param(b"REMOTE_USER"))),
        other => write!(out, "%{other}"),
    };
}

/// `%{total}C` (the default), `%{user}C`, `%{system}C`.
fn cpu_part(arg: Option<&str>) -> Option<Cpu> {
    match arg.unwrap_or("total") {
        "total" => Some(Cpu::Total),
        "user" => Some(Cpu::User),
        "system" => Some(Cpu::System),
        _ => None,
    }
}

/// `%{bytes}M` (the default), `%{kilo}M`, `%{mega}M` and their long names,
/// as the divisor.
fn memory_unit(arg: Option<&str>) -> Option<u64> {
    match arg.unwrap_or("bytes").to_ascii_lowercase().as_str() {
        "bytes" => Some(1),
        "kilo" | "kilobytes" => Some(1024),
        "mega" | "megabytes" => Some(1024 * 1024),
        _ => None,
    }
}

const CLF: &str = "%d/%b/%Y:%H:%M:%S %z";

/// The value of response header `name` in a CGI header block.
fn header(head: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(head);
    text.lines()
        .take_while(|l| !l.trim_end_matches('\r').is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// Local time in strftime(3) `format`, as php-fpm prints it.
fn strftime(t: SystemTime, format: &str) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as libc::time_t;
    let Ok(cfmt) = std::ffi::CString::new(format) else {
        return String::new();
    };
    let mut buf = [0u8; 256];
    // SAFETY: localtime_r and strftime write only into the buffers given,
    // whose sizes are passed; `cfmt` is NUL-terminated.
    let n = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cfmt.as_ptr(), &tm)
    };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn params() -> BytesMut {
        let mut p = BytesMut::new();
        for (k, v) in [
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", "/index.php?a=1"),
            ("QUERY_STRING", "a=1"),
            ("REMOTE_ADDR", "10.0.0.7"),
            ("SCRIPT_FILENAME", "/srv/index.php"),
            ("HTTP_HOST", "example.org"),
        ] {
            pairs::put_pair(&mut p, k.as_bytes(), v.as_bytes());
        }
        p
    }

    /// A 404 of 1.5 s from worker 42, not measured.
    fn entry(params: &[u8]) -> Entry<'_> {
        Entry {
            pool: "www",
            params,
            response_head: b"Status: 404 Not Found\r\nX-Cache: hit\r\n\r\n",
            status: 404,
            received: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(1500),
            worker_pid: 42,
            usage: None,
        }
    }

    #[test]
    fn default_format_like_php_fpm() {
        let p = params();
        let e = entry(&p);
        let line = format("%R - %u %t \"%m %r\" %s", &e);
        assert!(line.starts_with("10.0.0.7 - - "), "{line}");
        assert!(line.ends_with("\"GET /index.php\" 404"), "{line}");
        assert_eq!(
            format(
                "%n %p %d %{milli}d %{HTTP_HOST}e %{X-Cache}o %f %Q%q %l %%",
                &e
            ),
            "www 42 1.500 1500.000 example.org hit /srv/index.php ?a=1 0 %"
        );
        assert_eq!(format("%{%Y}t", &e).len(), 4);
        assert_eq!(format("%C %M %{mega}M", &e), "- - -", "not measured");
        assert!(!measures_usage("%R - %u %t \"%m %r\" %s %%C"));
        assert!(measures_usage("%{user}C") && measures_usage("%{kilo}M %d"));
    }

    #[test]
    fn cpu_and_memory_as_php_fpm_writes_them() {
        let p = params();
        let e = Entry {
            response_head: b"",
            usage: Some(RequestUsage {
                user: Duration::from_millis(300),
                system: Duration::from_millis(100),
                elapsed: Duration::from_millis(400),
                memory: Some(3 << 20),
            }),
            ..entry(&p)
        };
        assert_eq!(
            format("%C %{user}C %{system}C %M %{kilo}M %{megabytes}M", &e),
            "100.00 75.00 25.00 3145728 3072 3"
        );
    }
}
