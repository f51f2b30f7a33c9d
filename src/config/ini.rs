//! Stage one: php-fpm's ini dialect into sections of raw entries, each with
//! its `file:line`, following `include = glob` lines. Nothing here knows
//! what a directive means; every malformed line is reported, not just the
//! first.

use std::fs;
use std::path::{Path, PathBuf};

use super::{ConfigError, Location};

/// php-fpm refuses to nest more than 5 files; the main file counts.
const MAX_NESTED_FILES: usize = 5;

const EXPECTED_LINE: &str = "expected 'key = value' or '[section]'";

/// Every section of the main file and its includes, in reading order.
#[derive(Debug, Default)]
pub struct Document {
    pub sections: Vec<Section>,
    /// Problems that do not stop herd, each starting with `file:line: `.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub struct Section {
    pub name: String,
    pub location: Location,
    /// Made up for entries written before the first header, which php-fpm
    /// reads as global options; `location` is then the first entry's.
    pub implicit: bool,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// The name before any brackets: `env` for `env[PATH]`.
    pub key: String,
    /// `Some("PATH")` for `env[PATH]`, `Some("")` for `warmup.request[]`.
    pub index: Option<String>,
    /// Trimmed, unquoted, with `${NAME}` and `${NAME:-default}` expanded.
    pub value: String,
    pub location: Location,
}

impl Entry {
    /// The key as written, brackets included.
    pub fn full_key(&self) -> String {
        match &self.index {
            Some(i) => format!("{}[{i}]", self.key),
            None => self.key.clone(),
        }
    }
}

#[cfg(test)]
pub fn read_file(path: &Path) -> Result<Document, Vec<ConfigError>> {
    read_file_in(path, None)
}

/// Like [`read_file`], with php-fpm's prefix (`-p`) for relative includes.
pub fn read_file_in(path: &Path, prefix: Option<&Path>) -> Result<Document, Vec<ConfigError>> {
    whole(read_file_partly(path, prefix)?)
}

/// Like [`read_file_in`], but what could be read comes back beside the
/// errors (a bad line is left out): for `herd ctl`, which needs one path
/// from a file that may have a typo elsewhere. Fails only when the file
/// itself cannot be read.
pub fn read_file_partly(
    path: &Path,
    prefix: Option<&Path>,
) -> Result<(Document, Vec<ConfigError>), Vec<ConfigError>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(read_partly(&text, path, prefix)),
        Err(e) => Err(vec![ConfigError {
            location: None,
            message: format!("failed to read {}: {e}", path.display()),
        }]),
    }
}

/// The document when nothing went wrong, else every error.
fn whole((doc, errors): (Document, Vec<ConfigError>)) -> Result<Document, Vec<ConfigError>> {
    if errors.is_empty() {
        Ok(doc)
    } else {
        Err(errors)
    }
}

/// Reads `text` as if it were the file `origin`: relative includes are
/// looked up beside it.
#[cfg(test)]
pub fn read_str(text: &str, origin: &Path) -> Result<Document, Vec<ConfigError>> {
    read_str_in(text, origin, None)
}

/// Like [`read_str`]. With `prefix` (php-fpm's `-p`), relative includes
/// are read against it, as php-fpm reads them. Without, they are read
/// beside the including file; and when the main file sits in an `etc`
/// directory (php-fpm's own layout, `$prefix/etc/php-fpm.conf`, as in the
/// official Docker image's `include=etc/php-fpm.d/*.conf`), an include
/// whose directory is not there is looked for under that prefix too.
pub fn read_str_in(
    text: &str,
    origin: &Path,
    prefix: Option<&Path>,
) -> Result<Document, Vec<ConfigError>> {
    whole(read_partly(text, origin, prefix))
}

fn read_partly(text: &str, origin: &Path, prefix: Option<&Path>) -> (Document, Vec<ConfigError>) {
    let implied = || {
        let dir = std::path::absolute(origin).ok()?.parent()?.to_path_buf();
        (dir.file_name()? == "etc").then(|| dir.parent().map(Path::to_path_buf))?
    };
    let mut reader = Reader {
        open: vec![identity(origin)],
        prefix: match prefix {
            Some(p) => Prefix::Given(p.to_path_buf()),
            None => implied().map_or(Prefix::None, Prefix::Layout),
        },
        ..Reader::default()
    };
    reader.file(text, origin);
    (reader.doc, reader.errors)
}

