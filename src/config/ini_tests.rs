//! Unit tests for stage one, the ini reader.

use std::fs;
use std::path::Path;

use super::*;

fn read(text: &str) -> Document {
    read_str(text, Path::new("f.conf")).unwrap_or_else(|e| panic!("{e:?}"))
}

fn errors(text: &str) -> Vec<String> {
    let errors = read_str(text, Path::new("f.conf")).expect_err("should fail");
    errors.iter().map(|e| e.to_string()).collect()
}

fn pairs(section: &Section) -> Vec<(String, String)> {
    section
        .entries
        .iter()
        .map(|e| (e.full_key(), e.value.clone()))
        .collect()
}

#[test]
fn sections_entries_and_locations() {
    let doc = read(
        "; comment\n# another\n\n[global]\npid = /run/herd.pid\n[www] ; the web pool\nlisten = 9000\n",
    );
    assert_eq!(doc.sections.len(), 2);
    let www = &doc.sections[1];
    assert_eq!(
        (www.name.as_str(), www.location.to_string()),
        ("www", "f.conf:6".to_string())
    );
    assert_eq!(pairs(www), [("listen".to_string(), "9000".to_string())]);
    assert_eq!(www.entries[0].location.line, 7);
}

#[test]
fn inline_comments_and_quotes() {
    let doc = read(concat!(
        "[p]\n",
        "a = plain ; comment\n",
        "b = \"quoted ; kept\" ; cut\n",
        "c = 'single'\n",
        "d = %R \"%m %r\" %s\n",
        "e = \"say \\\"hi\\\"\"\n",
        "f =\n",
        "g = -c 'a;b' x\n",
    ));
    let want = [
        ("a", "plain"),
        ("b", "quoted ; kept"),
        ("c", "single"),
        ("d", "%R \"%m %r\" %s"),
        ("e", "say \"hi\""),
        ("f", ""),
        ("g", "-c 'a;b' x"),
    ];
    let got = pairs(&doc.sections[0]);
    for ((k, v), (gk, gv)) in want.iter().zip(&got) {
        assert_eq!((*k, *v), (gk.as_str(), gv.as_str()));
    }
}

#[test]
fn array_keys() {
    let doc = read("[p]\nenv[PATH] = /bin\nwarmup.request[] = /a\nwarmup.request[] = /b\n");
    let e = &doc.sections[0].entries;
    assert_eq!(
        (e[0].key.as_str(), e[0].index.as_deref()),
        ("env", Some("PATH"))
    );
    assert_eq!(
        (e[1].key.as_str(), e[1].index.as_deref()),
        ("warmup.request", Some(""))
    );
    assert_eq!(e[2].full_key(), "warmup.request[]");
}

#[test]
fn environment_expansion() {
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("HERD_INI_TEST_DIR", "/srv") };
    let doc = read("[p]\na = ${HERD_INI_TEST_DIR}/www\nb = '${HERD_INI_TEST_DIR}'\n");
    assert_eq!(pairs(&doc.sections[0])[0].1, "/srv/www");
    assert_eq!(pairs(&doc.sections[0])[1].1, "${HERD_INI_TEST_DIR}");
    let e = errors("[p]\na = ${HERD_INI_TEST_UNSET}\n");
    assert_eq!(
        e,
        [
            "f.conf:2: environment variable 'HERD_INI_TEST_UNSET' is not set (used as ${HERD_INI_TEST_UNSET}; write ${HERD_INI_TEST_UNSET:-default} for a fallback)"
        ]
    );
    // php 8.3's fallback: used only when the variable is unset.
    let doc = read("[p]\na = ${HERD_INI_TEST_UNSET:-/srv}/x\nb = ${HERD_INI_TEST_DIR:-/y}\n");
    assert_eq!(pairs(&doc.sections[0])[0].1, "/srv/x");
    assert_eq!(pairs(&doc.sections[0])[1].1, "/srv");
}

