//! `security.limit_extensions`: the file a worker is about to run for a
//! request must end in an allowed extension, or herd answers 403 itself
//! and the worker never sees the request — php-fpm's check, made in the
//! master for php-cgi, which has none of its own.
//!
//! The file that runs is not always the one nginx named. With
//! `cgi.fix_pathinfo = 1` (PHP's default), php-cgi treats a
//! `SCRIPT_FILENAME` that does not exist as a script followed by path
//! info, and walks back to its longest leading part that is a regular
//! file: `/srv/www/uploads/evil.jpg/x.php` runs the upload
//! `/srv/www/uploads/evil.jpg`. So herd works the file out as php-cgi
//! does, from the same params (the last of a repeated name wins, as in
//! PHP), with the same settings (herd pins them on php-cgi's command
//! line), and judges that file.
//!
//! The walk stats the filesystem, as php-cgi does for the same request:
//! one `stat` when nginx split the path info off already, a few more when
//! it did not. A pool with `chroot` is looked at from inside it.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::config::{ScriptGuard, ScriptLookup};
use crate::fastcgi::pairs;

/// Why herd answers a request itself instead of passing it to a worker.
#[derive(Debug, PartialEq, Eq)]
pub enum Denial {
    /// 403: the file is not allowed, or its path is one no script has;
    /// the text says why, for the log.
    Forbidden(String),
    /// 404: no file would run (php-cgi would say "No input file specified").
    NotFound,
}

/// Whether the worker may be given the request with these params.
pub fn check(params: &[u8], guard: &ScriptGuard) -> Result<(), Denial> {
    let sent = Sent::read(params)?;
    let script = match guard.lookup {
        ScriptLookup::AsSent => sent.filename.ok_or(Denial::NotFound)?,
        ScriptLookup::Translated { discard_path } => match sent.translated {
            Some(t) if !discard_path => t,
            _ => sent.filename.ok_or(Denial::NotFound)?,
        },
        ScriptLookup::FixPathinfo => {
            let named = sent.php_named().filter(|n| !n.is_empty());
            let named = named.ok_or(Denial::NotFound)?;
            if named.starts_with(APACHE_PROXY) {
                return Err(forbidden(
                    "Apache mod_proxy_fcgi's script path, which php-cgi does not read (php-fpm \
                     does; `ProxyFCGIBackendType GENERIC` makes Apache send the file's own path):",
                    named,
                ));
            }
            if !named.starts_with(b"/") {
                return Err(forbidden("a relative script path", named));
            }
            let root = Root::open(guard.root.as_deref())?;
            walk_back(named, &root).ok_or(Denial::NotFound)?
        }
    };
    if has_parent_segment(script) {
        // php-cgi refuses these too (is_valid_path).
        return Err(forbidden("a script path with '..'", script));
    }
    if !guard.allows(script) {
        return Err(forbidden(
            "access denied by security.limit_extensions to",
            script,
        ));
    }
    Ok(())
}

/// How Apache's mod_proxy_fcgi begins `SCRIPT_FILENAME` by default
/// (`proxy:fcgi://localhost/srv/www/index.php`, or `proxy:balancer://`):
/// php-fpm strips it, php-cgi reads no file there.
const APACHE_PROXY: &[u8] = b"proxy:";

fn forbidden(what: &str, path: &[u8]) -> Denial {
    Denial::Forbidden(format!("{what} '{}'", shown(path)))
}

/// A path for a log line: lossy UTF-8, and no longer than a line should be.
fn shown(path: &[u8]) -> String {
    const MAX: usize = 256;
    let text = String::from_utf8_lossy(&path[..path.len().min(MAX)]);
    if path.len() > MAX {
        format!("{text}... ({} bytes)", path.len())
    } else {
        text.into_owned()
    }
}

/// The params the lookup reads, each as the worker will see it.
struct Sent<'a> {
    filename: Option<&'a [u8]>,
    translated: Option<&'a [u8]>,
    redirect_url: Option<&'a [u8]>,
}

