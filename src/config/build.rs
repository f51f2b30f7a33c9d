//! Stage two: sections of raw entries into the typed [`Config`], collecting
//! every error with its location. This file owns the checks that span
//! sections (duplicates, scopes, shared listen addresses) and `[global]`;
//! `pool` builds one pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::directives::{self, Scope};
use super::ini::{self, Document, Entry, Section};
use super::{
    Config, ConfigError, ConfigErrors, Global, ListenAddr, Location, LogFormat, LogLevel, pool,
    value,
};

/// Choices made on herd's command line rather than in the file.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--allow-root`: let pools run workers as root (php-fpm's `-R`).
    pub allow_root: bool,
    /// For `herd::worker::manage`: the program itself is every pool's
    /// `command` (unless a pool names one), preloaded by default.
    pub embedded: Option<std::path::PathBuf>,
    /// `-p`: php-fpm's prefix, which relative paths and includes are read
    /// against instead of the config file's directory.
    pub prefix: Option<PathBuf>,
}

/// Reads `path` and every file it includes.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Config, ConfigErrors> {
    let doc = ini::read_file_in(path, opts.prefix.as_deref()).map_err(ConfigErrors)?;
    build(doc, path, opts)
}

/// Reads `path` as far as it can: the config built from every line and
/// section that holds (a pool with an error is left out, a bad global
/// value takes its default), and every error. For `herd ctl`, which needs
/// only the control socket's path; fails only when the file cannot be
/// read.
pub fn load_partly(
    path: &Path,
    opts: &LoadOptions,
) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
    let (doc, mut errors) =
        ini::read_file_partly(path, opts.prefix.as_deref()).map_err(ConfigErrors)?;
    let (config, more) = build_partly(doc, path, opts);
    errors.extend(more);
    sort_by_line(&mut errors);
    Ok((config, errors))
}

/// Reads `text` as if it were the file `origin`: locations name `origin`,
/// and relative includes and paths are read against its directory.
pub fn parse_str(text: &str, origin: &Path, opts: &LoadOptions) -> Result<Config, ConfigErrors> {
    let doc = ini::read_str_in(text, origin, opts.prefix.as_deref()).map_err(ConfigErrors)?;
    build(doc, origin, opts)
}

/// What every builder shares: where errors go and what paths are relative to.
pub(super) struct Context<'a> {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
    /// What `herd check` mentions without calling it a problem: values a
    /// later line overrides, directives that have no effect under herd.
    pub notes: Vec<String>,
    /// The main file's directory, made absolute so that paths keep their
    /// meaning whatever directory herd or its workers later run in.
    pub base: PathBuf,
    pub opts: &'a LoadOptions,
    pub is_root: bool,
}

impl Context<'_> {
    pub fn error(&mut self, at: &Location, message: String) {
        self.errors.push(ConfigError {
            location: Some(at.clone()),
            message,
        });
    }
}

fn build(doc: Document, origin: &Path, opts: &LoadOptions) -> Result<Config, ConfigErrors> {
    let (config, mut errors) = build_partly(doc, origin, opts);
    if errors.is_empty() {
        return Ok(config);
    }
    sort_by_line(&mut errors);
    Err(ConfigErrors(errors))
}

/// Checks run directive by directive; people read files line by line.
fn sort_by_line(errors: &mut [ConfigError]) {
    let key = |e: &ConfigError| e.location.as_ref().map(|l| (l.file.clone(), l.line));
    errors.sort_by_key(|e| (e.location.is_none(), key(e)));
}

