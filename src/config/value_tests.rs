//! Unit tests for `value.rs`.

use super::*;

#[test]
fn booleans_are_phps() {
    for t in ["yes", "On", "TRUE", "1"] {
        assert_eq!(boolean(t), Ok(true), "{t}");
    }
    for f in ["no", "Off", "false", "0", ""] {
        assert_eq!(boolean(f), Ok(false), "{f}");
    }
    assert!(boolean("maybe").is_err());
}

#[test]
fn durations_take_units_and_compounds() {
    let s = Duration::from_secs;
    assert_eq!(duration("10"), Ok(s(10)));
    assert_eq!(duration("10s"), Ok(s(10)));
    assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(duration("5m"), Ok(s(300)));
    assert_eq!(duration("2h"), Ok(s(7200)));
    assert_eq!(duration("1d"), Ok(s(86400)));
    assert_eq!(duration("1m30s"), Ok(s(90)));
    assert_eq!(
        duration("1h0m5s500ms"),
        Ok(Duration::from_millis(3_605_500))
    );
    for bad in [
        "",
        "s",
        "1m30",
        "10x",
        "-1",
        "1.5s",
        "10 s",
        "99999999999999999999d",
    ] {
        assert!(duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn sizes_are_binary() {
    assert_eq!(size("512"), Ok(512));
    assert_eq!(size("128K"), Ok(128 << 10));
    assert_eq!(size("256m"), Ok(256 << 20));
    assert_eq!(size("2G"), Ok(2 << 30));
    for bad in ["", "M", "1.5M", "12T", "-1K"] {
        assert!(size(bad).is_err(), "{bad}");
    }
}

#[test]
fn whole_numbers_modes_signals() {
    assert_eq!(whole::<u32>("42"), Ok(42));
    assert_eq!(
        whole::<u32>("abc"),
        Err("expected a whole number".to_string())
    );
    assert!(whole::<u32>("-1").is_err());
    assert!(whole::<u8>("300").is_err());
    assert_eq!(mode("0660"), Ok(0o660));
    assert_eq!(mode("755"), Ok(0o755));
    assert!(mode("0889").is_err());
    assert_eq!(signal("TERM"), Ok(libc::SIGTERM));
    assert_eq!(signal("SIGQUIT"), Ok(libc::SIGQUIT));
    assert_eq!(signal("usr2"), Ok(libc::SIGUSR2));
    assert_eq!(signal("9"), Ok(9));
    assert!(signal("BOGUS").is_err());
    assert!(signal("0").is_err());
    assert_eq!(rlimit("unlimited"), Ok(u64::MAX));
    assert_eq!(backlog("-1"), Ok(-1));
    assert!(backlog("-2").is_err());
}

#[test]
fn lists_and_surge() {
    assert_eq!(exit_codes("3, 4 78"), Ok(vec![3, 4, 78]));
    assert!(exit_codes("3, 256").is_err());
    assert_eq!(ip_list(""), Ok(None));
    assert_eq!(ip_list("127.0.0.1, ::1").unwrap().unwrap().len(), 2);
    assert!(ip_list("127.0.0.1, nope").is_err());
    assert_eq!(surge("25%").unwrap().resolve(10), 3);
    assert_eq!(surge("25%").unwrap().resolve(1), 1);
    assert_eq!(surge("0").unwrap().resolve(10), 1);
    assert_eq!(surge("4").unwrap().resolve(10), 4);
    assert!(surge("150%").is_err());
}

#[test]
fn paths_warmup_listen() {
    assert!(uri_path("/status").is_ok());
    for bad in ["/", "status", "/a b", "/a?b"] {
        assert!(uri_path(bad).is_err(), "{bad}");
    }
    let get = warmup("/ping.php").unwrap();
    assert_eq!(
        (get.method.as_str(), get.uri.as_str()),
        ("GET", "/ping.php")
    );
    let post = warmup("POST  /warm?x=1").unwrap();
    assert_eq!(
        (post.method.as_str(), post.uri.as_str()),
        ("POST", "/warm?x=1")
    );
    assert!(warmup("get /x").is_err());
    assert!(warmup("GET x").is_err());

    let base = Path::new("/etc/herd");
    let tcp = |s: &str| ListenAddr::Tcp(s.parse().unwrap());
    assert_eq!(listen("9000", base), Ok(tcp("127.0.0.1:9000")));
    assert_eq!(listen("0.0.0.0:9000", base), Ok(tcp("0.0.0.0:9000")));
    assert_eq!(listen("[::1]:9000", base), Ok(tcp("[::1]:9000")));
    assert_eq!(listen("*:9000", base), Ok(tcp("0.0.0.0:9000")));
    assert_eq!(
        listen("run/www.sock", base),
        Ok(ListenAddr::Unix("/etc/herd/run/www.sock".into()))
    );
    assert_eq!(
        listen("/run/www.sock", base),
        Ok(ListenAddr::Unix("/run/www.sock".into()))
    );
    // php-fpm: neither a colon nor a port is a socket path.
    assert_eq!(
        listen("www.sock", base),
        Ok(ListenAddr::Unix("/etc/herd/www.sock".into()))
    );
    assert!(listen("0", base).is_err());
    assert!(listen("127.0.0.1:http", base).is_err());
}

#[test]
fn words_split_like_a_shell() {
    let w = |s: &str| words(s).unwrap();
    assert_eq!(w("  -c  /etc/php.ini -q "), ["-c", "/etc/php.ini", "-q"]);
    assert_eq!(
        w(r#"-d "a b" 'c "d"' e\ f"#),
        ["-d", "a b", r#"c "d""#, "e f"]
    );
    assert_eq!(w(r#""x\"y\n" '' a"b"c"#), [r#"x"y\n"#, "", "abc"]);
    assert!(w("").is_empty());
    assert!(words("'open").is_err());
    assert!(words("\"open").is_err());
    assert!(words("trailing\\").is_err());
}
