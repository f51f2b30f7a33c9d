//! `herd generate`: the man pages and shell completions the package
//! installs, made from the binary's own command line. Each is checked by
//! the program that reads it: man renders every page without a warning
//! (as Debian's lintian checks it), bash and fish really complete a
//! command line with the generated scripts, zsh parses its script.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Dir, herd_cmd};

/// The subcommands `herd [SUB...] --help` lists, as the help prints them.
fn subcommands(path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let (code, out, err) = herd_cmd(&args);
    assert_eq!(code, 0, "herd {args:?}: {err}");
    out.split("Commands:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no Commands: in herd {args:?}:\n{out}"))
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

/// `man -l PAGE` as text with its spacing undone (justified lines get
/// double spaces), failing on any warning man or groff gives.
fn render(page: &Path) -> String {
    let man = support::installed("/usr/bin/man", "man-db");
    let check = Command::new(&man)
        .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
        .arg(page)
        .output()
        .expect("run man");
    let warnings = String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success() && warnings.trim().is_empty(),
        "{}: man --warnings: {warnings}",
        page.display()
    );
    let text = Command::new(&man)
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "200")
        .env("PAGER", "cat")
        .output()
        .expect("run man");
    let text = String::from_utf8_lossy(&text.stdout);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn man_pages_cover_every_subcommand_and_render_cleanly() {
    let dir = Dir::new();
    let out = dir.join("man");
    let (code, _, err) = herd_cmd(&["generate", "man", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    let top = render(&out.join("herd.1"));
    assert!(top.contains("herd - A FastCGI process manager"), "{top}");
    assert!(top.contains("Exit codes: 0 success"), "{top}");
    let commands = subcommands(&[]);
    assert!(commands.len() >= 5, "{commands:?}");
    for sub in &commands {
        assert!(
            top.contains(&format!("herd-{sub}(1)")),
            "herd.1 lists no {sub}:\n{top}"
        );
        let page = render(&out.join(format!("herd-{sub}.1")));
        assert!(page.contains(&format!("herd-{sub}")), "{page}");
    }
    let ctl = subcommands(&["ctl"]);
    assert!(ctl.iter().any(|c| c == "reload"), "{ctl:?}");
    for action in &ctl {
        let page = render(&out.join(format!("herd-ctl-{action}.1")));
        assert!(page.contains(&format!("herd-ctl-{action}")), "{page}");
    }
    let reload = render(&out.join("herd-ctl-reload.1"));
    assert!(reload.contains("--wait"), "{reload}");
}

fn completions(shell: &str, dir: &Dir, name: &str) -> std::path::PathBuf {
    let (code, script, err) = herd_cmd(&["generate", "completions", shell]);
    assert_eq!(code, 0, "{err}");
    assert!(script.contains("ctl"), "{shell}: {script}");
    dir.write(name, &script)
}

/// `shell ARGS...` with `HOME` in `dir` (zsh's compinit writes there):
/// its standard output, failing on a non-zero exit.
fn run_shell(shell: &Path, args: &[&str], dir: &Dir) -> String {
    let out = Command::new(shell)
        .args(args)
        .env("HOME", dir.path())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", shell.display()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        shell.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shell at `path`, or `None` after saying the test cannot run.
fn shell(path: &'static str, package: &str) -> Option<&'static Path> {
    let p = Path::new(path);
    if !p.exists() {
        support::skip(&format!(
            "{path} is not installed (package {package}; contrib/test-all.sh installs it)"
        ));
        return None;
    }
    Some(p)
}

/// What bash's completion of `words` (the last one being completed)
/// offers, through the generated script's function, as bash calls it.
fn bash_complete(script: &Path, dir: &Dir, words: &[&str]) -> Vec<String> {
    let words: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let program = format!(
        "source '{script}'\n\
         COMP_WORDS=({words}); COMP_CWORD={cword}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}\n\
         _herd herd \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
        words = words.join(" "),
    );
    let bash = Path::new("/bin/bash");
    run_shell(bash, &["--norc", "--noprofile", "-c", &program], dir)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn bash_completion_completes_subcommands_and_options() {
    let dir = Dir::new();
    let script = completions("bash", &dir, "herd.bash");
    assert_eq!(bash_complete(&script, &dir, &["herd", "ct"]), ["ctl"]);
    let mut reply = bash_complete(&script, &dir, &["herd", "ctl", "re"]);
    reply.sort();
    assert_eq!(reply, ["reload", "restart"]);
    let reply = bash_complete(&script, &dir, &["herd", "ctl", "reload", "--w"]);
    assert_eq!(reply, ["--wait"]);
}

#[test]
fn fish_completion_completes_subcommands() {
    let Some(fish) = shell("/usr/bin/fish", "fish") else {
        return;
    };
    let dir = Dir::new();
    let script = completions("fish", &dir, "herd.fish");
    let complete = |line: &str| {
        let program = format!("source '{}'; complete -C '{line}'", script.display());
        run_shell(fish, &["--no-config", "-c", &program], &dir)
            .lines()
            .filter_map(|l| l.split('\t').next())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(complete("herd ct"), ["ctl"]);
    assert_eq!(complete("herd ctl up"), ["upgrade"]);
}

#[test]
fn zsh_completion_parses_and_registers_for_herd() {
    let Some(zsh) = shell("/usr/bin/zsh", "zsh") else {
        return;
    };
    let dir = Dir::new();
    let script = completions("zsh", &dir, "_herd");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.starts_with("#compdef herd"), "{text}");
    run_shell(zsh, &["-n", script.to_str().unwrap()], &dir);
    // Sourced after compinit, as zsh loads it from $fpath, the script
    // registers itself as herd's completion function.
    let program = format!(
        "autoload -U compinit; compinit -u -D; source '{}'; print -r -- $_comps[herd]",
        script.display()
    );
    assert_eq!(
        run_shell(zsh, &["-f", "-c", &program], &dir).trim(),
        "_herd"
    );
}
