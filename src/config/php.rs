//! The PHP side of a pool section: which engine `command` names and how its
//! processes group (`php.group_size`), the `php_*` settings, and
//! `security.limit_extensions` with the php-cgi settings herd pins so that
//! its script check judges the file php-cgi will really run.

use std::path::Path;

use super::build::{Context, Fields, invalid};
use super::{Group, PhpDefine, PhpEngine, PmMode, ScriptGuard, ScriptLookup, value};

/// What a pool section says about PHP.
pub(super) struct PhpSettings {
    pub defines: Vec<PhpDefine>,
    /// `command` is a PHP engine, or the pool sets `php_*` values.
    pub is_php: bool,
    pub group: Option<Group>,
    pub limit_extensions: Option<Vec<String>>,
    pub script_guard: Option<ScriptGuard>,
}

pub(super) fn settings(
    f: &Fields,
    cx: &mut Context,
    command: Option<&Path>,
    chroot: Option<&Path>,
    max_children: u32,
) -> PhpSettings {
    let mut defines = php_defines(f, cx);
    let engine = command.and_then(php_engine);
    let is_php = !defines.is_empty() || engine.is_some();
    let group = group(f, cx, engine, max_children);
    if engine == Some(PhpEngine::Cgi) {
        cgi_ini_note(f, cx, command.expect("an engine is a command"));
    }
    let limit_extensions = f.get(cx, "security.limit_extensions", extension_list);
    let script_guard = match &group {
        // php-fpm checks the script it resolved itself.
        Some(g) if g.engine == PhpEngine::Fpm => None,
        _ => script_guard(f, cx, is_php, &mut defines, chroot),
    };
    PhpSettings {
        defines,
        is_php,
        group,
        limit_extensions,
        script_guard,
    }
}

/// php-cgi reads a php.ini of its own, not the one tuned for php-fpm:
/// `herd check` says which, unless `args` names one (`-c FILE`).
fn cgi_ini_note(f: &Fields, cx: &mut Context, command: &Path) {
    let args = f.raw("args").unwrap_or_default();
    if args
        .split_whitespace()
        .any(|a| a == "-c" || a.starts_with("-c") || a == "-n")
    {
        return;
    }
    // Debian's layout: php-cgi8.2 reads /etc/php/8.2/cgi/php.ini.
    let name = command
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("php-cgi");
    let version = name.trim_start_matches("php-cgi").trim_start_matches("php");
    let version = version.trim_end_matches("-cgi");
    let debian = Path::new("/etc/php").join(version);
    let which = if !version.is_empty() && debian.join("cgi/php.ini").is_file() {
        format!(
            "{} (and {}/cgi/conf.d), not php-fpm's {}/fpm/php.ini",
            debian.join("cgi/php.ini").display(),
            debian.display(),
            debian.display()
        )
    } else {
        "its own php.ini (`php-cgi -i` shows which), not php-fpm's".to_string()
    };
    let at = f
        .location("command")
        .map_or_else(String::new, |l| format!("{l}: "));
    cx.notes.push(format!(
        "{at}{}: php-cgi reads {which}; add `-c FILE` to args for another, or run php-fpm as the engine (`command = php-fpm...`), which reads php-fpm's",
        f.what
    ));
}

/// The four `php_*` arrays in file order; flags become `1` or `0`.
fn php_defines(f: &Fields, cx: &mut Context) -> Vec<PhpDefine> {
    let names = [
        "php_value[NAME]",
        "php_flag[NAME]",
        "php_admin_value[NAME]",
        "php_admin_flag[NAME]",
    ];
    let mut defines = Vec::new();
    for (entry, v) in f.array(&names) {
        let name = entry.index.clone().expect("array entries have an index");
        let admin = entry.key.starts_with("php_admin_");
        let value = if entry.key.ends_with("_flag") {
            match value::boolean(v) {
                Ok(on) => if on { "1" } else { "0" }.to_string(),
                Err(expected) => {
                    invalid(cx, entry, v, &expected);
                    continue;
                }
            }
        } else {
            v.to_string()
        };
        defines.push(PhpDefine { name, value, admin });
    }
    defines
}

/// The PHP engine `command` names, by its file name: `php-cgi`,
/// `php-cgi8.2`, `php8.2-cgi`, `php82-cgi`; `php-fpm`, `php-fpm8.2`.
fn php_engine(command: &Path) -> Option<PhpEngine> {
    let name = command.file_name()?.to_str()?;
    if !name.starts_with("php") {
        None
    } else if name.contains("fpm") {
        Some(PhpEngine::Fpm)
    } else if name.contains("cgi") {
        Some(PhpEngine::Cgi)
    } else {
        None
    }
}

/// `security.limit_extensions` split as php-fpm splits it: on spaces and
/// tabs, no quoting.
fn extension_list(v: &str) -> Result<Vec<String>, String> {
    Ok(v.split_whitespace().map(String::from).collect())
}

