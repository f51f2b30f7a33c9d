//! An uploaded file is never run as PHP: the same attack requests through
//! real nginx to herd (real php-cgi) and to php-fpm 8.2 side by side, with
//! the nginx location herd ships and with two written the insecure way;
//! and bad script paths sent to herd directly.

mod support;

use std::time::Duration;

use bytes::BytesMut;
use herd::fastcgi::{pairs, record};
use support::fcgi::Conn;
use support::nginx::Nginx;
use support::php_fpm::PhpFpm;
use support::{Dir, Herd, user_line};

/// What a PHP file prints only when it runs: its source holds the two
/// halves apart, so a file served as text never contains it.
const RAN: &str = "UPLOAD-RAN";
const UPLOAD: &str = "<?php echo 'UPLOAD', '-RAN';";
const INDEX: &str = "<?php echo 'INDEX-RAN path_info=', $_SERVER['PATH_INFO'] ?? '', ' query=', $_SERVER['QUERY_STRING'];";

/// A document root as an upload form leaves it: a script, and images
/// that hold PHP code.
fn docroot() -> Dir {
    let dir = Dir::new();
    dir.write("index.php", INDEX);
    dir.write("evil.jpg", UPLOAD);
    dir.write("evil.php.jpg", UPLOAD);
    dir.shared("uploads");
    dir.write("uploads/evil.png", UPLOAD);
    // The snippets name fastcgi_params relative to nginx's config.
    std::fs::copy("/etc/nginx/fastcgi_params", dir.join("fastcgi_params")).unwrap();
    dir
}

fn herd_config(listen: &str, extra: &str) -> String {
    let php = support::php_cgi().expect(
        "php-cgi is not installed: run the test command from the README, which installs it",
    );
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [www]\nlisten = {listen}\npm = static\npm.max_children = 2\n\
         command = {php}\nenv[PHP_FCGI_MAX_REQUESTS] = 0\n{user}{extra}",
        php = php.display(),
        user = user_line()
    )
}

/// The three ways the test's nginx reaches PHP, each in front of `upstream`.
fn locations(upstream: &str) -> [String; 3] {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/nginx/herd-php.conf");
    [
        // What herd ships.
        format!("location ~ [^/]\\.php(/|$) {{ include {shipped}; fastcgi_pass {upstream}; }}"),
        // The location herd's README used to ship: no try_files.
        format!(
            "location ~ \\.php$ {{ include fastcgi_params;\n\
             fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
             fastcgi_pass {upstream}; }}"
        ),
        // Looser still, as old tutorials write it: any URI with .php in
        // it, path info split off, PATH_TRANSLATED passed on.
        format!(
            "location ~ \\.php {{ include fastcgi_params;\n\
             fastcgi_split_path_info ^(.+\\.php)(.*)$;\n\
             fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
             fastcgi_param PATH_INFO $fastcgi_path_info;\n\
             fastcgi_param PATH_TRANSLATED $document_root$fastcgi_path_info;\n\
             fastcgi_pass {upstream}; }}"
        ),
    ]
}

const CONFIGS: [&str; 3] = ["shipped", "no try_files", "loose"];

const ATTACKS: [&str; 6] = [
    "/evil.jpg/x.php",
    "/evil.jpg%00.php",
    "/uploads/evil.png/.php",
    "/evil.php.jpg",
    "/uploads/evil.png/x.php?a=b",
    "/index.php/../evil.jpg/x.php",
];

#[test]
fn an_upload_never_runs_as_php_whatever_the_nginx_config() {
    let dir = docroot();
    let fpm = PhpFpm::start(dir.path(), 2, "");
    let herd_addr = format!("127.0.0.1:{}", support::free_port());
    let root = dir.path().to_path_buf();
    let herd = Herd::start_in(dir, &herd_config(&herd_addr, ""));
    herd.wait_ready(2);
    let mut servers = Vec::new();
    for upstream in [&herd_addr, &fpm.addr] {
        servers.extend(locations(upstream));
    }
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let nginx = Nginx::start_servers(&root, "", &servers);
    let (herd_ports, fpm_ports) = nginx.ports.split_at(3);

    let get = |port: u16, uri: &str| {
        support::nginx::try_get(port, uri, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("GET {uri} on port {port}: {e}"))
    };
    let mut table = Vec::new();
    for (i, config) in CONFIGS.iter().enumerate() {
        for uri in ATTACKS {
            let (herd_status, herd_body) = get(herd_ports[i], uri);
            let (fpm_status, fpm_body) = get(fpm_ports[i], uri);
            table.push(format!(
                "{config:>12} {uri:<32} herd {herd_status} php-fpm {fpm_status}"
            ));
            assert!(
                !herd_body.contains(RAN),
                "herd ran an upload: {config}, {uri}"
            );
            assert!(
                !fpm_body.contains(RAN),
                "php-fpm ran an upload: {config}, {uri}"
            );
            assert_eq!(
                herd_status, fpm_status,
                "{config}, {uri}: herd answered {herd_status} ({herd_body:?}), php-fpm {fpm_status} ({fpm_body:?})"
            );
        }
        // A front controller keeps its route (the `\.php$` location
        // never passes it on); a missing script is a 404.
        for port in [herd_ports[i], fpm_ports[i]] {
            let (status, body) = get(port, "/index.php/route?x=1");
            if i == 1 {
                assert_eq!(status, 404, "{config}: {body}");
            } else {
                assert_eq!(status, 200, "{config}: {body}");
                assert_eq!(body, "INDEX-RAN path_info=/route query=x=1", "{config}");
            }
            assert_eq!(get(port, "/missing.php").0, 404, "{config}");
        }
    }
    eprintln!("{}", table.join("\n"));
    // The upload requested the classic way is refused by herd itself with
    // php-fpm's answer, and logged.
    let (status, body) = get(herd_ports[1], "/evil.jpg/x.php");
    assert_eq!((status, body.as_str()), (403, "Access denied.\n"));
    let lines = herd.wait_log("security.limit_extensions", 1, Duration::from_secs(5));
    assert!(lines[0].contains("evil.jpg'"), "{lines:?}");
}