#[test]
fn include_of_a_missing_directory_is_an_error() {
    // php-fpm: "Unable to globalize" and it does not start.
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("herd.conf");
    fs::write(&main, "[www]\ninclude = pool.d/*.conf\n").unwrap();
    let errors = read_file(&main).unwrap_err();
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!(
            "{}:2: include 'pool.d/*.conf': directory {} does not exist",
            main.display(),
            dir.path().join("pool.d").display()
        )]
    );
    // A plain path that is not there only warns, as in php-fpm.
    fs::write(&main, "[www]\ninclude = /nonexistent/herd.conf\n").unwrap();
    assert_eq!(read_file(&main).unwrap().warnings.len(), 1);
}

#[test]
fn entries_before_a_header_are_global() {
    let doc = read("pid = x\n[www]\n");
    assert!(doc.sections[0].implicit);
    assert_eq!(doc.sections[0].name, "global");
}

#[test]
fn every_bad_line_is_reported() {
    let e = errors("[p]\nlisten 9000\n[oops\nkey with space = 1\n = 2\nv = \"open\n[x] y\n");
    assert_eq!(
        e,
        [
            "f.conf:2: expected 'key = value' or '[section]'",
            "f.conf:3: expected ']' to close the section name",
            "f.conf:4: invalid directive name 'key with space'",
            "f.conf:5: expected 'key = value' or '[section]'",
            "f.conf:6: expected a closing quote",
            "f.conf:7: unexpected 'y' after the section header",
        ]
    );
}

#[test]
fn include_glob_relative_sorted_and_continuing_the_section() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("pool.d")).unwrap();
    fs::write(dir.path().join("pool.d/b.conf"), "[b]\nlisten = 2\n").unwrap();
    fs::write(
        dir.path().join("pool.d/a.conf"),
        "pm = static\n[a]\nlisten = 1\n",
    )
    .unwrap();
    fs::write(dir.path().join("pool.d/skip.txt"), "junk\n").unwrap();
    let main = dir.path().join("herd.conf");
    fs::write(
        &main,
        "[www]\ninclude = pool.d/*.conf\ninclude = pool.d/*.none\n",
    )
    .unwrap();

    let doc = read_file(&main).unwrap();
    let names: Vec<_> = doc.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["www", "a", "b"]);
    // The first included file had no header: its entry joined [www].
    assert_eq!(
        pairs(&doc.sections[0]),
        [("pm".to_string(), "static".to_string())]
    );
    assert_eq!(
        doc.sections[0].entries[0].location.file,
        dir.path().join("pool.d/a.conf")
    );
    assert_eq!(doc.sections[1].location.line, 2);
    assert_eq!(
        doc.warnings,
        [format!(
            "{}:3: include 'pool.d/*.none' matched no files",
            main.display()
        )]
    );
}

#[test]
fn include_cycle_is_an_error_at_the_include_line() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("herd.conf");
    fs::write(&main, "[www]\ninclude = other.conf\n").unwrap();
    fs::write(
        dir.path().join("other.conf"),
        "pm = static\ninclude = herd.conf\n",
    )
    .unwrap();
    let errors = read_file(&main).unwrap_err();
    assert_eq!(errors.len(), 1);
    let other = dir.path().join("other.conf");
    let want = format!(
        "{}:2: failed to include {}: include cycle",
        other.display(),
        main.display()
    );
    assert!(errors[0].to_string().starts_with(&want), "{}", errors[0]);
}

#[test]
fn include_nesting_is_limited_to_five_files() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..6 {
        fs::write(
            dir.path().join(format!("{i}.conf")),
            format!("include = {}.conf\n", i + 1),
        )
        .unwrap();
    }
    fs::write(dir.path().join("6.conf"), "pid = x\n").unwrap();
    let errors = read_file(&dir.path().join("0.conf")).unwrap_err();
    let at = dir.path().join("4.conf");
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}:1: failed to include {}: more than 5 nested files",
            at.display(),
            dir.path().join("5.conf").display()
        )
    );
}