#[derive(Default)]
struct Reader {
    doc: Document,
    /// The section entries go to; as in php-fpm it stays open across the
    /// end of an included file, so an include that opens sections leaves
    /// the last of them current.
    current: Option<usize>,
    errors: Vec<ConfigError>,
    /// The files being read, outermost first, to catch include cycles.
    open: Vec<PathBuf>,
    prefix: Prefix,
}

/// Where relative includes may be read, besides the including file's
/// directory.
#[derive(Default)]
enum Prefix {
    #[default]
    None,
    /// `-p`: the only place, as in php-fpm.
    Given(PathBuf),
    /// Implied by a main file in `<prefix>/etc/`: the second place.
    Layout(PathBuf),
}

impl Reader {
    fn file(&mut self, text: &str, path: &Path) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let location = Location {
                file: path.to_path_buf(),
                line: i as u32 + 1,
            };
            if let Err(message) = self.line(raw.trim(), &location) {
                self.errors.push(ConfigError {
                    location: Some(location),
                    message,
                });
            }
        }
    }

    fn line(&mut self, line: &str, location: &Location) -> Result<(), String> {
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            return Ok(());
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = section_name(rest)?;
            self.open_section(name, location.clone(), false);
            return Ok(());
        }
        let (key, value) = line.split_once('=').ok_or(EXPECTED_LINE)?;
        let (key, index) = split_key(key.trim())?;
        let value = unquote(value)?;
        if key == "include" && index.is_none() {
            self.include(&value, location);
            return Ok(());
        }
        let entry = Entry {
            key,
            index,
            value,
            location: location.clone(),
        };
        let current = match self.current {
            Some(i) => i,
            None => self.open_section("global".into(), entry.location.clone(), true),
        };
        self.doc.sections[current].entries.push(entry);
        Ok(())
    }

    fn open_section(&mut self, name: String, location: Location, implicit: bool) -> usize {
        self.doc.sections.push(Section {
            name,
            location,
            implicit,
            entries: Vec::new(),
        });
        self.current = Some(self.doc.sections.len() - 1);
        self.doc.sections.len() - 1
    }

    /// Reads every file matching `pattern`, in name order, right here.
    fn include(&mut self, pattern: &str, at: &Location) {
        let beside = at.file.parent().filter(|d| !d.as_os_str().is_empty());
        let mut dir = match &self.prefix {
            Prefix::Given(prefix) => Some(prefix.as_path()),
            _ => beside,
        };
        if let Prefix::Layout(prefix) = &self.prefix
            && Path::new(pattern).is_relative()
            && listed_dir(beside, pattern).is_some_and(|d| !d.is_dir())
        {
            dir = Some(prefix.as_path());
        }
        let dir = dir.map(Path::to_path_buf);
        let full = match dir.as_deref() {
            Some(dir) if Path::new(pattern).is_relative() => {
                // The directory is a literal path, not part of the pattern.
                format!(
                    "{}/{pattern}",
                    glob::Pattern::escape(&dir.to_string_lossy())
                )
            }
            _ => pattern.to_string(),
        };
        let mut files: Vec<PathBuf> = match glob::glob(&full) {
            Ok(paths) => paths
                .filter_map(Result::ok)
                .filter(|p| !p.is_dir())
                .collect(),
            Err(e) => {
                return self.error(
                    at,
                    format!("invalid include pattern '{pattern}': {}", e.msg),
                );
            }
        };
        files.sort();
        if files.is_empty() {
            // As php-fpm: a directory the pattern has to list must exist
            // (`pool.d/*.conf` with no `pool.d` is a broken install), while
            // a pattern that simply matches nothing only warns.
            if let Some(dir) = listed_dir(dir.as_deref(), pattern).filter(|d| !d.is_dir()) {
                let msg = format!(
                    "include '{pattern}': directory {} does not exist",
                    dir.display()
                );
                return self.error(at, msg);
            }
            self.doc
                .warnings
                .push(format!("{at}: include '{pattern}' matched no files"));
        }
        for file in files {
            if self.open.len() >= MAX_NESTED_FILES {
                let msg = format!(
                    "failed to include {}: more than {MAX_NESTED_FILES} nested files",
                    file.display()
                );
                return self.error(at, msg);
            }
            let id = identity(&file);
            if self.open.contains(&id) {
                let msg = format!(
                    "failed to include {}: include cycle (it is already being read)",
                    file.display()
                );
                return self.error(at, msg);
            }
            match fs::read_to_string(&file) {
                Ok(text) => {
                    self.open.push(id);
                    self.file(&text, &file);
                    self.open.pop();
                }
                Err(e) => self.error(at, format!("failed to include {}: {e}", file.display())),
            }
        }
    }

    fn error(&mut self, at: &Location, message: String) {
        self.errors.push(ConfigError {
            location: Some(at.clone()),
            message,
        });
    }
}