/// The config as far as `doc` builds, and every error found on the way.
fn build_partly(doc: Document, origin: &Path, opts: &LoadOptions) -> (Config, Vec<ConfigError>) {
    let dir = origin
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut cx = Context {
        errors: Vec::new(),
        warnings: doc.warnings,
        notes: Vec::new(),
        base: std::path::absolute(opts.prefix.as_deref().unwrap_or(dir))
            .unwrap_or_else(|_| dir.to_path_buf()),
        opts,
        is_root: nix::unistd::geteuid().is_root(),
    };
    let (global_entries, pool_sections) = split_sections(&doc.sections);
    let global_fields = Fields::new(global_entries, None, &mut cx);
    let global = build_global(&global_fields, &mut cx);
    if pool_sections.is_empty() {
        let message = format!(
            "{}: no pools defined; add a section such as [www]",
            origin.display()
        );
        cx.errors.push(ConfigError {
            location: None,
            message,
        });
    }
    let mut pools = Vec::new();
    let mut listens: Vec<(ListenAddr, String, Location)> = Vec::new();
    for pool in pool_sections {
        let section = pool.header;
        let fields = Fields::new(pool.entries, Some(section), &mut cx);
        let Some(pool) = pool::build(section, &fields, &mut cx) else {
            continue;
        };
        let addrs = [
            ("listen", Some(&pool.listen)),
            ("pm.status_listen", pool.status_listen.as_ref()),
        ];
        for (key, addr) in addrs {
            let Some(addr) = addr else { continue };
            let at = fields.location(key).unwrap_or(&section.location).clone();
            if let Some((_, other, first)) = listens.iter().find(|(a, ..)| a == addr) {
                let msg = format!(
                    "listen address '{addr}' is already used by pool '{other}' (at {first})"
                );
                cx.error(&at, msg);
            }
            listens.push((addr.clone(), pool.name.clone(), at));
        }
        pools.push(pool);
    }
    check_paths_apart(&global, &global_fields, &listens, &mut cx);
    let config = Config {
        file: Some(origin.to_path_buf()),
        global,
        pools,
        warnings: cx.warnings,
        notes: cx.notes,
    };
    (config, cx.errors)
}

/// The pid file and the control socket must not be a pool's listening
/// socket: herd would remove or refuse the one the other needs.
fn check_paths_apart(
    global: &Global,
    fields: &Fields,
    listens: &[(ListenAddr, String, Location)],
    cx: &mut Context,
) {
    let ours = [
        ("pid", global.pid.as_ref()),
        ("control.listen", global.control_listen.as_ref()),
    ];
    for (name, path) in ours {
        let Some(path) = path else { continue };
        let clash = listens
            .iter()
            .find(|(addr, ..)| matches!(addr, ListenAddr::Unix(p) if p == path));
        if let (Some((_, pool, at)), Some(line)) = (clash, fields.location(name)) {
            let msg = format!(
                "'{name}' ({}) is the listening socket of pool '{pool}' (at {at}); give it another path",
                path.display()
            );
            cx.error(line, msg);
        }
    }
    if let (Some(pid), Some(ctl)) = (&global.pid, &global.control_listen)
        && pid == ctl
        && let Some(line) = fields.location("control.listen")
    {
        cx.error(
            line,
            "'control.listen' is the pid file; give it another path".into(),
        );
    }
}

/// One pool as php-fpm assembles it: every section of that name (case
/// aside), wherever it was opened, in reading order.
pub(super) struct PoolSections<'d> {
    /// The first header; it names the pool and is where "missing" points.
    pub header: &'d Section,
    pub entries: Vec<&'d Entry>,
}

/// The entries of every `[global]` section, and each pool's. As in php-fpm,
/// a section reopened later (in an include such as `zz-docker.conf`) goes
/// on where the first left off, and names match whatever their case.
fn split_sections(sections: &[Section]) -> (Vec<&Entry>, Vec<PoolSections<'_>>) {
    let mut global = Vec::new();
    let mut pools: Vec<PoolSections> = Vec::new();
    for section in sections {
        if section.implicit || section.name.eq_ignore_ascii_case("global") {
            global.extend(&section.entries);
            continue;
        }
        match pools
            .iter_mut()
            .find(|p| p.header.name.eq_ignore_ascii_case(&section.name))
        {
            Some(pool) => pool.entries.extend(&section.entries),
            None => pools.push(PoolSections {
                header: section,
                entries: section.entries.iter().collect(),
            }),
        }
    }
    (global, pools)
}