/// A request with `SCRIPT_FILENAME` given as raw bytes, straight to herd.
fn request_with_script(id: u16, script: &[u8]) -> BytesMut {
    let mut params = BytesMut::new();
    for (k, v) in [
        (&b"REQUEST_METHOD"[..], &b"GET"[..]),
        (b"REQUEST_URI", b"/x.php"),
        (b"SCRIPT_NAME", b"/x.php"),
        (b"SCRIPT_FILENAME", script),
        (b"REDIRECT_STATUS", b"200"),
    ] {
        pairs::put_pair(&mut params, k, v);
    }
    let mut out = BytesMut::new();
    record::put_request(&mut out, id, true, &params, b"");
    out
}

#[test]
fn bad_script_paths_get_403_or_404_and_never_run() {
    let dir = docroot();
    let root = dir.path().display().to_string();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(dir, &herd_config(&addr, ""));
    let pids = herd.wait_ready(2);
    let at = |rest: &[u8]| [root.as_bytes(), rest].concat();
    let long_route = [b"/index.php".as_slice(), &b"/a".repeat(3000)].concat();
    let long_upload = [b"/evil.jpg".as_slice(), &b"/a".repeat(3000), b".php"].concat();
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("'..'", at(b"/uploads/../evil.jpg"), &[403]),
        ("'..' to a script", at(b"/uploads/../index.php"), &[403]),
        ("NUL", at(b"/evil.jpg\0.php"), &[403]),
        ("NUL after a script", at(b"/index.php\0.jpg"), &[403]),
        ("6 KB to an upload", at(&long_upload), &[403]),
        ("non-UTF-8", at(b"/\xff\xfe\x80.php"), &[404]),
        ("non-UTF-8 to an upload", at(b"/evil.jpg/\xff.php"), &[403]),
        ("relative", b"evil.jpg".to_vec(), &[403]),
        ("empty", Vec::new(), &[404]),
    ];
    let mut conn = Conn::open(&addr);
    for (i, (what, script, expected)) in cases.iter().enumerate() {
        let id = i as u16 + 1;
        conn.send(&request_with_script(id, script));
        let reply = conn.reply(id).unwrap_or_else(|| panic!("{what}: no reply"));
        assert!(
            expected.contains(&reply.status()),
            "{what}: {} {}",
            reply.status(),
            reply.body()
        );
        assert!(!reply.body().contains(RAN), "{what}: ran the upload");
    }
    // A 6 KB path info to a real script still runs it, as php-fpm would.
    conn.send(&request_with_script(100, &at(&long_route)));
    let reply = conn.reply(100).expect("a reply");
    assert_eq!(reply.status(), 200, "{}", reply.body());
    assert!(reply.body().starts_with("INDEX-RAN"), "{}", reply.body());
    // Seven 403s, each accounted for in the log (a burst shares lines).
    support::wait_for("every 403 logged", Duration::from_secs(5), || {
        let lines = herd.log_lines("403 for GET /x.php");
        (support::refusals_accounted(&lines) == 7).then_some(())
    });
    // No worker was touched: the same two serve on.
    let (mut now, mut before) = (herd.worker_pids(), pids);
    now.sort();
    before.sort();
    assert_eq!(now, before);
}

#[test]
fn herd_check_warns_when_a_php_pool_allows_every_extension() {
    let dir = Dir::new();
    let conf = herd_config("127.0.0.1:9", "security.limit_extensions =\n");
    let path = dir.write("herd.conf", &support::expand(&conf, &dir));
    let (code, out, err) = support::herd_cmd(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("pool 'www': security.limit_extensions is empty"),
        "{text}"
    );
}