/// `php.group_size`: PHP processes sharing one OPcache. A php-fpm engine
/// runs them all in one group by default, as php-fpm itself does; php-cgi
/// runs one process per worker unless asked (its groups share an OPcache
/// too, through `PHP_FCGI_CHILDREN`).
fn group(
    f: &Fields,
    cx: &mut Context,
    engine: Option<PhpEngine>,
    max_children: u32,
) -> Option<Group> {
    let set = f.get(cx, "php.group_size", value::whole);
    let Some(engine) = engine else {
        if let Some(at) = f.location("php.group_size") {
            let msg = format!(
                "{}: php.group_size needs a php-cgi or php-fpm command",
                f.what
            );
            cx.error(at, msg);
        }
        return None;
    };
    let size = match (set, engine) {
        (Some(0), _) => {
            let at = f.location("php.group_size").expect("set");
            cx.error(
                at,
                format!("{}: php.group_size must be a positive value", f.what),
            );
            return None;
        }
        (Some(n), _) => n.min(max_children.max(1)),
        (None, PhpEngine::Fpm) => max_children.max(1),
        (None, PhpEngine::Cgi) => 1,
    };
    if engine == PhpEngine::Cgi && size == 1 {
        return None;
    }
    if engine == PhpEngine::Cgi
        && let Some((entry, _)) = f
            .array(&["env[NAME]"])
            .find(|(e, _)| e.index.as_deref() == Some("PHP_FCGI_CHILDREN"))
    {
        let msg = format!(
            "{}: env[PHP_FCGI_CHILDREN] and php.group_size both size php-cgi's groups; keep php.group_size",
            f.what
        );
        cx.error(&entry.location, msg);
    }
    Some(Group {
        engine,
        size,
        // The pool's mode is applied once `pm` is read (see `pool.rs`).
        pm: PmMode::Static,
    })
}

/// `security.limit_extensions`, with php-fpm's default (`.php .phar`) for
/// PHP pools and none for other programs, which have no script files; an
/// empty value turns the check off.
///
/// The check must judge the file php-cgi will run, and which file that is
/// depends on `cgi.fix_pathinfo` (and `cgi.discard_path`). herd reads them
/// from the pool's `php_*` values and pins them on php-cgi's command line
/// when the pool leaves them unset (PHP's defaults, 1 and 0), so a php.ini
/// that says otherwise cannot make php-cgi look up a different file.
fn script_guard(
    f: &Fields,
    cx: &mut Context,
    php: bool,
    defines: &mut Vec<PhpDefine>,
    chroot: Option<&Path>,
) -> Option<ScriptGuard> {
    const NAME: &str = "security.limit_extensions";
    let extensions = match f.get(cx, NAME, extension_list) {
        Some(words) => words,
        None if php => vec![".php".to_string(), ".phar".to_string()],
        None => Vec::new(),
    };
    if extensions.is_empty() {
        if php && let Some(at) = f.location(NAME) {
            cx.warnings.push(format!(
                "{at}: {}: security.limit_extensions is empty: the workers will run any file a request names, an uploaded image too",
                f.what
            ));
        }
        return None;
    }
    let lookup = if php {
        let mut setting = |name: &str, default: &str| {
            let set = defines.iter().rev().find(|d| d.name == name);
            let value = set.map_or(default, |d| d.value.as_str()).to_string();
            if set.is_none() {
                defines.push(PhpDefine {
                    name: name.to_string(),
                    value: value.clone(),
                    admin: true,
                });
            }
            php_bool(&value)
        };
        if setting("cgi.fix_pathinfo", "1") {
            ScriptLookup::FixPathinfo
        } else {
            ScriptLookup::Translated {
                discard_path: setting("cgi.discard_path", "0"),
            }
        }
    } else {
        ScriptLookup::AsSent
    };
    Some(ScriptGuard {
        extensions,
        lookup,
        root: chroot.map(Path::to_path_buf),
    })
}

/// A boolean php.ini value as PHP reads it (`zend_ini_parse_bool`): `on`,
/// `yes` or `true` in any case, else whether it starts with a number
/// other than 0, as C's `atoi` reads one.
fn php_bool(v: &str) -> bool {
    if ["on", "yes", "true"]
        .iter()
        .any(|w| v.eq_ignore_ascii_case(w))
    {
        return true;
    }
    let number = v.trim_start();
    let number = number.strip_prefix(['+', '-']).unwrap_or(number);
    number
        .bytes()
        .take_while(u8::is_ascii_digit)
        .any(|d| d != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_reads_booleans_its_own_way() {
        for on in ["1", "On", "yes", "TRUE", "2", " 7", "-1"] {
            assert!(php_bool(on), "{on}");
        }
        for off in ["0", "off", "no", "", "false", "abc", "00"] {
            assert!(!php_bool(off), "{off}");
        }
    }
}