/// One section's entries, checked against the directive table, with
/// `$pool` expanded in pool values.
pub(super) struct Fields<'a> {
    /// "pool 'www'" or "[global]", for messages.
    pub what: String,
    singles: HashMap<&'static str, (&'a Entry, String)>,
    /// Array entries in file order, with their directive's table name.
    arrays: Vec<(&'static str, &'a Entry, String)>,
}

impl<'a> Fields<'a> {
    fn new(entries: Vec<&'a Entry>, pool: Option<&Section>, cx: &mut Context) -> Fields<'a> {
        let (scope, what) = match pool {
            Some(s) => (Scope::Pool, format!("pool '{}'", s.name)),
            None => (Scope::Global, "[global]".to_string()),
        };
        let mut fields = Fields {
            what,
            singles: HashMap::new(),
            arrays: Vec::new(),
        };
        for entry in entries {
            let Some(d) = fields.directive(entry, scope, cx) else {
                continue;
            };
            if let Some(why) = d.inert {
                cx.notes.push(format!(
                    "{}: '{}' has no effect under herd: {why}",
                    entry.location,
                    entry.full_key()
                ));
                continue;
            }
            // php-fpm expands `$pool` in every pool value.
            let value = match pool {
                Some(s) => entry.value.replace("$pool", &s.name),
                None => entry.value.clone(),
            };
            // As in php-fpm, a later value wins (how override files such as
            // `zz-docker.conf` work); `herd check` notes each one.
            let earlier = match entry.index.as_deref() {
                Some("") => None,
                Some(index) => {
                    let same = |(n, e, _): &(&str, &Entry, String)| {
                        *n == d.name && e.index.as_deref() == Some(index)
                    };
                    let at = fields.arrays.iter().position(same);
                    at.map(|i| fields.arrays.remove(i).1.location.clone())
                }
                None => fields
                    .singles
                    .insert(d.name, (entry, value.clone()))
                    .map(|(e, _)| e.location.clone()),
            };
            if let Some(earlier) = earlier {
                cx.notes.push(format!(
                    "{}: '{}' in {} overrides the value set at {earlier}",
                    entry.location,
                    entry.full_key(),
                    fields.what
                ));
            }
            if entry.index.is_some() {
                fields.arrays.push((d.name, entry, value));
            }
        }
        fields
    }

    /// The table row for `entry`, or an error saying why there is none.
    fn directive(
        &self,
        entry: &Entry,
        scope: Scope,
        cx: &mut Context,
    ) -> Option<&'static directives::Directive> {
        let key = entry.full_key();
        let message = match directives::find_in(&entry.key, scope) {
            None => match directives::closest(&entry.key, scope) {
                Some(near) => format!(
                    "unknown directive '{}' in {} (did you mean '{near}'?)",
                    entry.key, self.what
                ),
                None => format!("unknown directive '{}' in {}", entry.key, self.what),
            },
            Some(d) if d.scope != scope && scope == Scope::Global => {
                format!(
                    "'{}' is a pool directive; it belongs in a pool section, not in [global]",
                    entry.key
                )
            }
            Some(d) if d.scope != scope => {
                format!("'{}' belongs in [global], not in {}", entry.key, self.what)
            }
            Some(d) if d.is_array() && entry.index.is_none() => {
                format!("'{key}' needs brackets: write '{}'", d.name)
            }
            Some(d) if d.name.ends_with("[NAME]") && entry.index.as_deref() == Some("") => {
                format!("'{key}' needs a name in the brackets: write '{}'", d.name)
            }
            Some(d) if !d.is_array() && entry.index.is_some() => {
                format!("'{}' does not take brackets", entry.key)
            }
            Some(d) => return Some(d),
        };
        cx.error(&entry.location, message);
        None
    }

