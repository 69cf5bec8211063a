//! Metrics as operators read them: every metric has help text, the build info, a failure
//! counted; the Grafana dashboard and the alert rules name only metrics that exist (promtool
//! checks the rules where it is found); docs/operating.md documents every metric.

use super::*;

/// `/metrics` of the daemon using `state_dir`, once its admin listener wrote its address.
async fn scrape(state_dir: &Path) -> String {
    let url = admin_url(state_dir).await;
    http_get(&format!("{url}/metrics"))
        .await
        .expect("/metrics answers")
        .1
}

/// The value of the sample line of `name` whose labels contain every `label`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_has_help_build_info_and_an_isolated_batch_failure_counts() {
    let env = Env::new().await;
    // Both files in one batch: sealed at 2 files, long before max_wait. When it fails, the
    // platform does not say which file held the bad row: `isolate` sends each file again alone.
    let config = env.write_config(
        "",
        "max_files = 2\nmax_wait = \"1m\"\non_batch_failure = \"isolate\"",
    );
    write_atomic(&env.drop_dir().join("good.json"), jsonl(0, 3).as_bytes());
    write_atomic(&env.drop_dir().join("bad.json"), b"{\"id\": 1}\n{broken\n");
    let daemon = spawn_daemon(&config, &[], &[]);
    let failed = wait_receipts(&env.failed(), 1, 60).await;
    let archived = wait_receipts(&env.archive(), 1, 120).await;
    assert_eq!(failed[0]["file"], "bad.json", "{failed:#?}");
    assert_eq!(archived[0]["file"], "good.json", "{archived:#?}");
    let metrics = scrape(&env.state_dir()).await;
    stop_daemon(daemon);

    assert_eq!(
        sample(&metrics, "batchdrop_batches_total", &["outcome=\"failed\""]),
        Some(2.0),
        "the batch of both files, then bad.json's own:\n{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "batchdrop_batches_total",
            &["outcome=\"success\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    let build = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        sample(&metrics, "batchdrop_build_info", &[&build, "commit=\""]),
        Some(1.0),
        "{metrics}"
    );
    // Histograms of latency, upload and processing time; record counts; the process.
    let data = format!("dataset=\"{DATASET}\"");
    assert_eq!(
        sample(&metrics, "batchdrop_file_latency_seconds_count", &[&data]),
        Some(1.0),
        "good.json, the one file ingested: {metrics}"
    );
    assert_eq!(
        sample(&metrics, "batchdrop_records_failed_total", &[&data]),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "batchdrop_file_latency_seconds_bucket",
            &[&data, "le=\"+Inf\""]
        ) == Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "batchdrop_upload_duration_seconds_count",
            &[&data]
        ),
        Some(4.0),
        "good.json and bad.json twice each (their batch failed once): {metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "batchdrop_batch_processing_seconds_count",
            &["outcome=\"failed\""]
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "batchdrop_records_ingested_total", &[&data]),
        Some(3.0),
        "{metrics}"
    );
    assert!(sample(&metrics, "process_resident_memory_bytes", &[]).unwrap_or(0.0) > 1e6);
    assert!(sample(&metrics, "process_open_fds", &[]).unwrap_or(0.0) >= 3.0);
    // Every metric exposed has its help text and type.
    let names = metric_names(&metrics);
    assert!(names.len() >= 15, "{metrics}");
    for name in &names {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "{name} has no HELP line:\n{metrics}"
        );
        assert!(metrics.contains(&format!("# TYPE {name} ")), "{name}");
    }
}

/// The `batchdrop_*` and `process_*` metric names an expression (or any text) mentions, a
/// histogram's series (`_bucket`, `_sum`, `_count`) by the histogram's name.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let histograms: Vec<&str> = batchdrop::telemetry::METRICS
        .iter()
        .filter(|(_, kind, _)| matches!(kind, batchdrop::telemetry::Kind::Histogram(_)))
        .map(|(name, _, _)| *name)
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for prefix in ["batchdrop_", "process_"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| histograms.contains(base));
            names.insert(base.map_or(name.clone(), str::to_owned));
        }
    }
    names
}

fn known_metrics() -> std::collections::BTreeSet<String> {
    batchdrop::telemetry::METRICS
        .iter()
        .map(|(name, _, _)| name.to_string())
        .chain(
            batchdrop::process_metrics::PROCESS_METRICS
                .iter()
                .map(|(name, _, _)| name.to_string()),
        )
        .collect()
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_grafana_dashboard_parses_and_shows_only_metrics_that_exist() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("examples/monitoring/grafana-dashboard.json")).unwrap();
    assert_eq!(dashboard["uid"], "batchdrop");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let known = known_metrics();
    let mut shown = std::collections::BTreeSet::new();
    let mut cells = std::collections::HashSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr}");
            for name in &names {
                assert!(known.contains(name), "{title}: no metric {name}");
            }
            shown.extend(names);
            for variable in ["$instance", "$dataset"] {
                if expr.contains(variable) {
                    assert!(
                        variables.contains(&&variable[1..]),
                        "{variable} is not defined"
                    );
                }
            }
        }
        // No two panels on the same grid cell.
        let grid = &panel["gridPos"];
        let (x, y, w, h) = (
            grid["x"].as_u64().unwrap(),
            grid["y"].as_u64().unwrap(),
            grid["w"].as_u64().unwrap(),
            grid["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{title} is wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
    }
    for name in &known {
        if name != "batchdrop_files_discovered_total" {
            assert!(shown.contains(name), "the dashboard does not show {name}");
        }
    }
}

#[test]
fn the_alert_rules_name_only_metrics_that_exist_and_promtool_accepts_them() {
    // The structure is promtool's to check (CI runs `promtool check rules` and `test rules`);
    // without a YAML parser among the dependencies, this test checks what promtool cannot:
    // that every metric named is one batchdrop exports.
    let rules = repo_file("examples/monitoring/alerts.yml");
    let known = known_metrics();
    let named = metric_names(&rules);
    assert!(named.len() >= 6, "{named:?}");
    for name in &named {
        assert!(
            known.contains(name),
            "alerts.yml names no such metric: {name}"
        );
    }
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    for wanted in [
        "BatchdropBatchesStuck",
        "BatchdropFilesFailed",
        "BatchdropIntakePaused",
        "BatchdropPlatformUnreachable",
        "BatchdropQueueOld",
    ] {
        assert!(alerts.contains(&wanted), "no alert {wanted}");
    }
    let tests = repo_file("examples/monitoring/alerts.test.yml");
    for tested in tests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("alertname: "))
    {
        assert!(
            alerts.contains(&tested),
            "alerts.test.yml tests no such alert: {tested}"
        );
    }
    // Where promtool is (CI installs it: PROMTOOL), it checks and unit-tests the rules too.
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/monitoring");
    match Command::new(&promtool).arg("--version").output() {
        Ok(_) => {
            for args in [
                ["check", "rules", "alerts.yml"],
                ["test", "rules", "alerts.test.yml"],
            ] {
                let out = run_for(Command::new(&promtool).args(args).current_dir(&dir), 120);
                assert!(
                    out.status.success(),
                    "promtool {args:?}: {}{}",
                    text(&out.stdout),
                    text(&out.stderr)
                );
            }
        }
        Err(_) => eprintln!("promtool not found ({promtool}): its checks run in .ci/run"),
    }
}

#[test]
fn every_metric_is_documented_for_operators() {
    let operating = repo_file("docs/operating.md");
    for name in known_metrics() {
        assert!(
            operating.contains(&format!("`{name}`")),
            "docs/operating.md lacks {name}"
        );
    }
}
