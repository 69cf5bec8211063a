//! Operating batchdrop: metrics that count what happened, readiness that follows the platform,
//! live reload on SIGHUP, and systemd notifications — all with the real binary.

use crate::support;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use batchdrop_emulator::{Emulator, EmulatorConfig};
use support::*;

/// The value of a metric line `name{labels} value` whose name and labels contain `needle`s.
fn metric(text: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let daemon = spawn_daemon(&config, &[], &[]);
    let url = admin_url(&env.state_dir()).await;
    let mut bytes = 0;
    for i in 0..3 {
        let body = jsonl(i * 10, 10);
        bytes += body.len();
        write_atomic(&env.drop_dir().join(format!("ok{i}.json")), body.as_bytes());
    }
    wait_receipts(&env.archive(), 3, 60).await;
    // Alone, so that it does not take good files down with its batch.
    write_atomic(&env.drop_dir().join("bad.json"), b"{nope\n");
    bytes += 6;
    wait_receipts(&env.failed(), 1, 60).await;
    // A receipt is written before its file is counted, and the queue gauges are the store's
    // counts as they were up to two seconds ago: wait for both to catch up, then check every
    // figure exactly (a count that overshoots still fails).
    let metrics = format!("{url}/metrics");
    let text = eventually(
        30,
        "the failed file counted and the queue gauges fresh",
        || {
            let metrics = metrics.clone();
            async move {
                let (_, text) = http_get(&metrics).await?;
                let caught_up = metric(&text, &["batchdrop_files_failed_total", DATASET]) >= 1.0
                    && metric(&text, &["batchdrop_queue_files", "state=\"done\""]) >= 3.0;
                caught_up.then_some(text)
            }
        },
    )
    .await;
    stop_daemon(daemon);
    assert_eq!(
        metric(
            &text,
            &["batchdrop_files_ingested_total", DATASET, "watch=\"drop\""]
        ),
        3.0,
        "by dataset and by watch (the folder as written in the config): {text}"
    );
    assert_eq!(
        metric(&text, &["batchdrop_files_failed_total", DATASET]),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, &["batchdrop_files_discovered_total", DATASET]),
        4.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, &["batchdrop_bytes_uploaded_total", DATASET]),
        bytes as f64,
        "{text}"
    );
    assert!(
        metric(&text, &["batchdrop_batches_total", "outcome=\"success\""]) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, &["batchdrop_batches_total", "outcome=\"failed\""]) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, &["batchdrop_queue_files", "state=\"done\""]),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, &["batchdrop_platform_reachable"]),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_flips_when_the_platform_is_unreachable_and_back() {
    let env = Env::new().await;
    // A second platform that this test can stop and start again on the same port.
    let data = env.dir.path().join("platform2");
    let emu = Emulator::start(([127, 0, 0, 1], 0).into(), &data, EmulatorConfig::default())
        .await
        .unwrap();
    // The watch's dataset exists there: pre-flight blocks (not ready) a watch whose does not.
    emu.ensure_dataset(DATASET, "test dataset").await.unwrap();
    let addr = emu.local_addr();
    let config = env.write_config_for(&emu.base_url(), "", "");
    let daemon = spawn_daemon(&config, &[], &[]);
    let url = admin_url(&env.state_dir()).await;
    let ready = |expect: u16| {
        let url = url.clone();
        async move {
            let (status, body) = http_get(&format!("{url}/readyz")).await?;
            (status == expect).then_some(body)
        }
    };
    eventually(30, "ready with the platform up", || ready(200)).await;
    assert_eq!(http_get(&format!("{url}/healthz")).await.unwrap().0, 200);

    emu.shutdown().await;
    let body = eventually(30, "not ready with the platform down", || ready(503)).await;
    assert!(body.contains("platform"), "says why: {body}");
    assert_eq!(
        http_get(&format!("{url}/healthz")).await.unwrap().0,
        200,
        "still alive"
    );

    let emu = Emulator::start(addr, &data, EmulatorConfig::default())
        .await
        .unwrap();
    eventually(30, "ready again once the platform is back", || ready(200)).await;
    stop_daemon(daemon);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_watch_and_removes_another_and_a_bad_config_keeps_the_old_one() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let daemon = spawn_daemon(&config, &[], &[]);
    admin_url(&env.state_dir()).await;
    write_atomic(&env.drop_dir().join("first.json"), jsonl(0, 5).as_bytes());

    // An invalid config is rejected; the old one stays in force.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "this is = = not toml").unwrap();
    signal(&daemon, libc::SIGHUP);
    let log_path = config.with_file_name("daemon.log");
    wait_log_count(&log_path, "config reload rejected", 1, 30).await;
    write_atomic(
        &env.drop_dir().join("second.json"),
        jsonl(100, 5).as_bytes(),
    );
    wait_receipts(&env.archive(), 2, 60).await;

    // Now replace the watch on `drop` by one on `drop2`.
    let other = env.dir.path().join("drop2");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(&config, good.replace("path = \"drop\"", "path = \"drop2\"")).unwrap();
    write_atomic(
        &env.drop_dir().join("in-flight.json"),
        jsonl(200, 5).as_bytes(),
    );
    signal(&daemon, libc::SIGHUP);
    wait_log_count(&log_path, "config reloaded", 1, 30).await;
    write_atomic(&other.join("new.json"), jsonl(300, 5).as_bytes());
    let got = wait_receipts(&other.join("_archive"), 1, 60).await;
    assert_eq!(got[0]["file"], "new.json");
    assert_eq!(got[0]["status"], "success");
    write_atomic(&env.drop_dir().join("after.json"), jsonl(400, 5).as_bytes());
    write_atomic(&other.join("later.json"), jsonl(500, 5).as_bytes());
    wait_receipts(&other.join("_archive"), 2, 60).await;
    // after.json was dropped before later.json, which has been taken and ingested since.
    assert!(
        env.drop_dir().join("after.json").exists(),
        "the removed watch takes nothing new"
    );
    stop_daemon(daemon);
    // The file dropped just before the reload was either taken before it (and finished) or is
    // still in the folder: never lost.
    let finished = receipts(&env.archive())
        .iter()
        .any(|r| r["file"] == "in-flight.json");
    assert!(finished || env.drop_dir().join("in-flight.json").exists());
}