    /// The value of `name` as written (after `$pool`), unparsed.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.singles.get(name).map(|(_, v)| v.as_str())
    }

    pub fn location(&self, name: &str) -> Option<&'a Location> {
        self.singles.get(name).map(|(e, _)| &e.location)
    }

    /// The parsed value of `name`; `None` when it is absent or invalid
    /// (the error is recorded, so a default may stand in for it).
    pub fn get<T>(
        &self,
        cx: &mut Context,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        debug_assert!(
            directives::find(name).is_some(),
            "'{name}' is not in the directive table"
        );
        let (entry, value) = self.singles.get(name)?;
        parse(value)
            .map_err(|expected| invalid(cx, entry, value, &expected))
            .ok()
    }

    pub fn or<T>(
        &self,
        cx: &mut Context,
        name: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        self.get(cx, name, parse).unwrap_or(default)
    }

    /// Like `get`, with an error at the section header when `name` is absent.
    pub fn required<T>(
        &self,
        cx: &mut Context,
        at: &Location,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if !self.singles.contains_key(name) {
            cx.error(
                at,
                format!("{}: missing required directive '{name}'", self.what),
            );
        }
        self.get(cx, name, parse)
    }

    /// Every entry of the array directives `names` (as in the table), in
    /// file order.
    pub fn array(&self, names: &[&str]) -> impl Iterator<Item = (&'a Entry, &str)> {
        self.arrays
            .iter()
            .filter(|(n, ..)| names.contains(n))
            .map(|(_, e, v)| (*e, v.as_str()))
    }
}

pub(super) fn invalid(cx: &mut Context, entry: &Entry, value: &str, expected: &str) {
    let message = format!(
        "invalid value '{value}' for '{}': {expected}",
        entry.full_key()
    );
    cx.error(&entry.location, message);
}

/// A path relative to the config file's directory; empty means unset, as
/// an empty string does in php-fpm.
pub(super) fn path_in(base: &Path) -> impl Fn(&str) -> Result<Option<PathBuf>, String> + '_ {
    |v| Ok((!v.is_empty()).then(|| value::join(base, v)))
}

fn build_global(f: &Fields, cx: &mut Context) -> Global {
    let base = cx.base.clone();
    let path = path_in(&base);
    let dur = value::duration;
    if f.get(cx, "daemonize", value::boolean) == Some(true) {
        let at = f.location("daemonize").expect("just read");
        let msg = "herd runs in the foreground; run it under systemd or another supervisor (daemonize = yes is not supported)";
        cx.error(at, msg.into());
    }
    let error_log = f.get(cx, "error_log", |v| match v {
        "syslog" => {
            Err("a file: syslog is not supported; leave error_log unset to log to stderr".into())
        }
        v => path(v),
    });
    Global {
        pid: f.get(cx, "pid", &path).flatten(),
        error_log: error_log.flatten(),
        log_level: f.or(cx, "log_level", LogLevel::Notice, value::log_level),
        log_format: f.or(cx, "log_format", LogFormat::Text, value::log_format),
        process_control_timeout: f.or(cx, "process_control_timeout", Duration::from_secs(10), dur),
        emergency_restart_threshold: f.or(cx, "emergency_restart_threshold", 0, value::whole),
        emergency_restart_interval: f.or(cx, "emergency_restart_interval", Duration::ZERO, dur),
        socket_dir: f.get(cx, "worker.socket_dir", &path).flatten(),
        control_listen: f.get(cx, "control.listen", &path).flatten(),
        process_max: f.or(cx, "process.max", 0, value::whole),
        process_priority: f.get(cx, "process.priority", value::priority),
        master_threads: f.or(cx, "master.threads", 1, value::whole),
        master_realtime: f.or(cx, "master.realtime", true, value::boolean),
        shutdown_depool_delay: f.or(cx, "shutdown.depool_delay", Duration::ZERO, dur),
        rlimit_files: f.get(cx, "rlimit_files", value::whole),
        rlimit_core: f.get(cx, "rlimit_core", value::rlimit),
        log_limit: f.or(cx, "log_limit", 1024, |v| {
            value::whole(v).and_then(|n: usize| {
                if n >= 1 {
                    Ok(n)
                } else {
                    Err("expected at least 1".into())
                }
            })
        }),
    }
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
