//! Unit tests for the script check, on a real directory tree: the rows of
//! the upload attack, php-cgi's path info walk, and bad input.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use bytes::BytesMut;

use super::*;
use crate::fastcgi::pairs::put_pair;

/// A document root with a script, an upload and a directory of uploads.
fn docroot() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    fs::write(root.join("index.php"), "<?php").unwrap();
    fs::write(root.join("evil.jpg"), "<?php").unwrap();
    fs::write(root.join("evil.php.jpg"), "<?php").unwrap();
    fs::create_dir(root.join("uploads")).unwrap();
    fs::write(root.join("uploads/evil.png"), "<?php").unwrap();
    (tmp, root)
}

fn guard(lookup: ScriptLookup) -> ScriptGuard {
    ScriptGuard {
        extensions: vec![".php".into(), ".phar".into()],
        lookup,
        root: None,
    }
}

fn params(pairs: &[(&str, &[u8])]) -> BytesMut {
    let mut buf = BytesMut::new();
    for (name, value) in pairs {
        put_pair(&mut buf, name.as_bytes(), value);
    }
    buf
}

fn path(root: &Path, rest: &str) -> Vec<u8> {
    format!("{}{rest}", root.display()).into_bytes()
}

/// The check with php-cgi's default lookup and nginx's usual params.
fn php(root: &Path, script: &str) -> Result<(), Denial> {
    let p = params(&[("SCRIPT_FILENAME", &path(root, script))]);
    check(&p, &guard(ScriptLookup::FixPathinfo))
}

fn denied(r: Result<(), Denial>) -> bool {
    matches!(r, Err(Denial::Forbidden(_)))
}

#[test]
fn an_upload_reached_through_path_info_is_denied() {
    let (_tmp, root) = docroot();
    assert!(denied(php(&root, "/evil.jpg/x.php")));
    assert!(denied(php(&root, "/uploads/evil.png/.php")));
    assert!(denied(php(&root, "/uploads/evil.png/a/b/c.php")));
    assert!(denied(php(&root, "/evil.php.jpg")));
}

#[test]
fn scripts_run_with_or_without_path_info() {
    let (_tmp, root) = docroot();
    assert_eq!(php(&root, "/index.php"), Ok(()));
    // nginx without fastcgi_split_path_info: php-cgi finds index.php.
    assert_eq!(php(&root, "/index.php/some/route"), Ok(()));
    assert_eq!(php(&root, "/index.php/"), Ok(()));
    assert_eq!(php(&root, "//index.php/x"), Ok(()));
}

#[test]
fn a_missing_script_is_not_found() {
    let (_tmp, root) = docroot();
    assert_eq!(php(&root, "/missing.php"), Err(Denial::NotFound));
    assert_eq!(php(&root, "/uploads/missing.php/x"), Err(Denial::NotFound));
    assert_eq!(php(&root, "/missing/deeper/x.php"), Err(Denial::NotFound));
    let none = params(&[("QUERY_STRING", b"a=b")]);
    assert_eq!(
        check(&none, &guard(ScriptLookup::FixPathinfo)),
        Err(Denial::NotFound)
    );
}

#[test]
fn the_last_of_a_repeated_param_is_the_one_judged() {
    // nginx configs often set SCRIPT_FILENAME twice; PHP keeps the last.
    let (_tmp, root) = docroot();
    let p = params(&[
        ("SCRIPT_FILENAME", &path(&root, "/index.php")),
        ("SCRIPT_FILENAME", &path(&root, "/evil.jpg")),
    ]);
    assert!(denied(check(&p, &guard(ScriptLookup::FixPathinfo))));
}

#[test]
fn path_translated_decides_when_fix_pathinfo_is_off() {
    let (_tmp, root) = docroot();
    // `fastcgi_param PATH_TRANSLATED $document_root$fastcgi_path_info;`
    // with /index.php/evil.jpg: php-cgi would run the upload.
    let p = params(&[
        ("SCRIPT_FILENAME", &path(&root, "/index.php")),
        ("PATH_TRANSLATED", &path(&root, "/evil.jpg")),
    ]);
    let off = ScriptLookup::Translated {
        discard_path: false,
    };
    assert!(denied(check(&p, &guard(off))));
    let discard = ScriptLookup::Translated { discard_path: true };
    assert_eq!(check(&p, &guard(discard)), Ok(()));
    // With fix_pathinfo = 1 and no REDIRECT_URL, PATH_TRANSLATED is
    // only information.
    assert_eq!(check(&p, &guard(ScriptLookup::FixPathinfo)), Ok(()));
}