/// Issue #16, L1: a duration beyond what the daemon can hold panicked it on reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_an_out_of_range_duration_is_rejected_and_the_daemon_keeps_running() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let good = std::fs::read_to_string(&config).unwrap();
    let overflow = good.replace(
        "max_wait = \"200ms\"",
        "max_wait = \"99999999999999999999999h\"",
    );
    assert_ne!(overflow, good);
    let mut daemon = spawn_daemon(&config, &[], &[]);
    admin_url(&env.state_dir()).await;

    std::fs::write(&config, &overflow).unwrap();
    signal(&daemon, libc::SIGHUP);
    let log_path = config.with_file_name("daemon.log");
    let rejected = eventually(30, "the reload rejected in the log", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move {
            log.lines()
                .find(|l| l.contains("config reload rejected"))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(
        rejected.contains("max_wait") && rejected.contains("365 days"),
        "{rejected}"
    );
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon runs on");
    // ...with the old config: files still flow.
    write_atomic(&env.drop_dir().join("after.json"), jsonl(0, 5).as_bytes());
    let got = wait_receipts(&env.archive(), 1, 60).await;
    assert_eq!(got[0]["status"], "success");
    stop_daemon(daemon);

    // The same value at start-up: a clear refusal (exit 3), not a panic (101).
    for command in ["run", "check-config"] {
        let out = batchdrop()
            .args([command, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{command}: {err}");
        assert!(err.contains("max_wait"), "{command}: {err}");
    }
}

/// Issue #16, L3: producers name the files, and a name holding a newline wrote a log line of
/// its own into the text logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_name_with_a_newline_cannot_inject_a_log_line() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let daemon = spawn_daemon(&config, &[], &[]);
    admin_url(&env.state_dir()).await;
    write_atomic(
        &env.drop_dir().join("a\nFAKE LOG LINE.json"),
        jsonl(0, 3).as_bytes(),
    );
    // Ingested or refused, it gets a receipt; by then its name was logged.
    wait_receipts(&env.drop_dir(), 1, 60).await;
    stop_daemon(daemon);
    let log = std::fs::read_to_string(config.with_file_name("daemon.log")).unwrap();
    assert!(
        log.contains("a\\nFAKE LOG LINE.json"),
        "the name is logged, escaped:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("FAKE")),
        "a line was injected:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_new_api_key_says_a_restart_applies_it() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let daemon = spawn_daemon(&config, &[], &[]);
    admin_url(&env.state_dir()).await;
    // The key never shows in the config's Debug text, which reload used to compare.
    env.write(&env.config_file().section("platform", |platform| {
        platform.set("api_key", "rotated-key")
    }));
    signal(&daemon, libc::SIGHUP);
    let log_path = config.with_file_name("daemon.log");
    let log = eventually(30, "the reload's warning", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move { log.contains("[platform] changed").then_some(log) }
    })
    .await;
    stop_daemon(daemon);
    assert!(log.contains("restart batchdrop to apply it"), "{log}");
    assert!(
        !log.contains("rotated-key"),
        "the key is never logged: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_and_stopping() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let sock_path = env.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let daemon = spawn_daemon(
        &config,
        &[],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        let n = sock.recv(&mut buf).expect("a notification within 30 s");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    stop_daemon(daemon);
    let mut stopping = false;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 sent on shutdown; got {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_config_path_works_from_the_config_folder() {
    // Found by running README's first command: inotify reports absolute paths, which a watch
    // root taken from a relative config path did not match.
    let env = Env::new().await;
    env.write_config("", "rescan_interval = \"10m\"");
    let mut child = batchdrop()
        .args(["run", "--config", "config.toml"])
        .current_dir(env.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    admin_url(&env.state_dir()).await;
    // Dropped after start-up, so only an event (not the start-up scan) can find it soon.
    write_atomic(&env.drop_dir().join("late.json"), jsonl(0, 2).as_bytes());
    let got = wait_receipts(&env.archive(), 1, 30).await;
    signal(&child, libc::SIGTERM);
    child.wait().unwrap();
    assert_eq!(got[0]["status"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_pauses_at_max_queued_files_says_so_and_resumes() {
    let env = Env::new().await;
    // The platform is down at first, so nothing queued can finish.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = env.write(
        &ConfigFile::fast(&format!("http://127.0.0.1:{port}"))
            .section("upload", |upload| upload.set("max_attempts", 1000))
            .section("limits", |limits| limits.set("max_queued_files", 2)),
    );
    for i in 0..5 {
        write_atomic(
            &env.drop_dir().join(format!("f{i}.json")),
            jsonl(i * 10, 3).as_bytes(),
        );
    }
    let daemon = spawn_daemon(&config, &[], &[]);
    let url = admin_url(&env.state_dir()).await;
    let body = eventually(30, "readyz says intake is paused", || {
        let url = url.clone();
        async move {
            let (_, body) = http_get(&format!("{url}/readyz")).await?;
            body.contains("intake is paused").then_some(body)
        }
    })
    .await;
    assert!(body.contains("paused"), "{body}");
    // /metrics reads the store at most every 2 s: poll until it shows the queue at its cap.
    let metrics = eventually(30, "metrics show the queue at its cap", || {
        let url = url.clone();
        async move {
            let (_, text) = http_get(&format!("{url}/metrics")).await?;
            let queued = metric(&text, &["batchdrop_queue_files", "state=\"batched\""])
                + metric(&text, &["batchdrop_queue_files", "state=\"ready\""]);
            assert!(queued <= 2.0, "more than the cap is queued: {text}");
            (queued == 2.0).then_some(text)
        }
    })
    .await;
    assert_eq!(
        metric(&metrics, &["batchdrop_intake_paused"]),
        1.0,
        "{metrics}"
    );

    // The platform comes up: the queue drains and the waiting files follow.
    let emu = Emulator::start(
        ([127, 0, 0, 1], port).into(),
        &env.dir.path().join("p2"),
        EmulatorConfig::default(),
    )
    .await
    .unwrap();
    emu.ensure_dataset(DATASET, "late").await.unwrap();
    let got = wait_receipts(&env.archive(), 5, 90).await;
    stop_daemon(daemon);
    assert!(got.iter().all(|r| r["status"] == "success"));
    emu.shutdown().await;
}
