//! The daemon on fleet mode's PostgreSQL (issue #22), against a real cluster of the test's own
//! and the real emulator: the queue runs there exactly as on SQLite (drop → batch → success →
//! archive with receipts), and what it recorded is in the shared database; `/metrics` names
//! the instance, `/readyz` fails while the database is down, and nothing is lost meanwhile;
//! instances running `run --once` together share a backfill and exit cleanly.

use crate::support;

use std::time::Duration;

use batchdrop::config::Config;
use sqlx::Row;
use support::postgres::Postgres;
use support::{
    DATASET, Daemon, Env, eventually, jsonl, records_in_batch, wait_receipts, write_atomic,
};

/// `/readyz` of the admin listener at `addr`: its status code and body.
async fn readyz(addr: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Writes the usual test config with fleet mode's `state` on `pg` and a polled watch.
fn fleet_config(env: &Env, pg: &Postgres) -> Config {
    let path = env.write_config("", "mode = \"poll\"");
    let text = std::fs::read_to_string(&path).unwrap();
    let state = format!(
        "state = {{ url = \"{}\", password_file = \"{}\", lease = \"2s\" }}\n",
        pg.url(),
        pg.password_file().display()
    );
    std::fs::write(&path, format!("{state}{text}")).unwrap();
    Config::load(&path).unwrap()
}

#[tokio::test]
async fn the_daemon_runs_its_queue_on_postgresql_as_on_sqlite() {
    let pg = Postgres::start();
    let env = Env::new().await;
    let daemon = Daemon::start(fleet_config(&env, &pg));
    let drop = env.drop_dir();
    write_atomic(&drop.join("people.json"), jsonl(0, 25).as_bytes());
    write_atomic(
        &drop.join("crm.csv"),
        b"id,name\n1,ada\n2,grace\n3,edsger\n",
    );
    write_atomic(&drop.join("sub/more.json"), jsonl(100, 7).as_bytes());

    wait_receipts(&env.archive(), 3, 90).await;

    // /metrics names the instance; /readyz includes the database: down, the daemon is not
    // ready and says why; back, it is ready again and a file dropped meanwhile goes through.
    let admin = std::fs::read_to_string(env.state_dir().join("admin-addr")).unwrap();
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("batchdrop_instance_info{"),
        "the instance label: {metrics}"
    );
    assert_eq!(readyz(&admin).await.0, 200);
    pg.stop_server();
    let why = eventually(30, "not ready while the database is down", || async {
        let (status, body) = readyz(&admin).await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(why.contains("PostgreSQL"), "says which database: {why}");
    write_atomic(&drop.join("late.json"), jsonl(200, 3).as_bytes());
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.start_server();
    eventually(30, "ready again once the database is back", || async {
        (readyz(&admin).await.0 == 200).then_some(())
    })
    .await;
    let receipts = wait_receipts(&env.archive(), 4, 60).await;
    daemon.stop().await;

    let mut batches = std::collections::BTreeSet::new();
    for name in ["people.json", "crm.csv", "sub/more.json", "late.json"] {
        let receipt = receipts
            .iter()
            .find(|r| r["file"] == name)
            .unwrap_or_else(|| panic!("receipt for {name}: {receipts:?}"));
        assert_eq!(receipt["status"], "success", "{receipt}");
        assert_eq!(receipt["dataset"], DATASET);
        batches.insert(receipt["batch"].as_str().unwrap().to_owned());
        assert!(env.archive().join(name).exists(), "{name} archived");
        assert!(!drop.join(name).exists(), "{name} left the drop folder");
    }
    let mut records = 0;
    for batch in &batches {
        records += records_in_batch(&env.api, batch).await;
    }
    assert_eq!(records, 25 + 7 + 3 + 3, "every record once, in {batches:?}");

    // The queue is the shared database's: every file done, every batch a success, and the
    // instance left the fleet on its clean exit.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(
            pg.url()
                .parse::<sqlx::postgres::PgConnectOptions>()
                .unwrap()
                .password(pg.password()),
        )
        .await
        .unwrap();
    let files: Vec<(String, String)> =
        sqlx::query_as("SELECT rel_path, state FROM files ORDER BY rel_path")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        files,
        vec![
            ("crm.csv".to_owned(), "done".to_owned()),
            ("late.json".to_owned(), "done".to_owned()),
            ("people.json".to_owned(), "done".to_owned()),
            ("sub/more.json".to_owned(), "done".to_owned()),
        ]
    );
    let states: Vec<String> = sqlx::query("SELECT DISTINCT state FROM batches")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(states, vec!["success".to_owned()]);
    let instances: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM instances")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(instances, 0, "a clean exit leaves the fleet");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_running_once_share_a_backfill_and_all_exit_cleanly() {
    let pg = Postgres::start();
    let env = Env::new().await;
    let shared = env.write_config("", "mode = \"poll\"");
    let drop = env.drop_dir();
    for n in 0..30 {
        write_atomic(
            &drop.join(format!("in/{n:02}.json")),
            jsonl(n * 4, 4).as_bytes(),
        );
    }
    // Both instances work through the backfill on the one database, and each exits only once
    // the fleet's work is done: not the one that is not the scanner as soon as it finds the
    // queue empty, before the scanner recorded anything. Exiting, each hands its leases and
    // the pool back in order.
    let archive = env.archive();
    let runs = (0..2).map(|i| {
        let config = pg.instance_config(&shared, i, Duration::from_secs(2));
        let archive = archive.clone();
        async move {
            let config = config.display().to_string();
            let out = support::bd(&["run", "--once", "--config", &config]).await;
            (out, support::receipts(&archive).len())
        }
    });
    for (out, receipts_at_exit) in futures::future::join_all(runs).await {
        assert!(
            out.status.success(),
            "run --once in a fleet exits 0: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            receipts_at_exit, 30,
            "an instance exits when the backfill is done"
        );
    }
    let receipts = support::receipts(&env.archive());
    assert_eq!(receipts.len(), 30, "one receipt per file");
    let mut records = 0;
    let batches: std::collections::BTreeSet<String> = receipts
        .iter()
        .map(|r| r["batch"].as_str().unwrap().to_owned())
        .collect();
    for batch in &batches {
        records += records_in_batch(&env.api, batch).await;
    }
    assert_eq!(records, 30 * 4, "every record once, in {batches:?}");
}