#[test]
fn apache_style_redirects_follow_path_translated() {
    let (_tmp, root) = docroot();
    let p = params(&[
        ("SCRIPT_FILENAME", b"/usr/bin/php-cgi"),
        ("PATH_TRANSLATED", &path(&root, "/evil.jpg")),
        ("REDIRECT_URL", b"/evil.jpg"),
    ]);
    assert!(denied(check(&p, &guard(ScriptLookup::FixPathinfo))));
}

#[test]
fn bad_paths_are_forbidden_not_run() {
    let (_tmp, root) = docroot();
    let mut nul = path(&root, "/evil.jpg");
    nul.extend_from_slice(b"\0.php");
    let p = params(&[("SCRIPT_FILENAME", &nul)]);
    assert!(denied(check(&p, &guard(ScriptLookup::FixPathinfo))));
    assert!(denied(check(&p, &guard(ScriptLookup::AsSent))));

    assert!(denied(php(&root, "/uploads/../index.php")));
    let relative = params(&[("SCRIPT_FILENAME", b"index.php")]);
    assert!(denied(check(&relative, &guard(ScriptLookup::FixPathinfo))));

    let mut bytes = path(&root, "/");
    bytes.extend_from_slice(b"\xff\xfe.php");
    let p = params(&[("SCRIPT_FILENAME", &bytes)]);
    assert_eq!(
        check(&p, &guard(ScriptLookup::FixPathinfo)),
        Err(Denial::NotFound)
    );

    // Far past PATH_MAX, and thousands of slashes: a few stats, no crash.
    let long = format!("/index.php{}", "/a".repeat(20_000));
    assert_eq!(php(&root, &long), Ok(()));
    let long = format!("/evil.jpg{}.php", "/a".repeat(20_000));
    assert!(denied(php(&root, &long)));

    let truncated = [15u8, 200, b'S'];
    assert!(denied(check(&truncated, &guard(ScriptLookup::FixPathinfo))));
}

#[test]
fn symlinks_are_judged_by_the_name_php_runs() {
    // php-fpm judges the path, not its target: a .php link an admin made
    // to a shared script runs; a .jpg link to a script does not.
    let (_tmp, root) = docroot();
    symlink(root.join("evil.jpg"), root.join("link.php")).unwrap();
    symlink(root.join("index.php"), root.join("link.jpg")).unwrap();
    assert_eq!(php(&root, "/link.php"), Ok(()));
    assert!(denied(php(&root, "/link.jpg")));
}

#[test]
fn a_chroot_pool_is_looked_at_from_inside() {
    let (_tmp, root) = docroot();
    // An absolute link inside the chroot points inside it.
    symlink("/evil.jpg", root.join("abs")).unwrap();
    let mut g = guard(ScriptLookup::FixPathinfo);
    g.root = Some(root.clone());
    let check_in = |script: &[u8]| check(&params(&[("SCRIPT_FILENAME", script)]), &g);
    assert_eq!(check_in(b"/index.php/route"), Ok(()));
    assert!(denied(check_in(b"/evil.jpg/x.php")));
    assert!(denied(check_in(b"/abs/x.php")));
    assert_eq!(check_in(b"/missing.php"), Err(Denial::NotFound));
}

#[test]
fn other_programs_are_judged_by_the_name_sent() {
    let (_tmp, root) = docroot();
    let g = ScriptGuard {
        extensions: vec![".pl".into()],
        lookup: ScriptLookup::AsSent,
        root: None,
    };
    let p = params(&[("SCRIPT_FILENAME", b"/anything/app.pl")]);
    assert_eq!(check(&p, &g), Ok(()));
    let p = params(&[("SCRIPT_FILENAME", &path(&root, "/index.php"))]);
    assert!(denied(check(&p, &g)));
}

#[test]
fn an_extension_alone_is_not_a_script() {
    let g = guard(ScriptLookup::AsSent);
    assert!(g.allows(b"/a.php"));
    assert!(g.allows(b"x.phar"));
    assert!(!g.allows(b".php"));
    assert!(!g.allows(b"/a.PHP"));
    assert!(!g.allows(b"/a.php.jpg"));
}

#[test]
fn apache_s_proxy_script_path_is_denied_saying_what_to_do() {
    let (_tmp, root) = docroot();
    let named = format!("proxy:fcgi://localhost{}/index.php", root.display());
    let p = params(&[("SCRIPT_FILENAME", named.as_bytes())]);
    match check(&p, &guard(ScriptLookup::FixPathinfo)) {
        Err(Denial::Forbidden(why)) => {
            assert!(why.contains("ProxyFCGIBackendType GENERIC"), "{why}");
            assert!(why.contains(&named), "{why}");
        }
        other => panic!("{other:?}"),
    }
}