/// The directory glob must read to expand `pattern` (relative to the
/// including file's `dir`): the literal path before its first component
/// with a wildcard; `None` for a pattern without wildcards.
fn listed_dir(dir: Option<&Path>, pattern: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = pattern.split('/').collect();
    let first_wild = parts.iter().position(|c| c.contains(['*', '?', '[']))?;
    let literal = match parts[..first_wild].join("/") {
        l if l.is_empty() && pattern.starts_with('/') => "/".to_string(),
        l => l,
    };
    Some(match dir {
        Some(dir) if Path::new(pattern).is_relative() => dir.join(literal),
        _ => PathBuf::from(literal),
    })
}

/// The name a file is known by for cycle checks, whatever path reached it.
fn identity(path: &Path) -> PathBuf {
    fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// `rest` is a header line after its `[`; a comment may follow the `]`.
fn section_name(rest: &str) -> Result<String, String> {
    let (name, after) = rest
        .split_once(']')
        .ok_or("expected ']' to close the section name")?;
    let after = after.trim();
    if !(after.is_empty() || after.starts_with(';') || after.starts_with('#')) {
        return Err(format!("unexpected '{after}' after the section header"));
    }
    let name = name.trim();
    if name.is_empty() {
        return Err("empty section name".into());
    }
    Ok(name.to_string())
}

/// `name`, `name[index]` or `name[]`.
fn split_key(key: &str) -> Result<(String, Option<String>), String> {
    let (name, index) = match key.split_once('[') {
        Some((name, rest)) => {
            let index = rest.strip_suffix(']').filter(|i| !i.contains(['[', ']']));
            let index = index.ok_or_else(|| format!("expected 'name[index]', got '{key}'"))?;
            (name.trim_end(), Some(index.trim().to_string()))
        }
        None => (key, None),
    };
    if name.is_empty() {
        return Err(EXPECTED_LINE.into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(format!("invalid directive name '{name}'"));
    }
    Ok((name.to_string(), index))
}

/// Cuts an inline `;` comment (outside quotes), trims, removes quotes around
/// the whole value, and expands `${NAME}` except inside single quotes.
/// Quotes inside a value are kept: `args` splits on them later.
fn unquote(raw: &str) -> Result<String, String> {
    let value = strip_comment(raw)?.trim();
    let bytes = value.as_bytes();
    let whole_quoted = bytes.len() >= 2
        && matches!(bytes[0], b'"' | b'\'')
        && closing_quote(value, 0) == Some(bytes.len() - 1);
    if !whole_quoted {
        return expand_env(value);
    }
    let inner = &value[1..value.len() - 1];
    if bytes[0] == b'\'' {
        return Ok(inner.to_string());
    }
    expand_env(&inner.replace("\\\"", "\"").replace("\\\\", "\\"))
}

fn strip_comment(raw: &str) -> Result<&str, String> {
    let mut i = 0;
    while i < raw.len() {
        match raw.as_bytes()[i] {
            b';' => return Ok(&raw[..i]),
            b'"' | b'\'' => i = closing_quote(raw, i).ok_or("expected a closing quote")?,
            _ => {}
        }
        i += 1;
    }
    Ok(raw)
}

/// The index of the quote closing the one at `open`; a backslash escapes
/// the next character inside double quotes only, as in php's ini.
fn closing_quote(s: &str, open: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let quote = bytes[open];
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 1,
            b if b == quote => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// `${NAME}` from the process environment, or `${NAME:-default}` with a
/// fallback for an unset NAME (php 8.3's ini syntax). Unset without a
/// fallback is an error rather than an empty string, so a missing variable
/// cannot silently empty a path.
fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or("expected '}' to close '${'")?;
        let inner = &rest[start + 2..start + end];
        let (name, fallback) = match inner.split_once(":-") {
            Some((name, fallback)) => (name, Some(fallback)),
            None => (inner, None),
        };
        match (std::env::var(name), fallback) {
            (Ok(v), _) => out.push_str(&v),
            (Err(_), Some(fallback)) => out.push_str(fallback),
            (Err(_), None) => {
                return Err(format!(
                    "environment variable '{name}' is not set (used as ${{{name}}}; \
                     write ${{{name}:-default}} for a fallback)"
                ));
            }
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
#[path = "ini_tests.rs"]
mod tests;
