//! Unit tests for `metrics.rs`.

use super::*;
use crate::status::tests::sample;

fn render(pools: &[&PoolStatus]) -> String {
    let mut text = String::new();
    write(&mut text, pools);
    text
}

/// The family a sample belongs to, by the suffixes its type allows.
fn family_of(sample: &str, family: &str, kind: &str) -> bool {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total"],
        "histogram" => &["_bucket", "_count", "_sum"],
        "info" => &["_info"],
        _ => &[""],
    };
    suffixes.iter().any(|s| format!("{family}{s}") == sample)
}

/// Checks OpenMetrics' structure: each family declared once, before
/// its samples, which all follow it; returns the sample lines.
fn check(text: &str) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    let (mut family, mut kind) = ("", "");
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, k) = rest.split_once(' ').unwrap();
            assert!(seen.insert(name.to_string()), "{name} declared twice");
            (family, kind) = (name, k);
        } else if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, unit) = rest.split_once(' ').unwrap();
            assert_eq!(name, family);
            assert!(name.ends_with(&format!("_{unit}")), "{line}");
        } else if !line.starts_with("# HELP ") {
            let name = &line[..line.find('{').unwrap()];
            assert!(family_of(name, family, kind), "{line} after {family}");
            samples.push(line);
        }
    }
    samples
}

#[test]
fn one_pool_has_every_family_with_its_samples() {
    let s = sample();
    let text = render(&[&s]);
    let samples = check(&text);
    for line in [
        "herd_requests_total{pool=\"www\",generation=\"1\"} 3",
        "herd_requests_total{pool=\"www\",generation=\"none\"} 1",
        "herd_failures_total{pool=\"www\",kind=\"deploy_refused\"} 0",
        "herd_request_duration_seconds_bucket{pool=\"www\",le=\"0.001\"} 1",
        "herd_request_duration_seconds_bucket{pool=\"www\",le=\"0.0025\"} 2",
        "herd_request_duration_seconds_bucket{pool=\"www\",le=\"1.0\"} 4",
        "herd_request_duration_seconds_bucket{pool=\"www\",le=\"+Inf\"} 4",
        "herd_request_duration_seconds_count{pool=\"www\"} 4",
        "herd_request_duration_seconds_sum{pool=\"www\"} 0.73201",
        "herd_queue_wait_seconds_bucket{pool=\"www\",le=\"0.025\"} 3",
        "herd_queue_wait_seconds_count{pool=\"www\"} 4",
        "herd_queue_length{pool=\"www\"} 1",
        "herd_workers{pool=\"www\",generation=\"1\",state=\"idle\"} 1",
        "herd_workers{pool=\"www\",generation=\"1\",state=\"retiring\"} 0",
        "herd_spawns_total{pool=\"www\"} 2",
        "herd_backoff_delay_seconds{pool=\"www\"} 0",
        "herd_pool_unavailable{pool=\"www\"} 0",
        "herd_deploy_state{pool=\"www\",herd_deploy_state=\"stable\"} 1",
        "herd_deploy_state{pool=\"www\",herd_deploy_state=\"rolling_out\"} 0",
        "herd_rollout_target{pool=\"www\"} 2",
        "herd_generation_info{pool=\"www\",generation=\"1\",state=\"stable\"} 1",
        "herd_php_processes{pool=\"www\",generation=\"1\"} 1",
        "herd_php_resident_bytes{pool=\"www\",generation=\"1\"} 2048",
        "herd_php_engine_processes{pool=\"www\",generation=\"1\",state=\"running\"} 1",
    ] {
        assert!(samples.contains(&line), "missing {line}:\n{text}");
    }
    assert!(text.contains("# UNIT herd_request_duration_seconds seconds\n"));
    assert!(!text.contains("# EOF"), "the caller ends the document");
}

#[test]
fn several_pools_share_each_family() {
    let a = sample();
    let mut b = sample();
    b.pool = "api \"v2\"".into();
    b.metrics.workers = Vec::new();
    b.metrics.deploy.state = crate::pool::DeployState::RollingOut;
    b.state = "a worker exited early; next attempt in 1.6s".into();
    let text = render(&[&a, &b]);
    let samples = check(&text);
    let b_label = "pool=\"api \\\"v2\\\"\"";
    for family in [
        "herd_requests_total",
        "herd_queue_limit",
        "herd_rollout_old",
    ] {
        for pool in ["pool=\"www\"", b_label] {
            assert!(
                samples
                    .iter()
                    .any(|l| l.starts_with(&format!("{family}{{{pool}"))),
                "{family} for {pool}:\n{text}"
            );
        }
    }
    // A pool without workers still shows its generation's states.
    assert!(samples.contains(
        &format!("herd_workers{{{b_label},generation=\"1\",state=\"busy\"}} 0").as_str()
    ));
    assert!(samples.contains(
        &format!("herd_deploy_state{{{b_label},herd_deploy_state=\"rolling_out\"}} 1").as_str()
    ));
    assert!(samples.contains(&format!("herd_pool_unavailable{{{b_label}}} 1").as_str()));
    // A pool without PHP groups has no PHP process samples.
    b.processes.iter_mut().for_each(|p| p.group.clear());
    let text = render(&[&a, &b]);
    assert!(
        !text.contains(&format!("herd_php_processes{{{b_label}")),
        "{text}"
    );
}

#[test]
fn backoff_delay_follows_the_supervisors_backoff() {
    assert_eq!(backoff_delay(0), Duration::ZERO);
    assert_eq!(backoff_delay(1), Duration::from_millis(100));
    assert_eq!(backoff_delay(4), Duration::from_millis(800));
    assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(30));
}