impl<'a> Sent<'a> {
    /// One pass over the params. A body herd cannot read to its end is
    /// refused: the worker must not act on pairs herd did not see, and a
    /// NUL would cut the path short where PHP reads it (as a C string).
    fn read(params: &'a [u8]) -> Result<Sent<'a>, Denial> {
        let mut sent = Sent {
            filename: None,
            translated: None,
            redirect_url: None,
        };
        for pair in pairs::pairs(params) {
            let (name, value) =
                pair.map_err(|e| Denial::Forbidden(format!("params that do not parse ({e})")))?;
            let slot = match name {
                b"SCRIPT_FILENAME" => &mut sent.filename,
                b"PATH_TRANSLATED" => &mut sent.translated,
                b"REDIRECT_URL" => &mut sent.redirect_url,
                _ => continue,
            };
            if value.contains(&0) {
                let name = String::from_utf8_lossy(name);
                return Err(forbidden(&format!("a NUL byte in {name}"), value));
            }
            *slot = Some(value);
        }
        Ok(sent)
    }

    /// The path php-cgi starts from with `cgi.fix_pathinfo = 1`:
    /// `SCRIPT_FILENAME`, else `PATH_TRANSLATED`; and Apache's way, where
    /// `SCRIPT_FILENAME` names php-cgi itself, `PATH_TRANSLATED` when
    /// `REDIRECT_URL` is set too.
    fn php_named(&self) -> Option<&'a [u8]> {
        match (self.filename, self.translated, self.redirect_url) {
            (Some(f), Some(t), Some(_)) if f != t => Some(t),
            (f, t, _) => f.or(t),
        }
    }
}

/// php-cgi's lookup with `cgi.fix_pathinfo = 1`: the named path when it
/// exists (and does not end in `/`); else its longest leading part that is
/// a regular file; else nothing.
///
/// php-cgi strips one `/component` at a time from the end. The same file
/// is found going forward: below a regular file nothing can exist, and
/// below anything that is not a directory nothing can be reached, so the
/// first leading part that is not a directory ends the search. That costs
/// a stat per real directory level at most, however many slashes the
/// request packs into its path.
fn walk_back<'p>(named: &'p [u8], root: &Root) -> Option<&'p [u8]> {
    if named.is_empty() {
        return None;
    }
    if !named.ends_with(b"/") && root.kind(named) != Kind::Missing {
        return Some(named);
    }
    let cuts = named.iter().enumerate().filter(|(_, b)| **b == b'/');
    for (at, _) in cuts.skip(1) {
        let part = &named[..at];
        match root.kind(part) {
            Kind::Dir => continue,
            Kind::File => return Some(part),
            Kind::Other | Kind::Missing => return None,
        }
    }
    None
}

/// A `..` path segment, which PHP's `is_valid_path` rejects.
fn has_parent_segment(path: &[u8]) -> bool {
    path.split(|b| *b == b'/').any(|seg| seg == b"..")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Other,
    Missing,
}

/// Where paths are looked up: this filesystem, or a pool's chroot, seen
/// as the worker sees it (absolute symlinks stay inside).
enum Root {
    Host,
    Chroot(OwnedFd),
}

impl Root {
    fn open(chroot: Option<&Path>) -> Result<Root, Denial> {
        let Some(dir) = chroot else {
            return Ok(Root::Host);
        };
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        nix::fcntl::open(dir, flags, Mode::empty())
            .map(Root::Chroot)
            .map_err(|e| {
                Denial::Forbidden(format!(
                    "the chroot {} cannot be opened: {e}",
                    dir.display()
                ))
            })
    }

    fn kind(&self, path: &[u8]) -> Kind {
        match self {
            Root::Host => match fs::metadata(OsStr::from_bytes(path)) {
                Ok(m) if m.is_file() => Kind::File,
                Ok(m) if m.is_dir() => Kind::Dir,
                Ok(_) => Kind::Other,
                Err(_) => Kind::Missing,
            },
            Root::Chroot(dir) => {
                let how = OpenHow::new()
                    .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                    .resolve(ResolveFlag::RESOLVE_IN_ROOT);
                let inside = OsStr::from_bytes(path.strip_prefix(b"/").unwrap_or(path));
                let Ok(fd) = openat2(dir, inside, how) else {
                    return Kind::Missing;
                };
                match fstat(&fd).map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT) {
                    Ok(t) if t == SFlag::S_IFREG => Kind::File,
                    Ok(t) if t == SFlag::S_IFDIR => Kind::Dir,
                    Ok(_) => Kind::Other,
                    Err(_) => Kind::Missing,
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
