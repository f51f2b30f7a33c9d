//! The files herd ships (units, configs, snippets) as the packaging tests
//! read them: from the repository, with paths a test must move into its
//! own directory rewritten, and systemd's own tools to judge the units.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A file of the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The text of a file of the repository.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("failed to read {path}: {e}"))
}

/// `text` with each `from` replaced by its `to`; a `from` that is not in
/// the text fails the test (the shipped file changed: update the test).
pub fn rewrite(what: &str, text: &str, pairs: &[(&str, String)]) -> String {
    let mut text = text.to_string();
    for (from, to) in pairs {
        assert!(
            text.contains(from),
            "{what} no longer has {from:?}: update this test"
        );
        text = text.replace(from, to);
    }
    text
}

/// The indented block under `key: |` in a YAML file (the ConfigMaps'
/// files), without its indentation.
pub fn yaml_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next().unwrap_or_else(|| panic!("no {key}: | block"));
    let outer = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > outer)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    body.iter()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every value of `Key=` in a unit file, or `key = ` in an ini file, in
/// order (comment lines never match).
pub fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.trim_start().strip_prefix('='))
        .map(str::trim)
        .collect()
}

/// The one value of `Key=`.
pub fn value<'a>(text: &'a str, key: &str) -> &'a str {
    match values(text, key)[..] {
        [v] => v,
        ref all => panic!("expected one {key}=, found {all:?}"),
    }
}

/// Where systemd's tools are; `None` after saying the test cannot run.
pub fn systemd_analyze() -> Option<PathBuf> {
    let tool = PathBuf::from("/usr/bin/systemd-analyze");
    if tool.exists() {
        Some(tool)
    } else {
        super::skip(
            "systemd-analyze is not installed (package systemd; contrib/test-all.sh installs it)",
        );
        None
    }
}

/// `systemd-analyze verify` on unit files: systemd's own parser, which
/// also checks that every Exec command is an executable and that the
/// units they name (herd.socket for herd.service) load. Any line it
/// prints is a finding and fails the test.
pub fn verify_units(tool: &Path, units: &[PathBuf]) {
    let out = Command::new(tool)
        .arg("verify")
        .args(units)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {units:?}:\n{said}"
    );
}

/// A systemd time span (`6min`, `30s`) in seconds, as systemd reads it.
pub fn timespan(tool: &Path, span: &str) -> f64 {
    let out = Command::new(tool)
        .args(["timespan", span])
        .output()
        .expect("run systemd-analyze timespan");
    let text = String::from_utf8_lossy(&out.stdout);
    let usec: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("μs:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("systemd-analyze timespan {span}: {text}"));
    usec / 1e6
}

/// The default of `directive` in the README's directive reference (which
/// tests/readme.rs keeps in step with the code), in seconds.
pub fn default_secs(directive: &str) -> f64 {
    let readme = read("README.md");
    let row = readme
        .lines()
        .find(|l| l.starts_with(&format!("| `{directive}` |")))
        .unwrap_or_else(|| panic!("no {directive} in the README's directive reference"));
    let default = row.split('|').nth(3).unwrap_or_default().trim();
    let (number, unit) = default.split_at(
        default
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(default.len()),
    );
    let n: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("{directive}: default {default:?} is not a duration"));
    n * match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        other => panic!("{directive}: unknown unit {other:?}"),
    }
}
