//! The Kubernetes example without Kubernetes: the pod's two containers
//! run here as the image and the ConfigMaps of
//! `contrib/kubernetes/deployment.yaml` set them up (herd with the pod's
//! herd.conf and php-cgi, nginx with the pod's default.conf, the
//! application the Dockerfile copies), on loopback ports. The readiness
//! probe's path answers 200 once herd serves, the application's pages
//! come through, and on the image's STOPSIGNAL the probe turns 503 while
//! the pages are still served, until herd exits within the pod's grace
//! period.

mod support;

use std::fs;
use std::time::Duration;

use support::nginx::{self, Nginx};
use support::shipped::{self, read, repo, rewrite};
use support::{Dir, Herd, wait_for};

/// contrib/kubernetes/app copied to `www`, as the Dockerfile copies it to
/// /srv/www/current (readable by the workers' user).
fn install_app(www: &std::path::Path) {
    let public = www.join("public");
    fs::create_dir_all(&public).unwrap();
    for page in ["index.php", "health.php"] {
        let to = public.join(page);
        fs::copy(repo(&format!("contrib/kubernetes/app/public/{page}")), &to).unwrap();
        let perms = std::os::unix::fs::PermissionsExt::from_mode(0o644);
        fs::set_permissions(&to, perms).unwrap();
    }
}

/// The values of `key: value` lines in the YAML, in order.
fn yaml_values<'a>(yaml: &'a str, key: &str) -> Vec<&'a str> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
        .collect()
}

#[test]
fn the_pod_serves_and_its_readiness_probe_follows_herd() {
    support::installed("/usr/bin/php-cgi8.2", "php8.2-cgi");
    let yaml = read("contrib/kubernetes/deployment.yaml");
    let dir = Dir::new();
    let www = dir.join("www");
    install_app(&www);
    let www = www.display().to_string();
    let herd_port = support::free_port();
    let http_port = support::free_port();

    let herd_conf = rewrite(
        "deployment.yaml's herd.conf",
        &shipped::yaml_block(&yaml, "herd.conf"),
        &[
            (
                "pid = /run/herd/herd.pid",
                "pid = {dir}/run/herd.pid\nworker.socket_dir = {dir}/run".to_string(),
            ),
            (
                "listen = 127.0.0.1:9000",
                format!("listen = 127.0.0.1:{herd_port}"),
            ),
            ("/srv/www/current", www.clone()),
        ],
    );
    let mut herd = Herd::start_in(dir, &herd_conf);
    let nginx_conf = rewrite(
        "deployment.yaml's default.conf",
        &shipped::yaml_block(&yaml, "default.conf"),
        &[
            (
                "server 127.0.0.1:9000;",
                format!("server 127.0.0.1:{herd_port};"),
            ),
            ("listen 8080;", format!("listen 127.0.0.1:{http_port};")),
            ("/srv/www/current", www),
        ],
    );
    // The nginx image's fastcgi_params, which the config includes.
    fs::copy("/etc/nginx/fastcgi_params", herd.dir.join("fastcgi_params")).unwrap();
    let nginx = Nginx::start_http(herd.dir.path(), &nginx_conf, vec![http_port]);

    let probe = match yaml_values(&yaml, "path")[..] {
        [path] => path,
        ref all => panic!("one probe, on the ping: {all:?}"),
    };
    assert_eq!(probe, "/herd-ping", "the readiness probe's path");
    let get = |path: &str| nginx::try_get(http_port, path, Duration::from_secs(10));
    wait_for(
        "the readiness probe to pass",
        Duration::from_secs(30),
        || get(probe).ok().filter(|(status, _)| *status == 200),
    );
    let (status, body) = nginx.get("/health.php");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = nginx.get("/some/route");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("Hello from herd"), "{body}");
    let (status, body) = nginx.get("/herd-status?json");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"pool\":\"www\""), "{body}");

    // The image's STOPSIGNAL: the probe fails at once, so the pod leaves
    // the Service's endpoints, while herd serves on for
    // shutdown.depool_delay.
    let dockerfile = read("contrib/kubernetes/Dockerfile");
    assert!(dockerfile.contains("\nSTOPSIGNAL SIGQUIT\n"));
    herd.signal(libc::SIGQUIT);
    wait_for(
        "the readiness probe to fail",
        Duration::from_secs(5),
        || get(probe).ok().filter(|(status, _)| *status == 503),
    );
    assert_eq!(
        nginx.get("/health.php").0,
        200,
        "served during the depool delay"
    );
    let grace: u64 = yaml_values(&yaml, "terminationGracePeriodSeconds")[0]
        .parse()
        .unwrap();
    assert_eq!(herd.wait_exit(Duration::from_secs(grace)), Some(0));
}
