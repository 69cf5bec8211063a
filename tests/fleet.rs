//! Fleet mode's shared database (issue #22) against a real PostgreSQL cluster of the test's
//! own: both backends' schemas describe one state; a file is claimed by one instance; a batch
//! lease passes to another instance only after it expired, and the former owner (paused, as by
//! SIGSTOP) can change nothing after; one scanner per watch; the password comes from its file
//! and never shows; `status` lists the instances; the coordination survives a database restart;
//! claims of finished files are swept without changing how a file dropped again is judged.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use batchdrop::membership::{Drive, Leases};
use batchdrop::store::{
    BatchState, Claim, FileKey, FileState, Fleet, Guarded, Member, NewFile, Recorded, Store,
};
use sqlx::Row;
use support::eventually;
use support::postgres::Postgres;

/// The shortest lease the config allows: the takeover tests wait it out for real.
const LEASE: Duration = Duration::from_secs(2);

/// A table's columns: name → (type class, NOT NULL).
type Columns = BTreeMap<String, (&'static str, bool)>;

/// Every table of a schema with its columns, and every `CHECK (col IN (…))` list by
/// `table.column`.
#[derive(Debug, PartialEq)]
struct Schema {
    tables: BTreeMap<String, Columns>,
    checks: BTreeMap<String, Vec<String>>,
}

/// The quoted strings of a CHECK clause, in order.
fn quoted(text: &str) -> Vec<String> {
    text.split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

async fn sqlite_schema(dir: &std::path::Path) -> Schema {
    Store::open_shared(dir).await.unwrap().close().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", dir.join("batchdrop.db").display()))
        .await
        .unwrap();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table'
           AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut schema = Schema {
        tables: BTreeMap::new(),
        checks: BTreeMap::new(),
    };
    for (table, sql) in tables {
        let rows = sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1)")
            .bind(&table)
            .fetch_all(&pool)
            .await
            .unwrap();
        let columns = rows
            .iter()
            .map(|r| {
                let class = match r.get::<String, _>("type").as_str() {
                    "INTEGER" => "integer",
                    "TEXT" => "text",
                    "BLOB" => "bytes",
                    other => panic!("{table}: SQLite type {other} has no PostgreSQL twin here"),
                };
                let not_null = r.get::<i64, _>("notnull") == 1 || r.get::<i64, _>("pk") > 0;
                (r.get::<String, _>("name"), (class, not_null))
            })
            .collect();
        schema.tables.insert(table.clone(), columns);
        // `name TEXT NOT NULL CHECK (name IN ('a', 'b'))`, as the migrations write them.
        for clause in sql.split("CHECK (").skip(1) {
            let column = clause.split_whitespace().next().unwrap().to_owned();
            let list = &clause[..clause.find(')').unwrap()];
            schema
                .checks
                .insert(format!("{table}.{column}"), quoted(list));
        }
    }
    pool.close().await;
    schema
}

async fn postgres_schema(pool: &sqlx::PgPool) -> Schema {
    let rows = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS ty,
                is_nullable::text AS nullable
           FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut schema = Schema {
        tables: BTreeMap::new(),
        checks: BTreeMap::new(),
    };
    for r in rows {
        let class = match r.get::<String, _>("ty").as_str() {
            // SQLite has no boolean: it keeps a bound `bool` as a 0/1 INTEGER.
            "bigint" | "boolean" => "integer",
            "text" => "text",
            "bytea" => "bytes",
            other => panic!("PostgreSQL type {other}: not one SQLite's INTEGER/TEXT/BLOB mirror"),
        };
        schema
            .tables
            .entry(r.get("t"))
            .or_default()
            .insert(r.get("c"), (class, r.get::<String, _>("nullable") == "NO"));
    }
    let checks = sqlx::query(
        "SELECT conrelid::regclass::text AS t, pg_get_constraintdef(oid) AS def
           FROM pg_constraint WHERE contype = 'c' AND conrelid <> 0
            AND connamespace = 'public'::regnamespace",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for r in checks {
        // `CHECK ((state = ANY (ARRAY['sealed'::text, …])))`
        let def: String = r.get("def");
        let column = def
            .trim_start_matches("CHECK ((")
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        schema.checks.insert(
            format!("{}.{column}", r.get::<String, _>("t")),
            quoted(&def),
        );
    }
    schema
}

async fn admin_pool(pg: &Postgres) -> sqlx::PgPool {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(&pg.url())
        .unwrap()
        .password(pg.password());
    sqlx::PgPool::connect_with(options).await.unwrap()
}

/// A batch in flight, as the store would have sealed it.
async fn insert_batch(pool: &sqlx::PgPool, external_id: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO batches (external_id, remote_id, watch, dataset, format, state, created_at,
                              updated_at)
         VALUES ($1, 'remote-' || $1, 'drop', 'ds', 'json', 'loading', 0, 0) RETURNING id",
    )
    .bind(external_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn batch_state(pool: &sqlx::PgPool, id: i64) -> String {
    sqlx::query_scalar("SELECT state FROM batches WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn both_backends_describe_the_same_tables_columns_and_states() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE))
        .await
        .expect("connects and migrates");
    let pool = admin_pool(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite_schema(dir.path()).await;
    let postgres = postgres_schema(&pool).await;

    let names = |s: &Schema| s.tables.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(names(&sqlite), names(&postgres), "the same tables");
    for (table, columns) in &sqlite.tables {
        assert_eq!(columns, &postgres.tables[table], "columns of {table}");
    }
    assert_eq!(sqlite.checks, postgres.checks, "the same CHECK lists");
    // And both are the states the code knows.
    let states = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        postgres.checks["batches.state"],
        states(&BatchState::ALL.map(BatchState::as_str))
    );
    assert_eq!(
        postgres.checks["files.state"],
        states(&FileState::ALL.map(FileState::as_str))
    );
    fleet.close().await;
}

#[tokio::test]
async fn a_file_is_claimed_by_exactly_one_instance() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let members = [
        fleet.join("host-a").await.unwrap(),
        fleet.join("host-b").await.unwrap(),
        fleet.join("host-c").await.unwrap(),
    ];
    let keys: Vec<FileKey> = (0..40)
        .map(|i| FileKey {
            watch: "drop".into(),
            rel_path: format!("in/{i}.json"),
            dev: 1,
            ino: 1000 + i,
            size: 10,
            mtime_ns: 7,
        })
        .collect();
    // Every instance claims every file at once, as three scanners seeing one folder would.
    let claims = futures::future::join_all(members.iter().flat_map(|member| {
        keys.iter().map(move |key| async move {
            (
                member.id().to_owned(),
                key.clone(),
                member.claim_file(key).await.unwrap(),
            )
        })
    }))
    .await;
    let mut winners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (member, key, claim) in &claims {
        if *claim == Claim::Won {
            winners
                .entry(key.rel_path.clone())
                .or_default()
                .push(member.clone());
        }
    }
    assert_eq!(winners.len(), keys.len(), "every file has an owner");
    for (path, owners) in &winners {
        assert_eq!(owners.len(), 1, "{path} claimed by {owners:?}");
    }
    for (member, key, claim) in &claims {
        if let Claim::Held { owner } = claim {
            assert_ne!(owner, member, "a loser is told the winner, not itself");
            assert_eq!(&winners[&key.rel_path][0], owner);
        }
    }
    // Another version of the same path (rewritten: new mtime) is a new claim.
    let mut rewritten = keys[0].clone();
    rewritten.mtime_ns += 1;
    assert_eq!(members[2].claim_file(&rewritten).await.unwrap(), Claim::Won);
    fleet.close().await;
}

#[tokio::test]
async fn files_claimed_together_get_the_answers_each_would_get_alone() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let members = [
        fleet.join("host-a").await.unwrap(),
        fleet.join("host-b").await.unwrap(),
    ];
    let keys: Vec<FileKey> = (0..30)
        .map(|i| FileKey {
            watch: "drop".into(),
            rel_path: format!("in/{i}.json"),
            dev: 1,
            ino: 2000 + i,
            size: 10,
            mtime_ns: 7,
        })
        .collect();
    // Both instances claim overlapping lists at once, as two scanners listing one folder.
    let (first, second) = futures::future::join(
        members[0].claim_files(&keys[..20]),
        members[1].claim_files(&keys[10..]),
    )
    .await;
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!((first.len(), second.len()), (20, 20), "one answer per file");
    for (i, key) in keys.iter().enumerate() {
        let answers: Vec<(&Member, &Claim)> = [(0, &first, 0), (1, &second, 10)]
            .into_iter()
            .filter_map(|(m, claims, from)| {
                i.checked_sub(from)
                    .and_then(|at| claims.get(at))
                    .map(|claim| (&members[m], claim))
            })
            .collect();
        let won: Vec<&str> = answers
            .iter()
            .filter(|(_, claim)| **claim == Claim::Won)
            .map(|(member, _)| member.id())
            .collect();
        assert_eq!(won.len(), 1, "{}: won by {won:?}", key.rel_path);
        for (member, claim) in &answers {
            if let Claim::Held { owner } = claim {
                assert_ne!(owner.as_str(), member.id(), "a loser is told the winner");
                assert_eq!(owner.as_str(), won[0]);
            }
        }
    }
    // Asked again, an owner is told it holds its files; a new version is a new claim.
    let mut again = keys[..2].to_vec();
    again[1].mtime_ns += 1;
    let owner_of_first = members[0].claim_file(&keys[0]).await.unwrap();
    assert_eq!(
        members[0].claim_files(&again).await.unwrap(),
        vec![owner_of_first, Claim::Won]
    );
    assert_eq!(members[0].claim_files(&[]).await.unwrap(), Vec::new());
    fleet.close().await;
}

#[tokio::test]
async fn a_paused_owner_changes_nothing_once_its_batch_was_taken_over() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let pool = admin_pool(&pg).await;
    let batch = insert_batch(&pool, "ext-1").await;
    let paused = fleet.join("host-a").await.unwrap();
    let other = fleet.join("host-b").await.unwrap();

    let old = paused
        .acquire_batch(batch)
        .await
        .unwrap()
        .expect("a free batch is leased");
    assert_eq!(
        other.acquire_batch(batch).await.unwrap(),
        None,
        "held: not for the taking"
    );
    assert_eq!(
        other.batches_to_take_over().await.unwrap(),
        Vec::<i64>::new()
    );
    // Timed from just before the renewal (the database sets the expiry during the call);
    // printed, never asserted: the machine's load decides it.
    let last_renewal = Instant::now();
    assert_eq!(
        paused.heartbeat().await.unwrap(),
        1,
        "the heartbeat renews the lease"
    );

    // `paused` stops here (no heartbeat, like a SIGSTOPped process); `other` looks for work.
    let new = eventually(15, "the lost lease to be taken over", || async {
        if other.batches_to_take_over().await.unwrap() == vec![batch] {
            other.acquire_batch(batch).await.unwrap()
        } else {
            None
        }
    })
    .await;
    let failover = last_renewal.elapsed();
    println!(
        "FIGURE failover: batch taken over {:.2} s after its owner's last renewal (lease {} s)",
        failover.as_secs_f64(),
        LEASE.as_secs()
    );
    assert!(new.epoch() > old.epoch(), "a takeover bumps the epoch");

    // `paused` wakes up (SIGCONT) and carries on where it was: nothing it does counts.
    assert_eq!(
        paused
            .advance_batch(&old, BatchState::Completing)
            .await
            .unwrap(),
        Guarded::LeaseLost
    );
    assert!(
        !paused.holds(&old).await.unwrap(),
        "it can tell before archiving"
    );
    assert_eq!(
        paused.heartbeat().await.unwrap(),
        0,
        "its heartbeat wins nothing back"
    );
    assert_eq!(
        batch_state(&pool, batch).await,
        "loading",
        "unchanged by the former owner"
    );

    assert_eq!(
        other
            .advance_batch(&new, BatchState::Completing)
            .await
            .unwrap(),
        Guarded::Done
    );
    assert!(other.holds(&new).await.unwrap());
    assert_eq!(batch_state(&pool, batch).await, "completing");
    // A clean shutdown hands its leases back at once: no wait for expiry.
    other.leave().await.unwrap();
    let after_leave = paused
        .acquire_batch(batch)
        .await
        .unwrap()
        .expect("released");
    assert!(after_leave.epoch() > new.epoch());
    fleet.close().await;
}

#[tokio::test]
async fn a_heartbeat_renews_only_the_leases_that_still_guard_work() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let pool = admin_pool(&pg).await;
    let member = fleet.join("host-a").await.unwrap();
    let in_flight = insert_batch(&pool, "ext-flying").await;
    let ended = insert_batch(&pool, "ext-ended").await;
    for batch in [in_flight, ended] {
        member.acquire_batch(batch).await.unwrap().expect("free");
    }
    sqlx::query("UPDATE batches SET state = 'success' WHERE id = $1")
        .bind(ended)
        .execute(&pool)
        .await
        .unwrap();
    // The ended batch still has a file to archive: its lease guards that.
    let file: i64 = sqlx::query_scalar(
        "INSERT INTO files (watch, dataset, format, root, rel_path, dev, ino, size, mtime_ns,
                            state, batch_id, discovered_at, updated_at)
         VALUES ('drop', 'ds', 'json', '/drop', 'a.json', 1, 1, 1, 1, 'uploaded', $1, 0, 0)
         RETURNING id",
    )
    .bind(ended)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        member.heartbeat().await.unwrap(),
        2,
        "both leases guard work"
    );

    sqlx::query("UPDATE files SET state = 'done', finalized = TRUE WHERE id = $1")
        .bind(file)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        member.heartbeat().await.unwrap(),
        1,
        "a batch whose files are all finished is not renewed any more"
    );
    let owner: Option<String> = sqlx::query_scalar("SELECT lease_owner FROM batches WHERE id = $1")
        .bind(ended)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        owner.as_deref(),
        Some(member.id()),
        "who drove it stays known (the fair share counts it)"
    );
    fleet.close().await;
}

#[tokio::test]
async fn leases_forget_the_batches_a_heartbeat_no_longer_renews() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let pool = admin_pool(&pg).await;
    let member = fleet.join("host-a").await.unwrap();
    let leases = Leases::new(member.clone());
    let in_flight = insert_batch(&pool, "ext-flying").await;
    let ended = insert_batch(&pool, "ext-ended").await;
    let taken_over = insert_batch(&pool, "ext-taken").await;
    for batch in [in_flight, ended, taken_over] {
        assert_eq!(
            leases.drive(batch).await.unwrap(),
            Drive::Mine,
            "alone, it drives all"
        );
    }
    assert_eq!(leases.batches_held(), 3);
    assert_eq!(leases.renew().await.unwrap(), 3, "all three guard work");
    assert_eq!(leases.batches_held(), 3, "a renewed lease is kept");

    // One batch ends with no file left to archive; another passes to another instance (its
    // lease expired while this one was cut off, say).
    sqlx::query("UPDATE batches SET state = 'success' WHERE id = $1")
        .bind(ended)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE batches SET lease_owner = 'someone-else' WHERE id = $1")
        .bind(taken_over)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(leases.renew().await.unwrap(), 1, "only the batch in flight");
    assert_eq!(
        leases.batches_held(),
        1,
        "the lease of the ended batch and the lost one are forgotten"
    );
    assert_eq!(
        leases.drive(in_flight).await.unwrap(),
        Drive::Mine,
        "the batch in flight is still driven under the lease it kept"
    );
    fleet.close().await;
}

#[tokio::test]
async fn one_instance_scans_each_watch_and_the_role_fails_over() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let scanner = fleet.join("host-a").await.unwrap();
    let other = fleet.join("host-b").await.unwrap();

    let first = scanner.acquire_scan("drop").await.unwrap().expect("free");
    assert_eq!(other.acquire_scan("drop").await.unwrap(), None);
    let kept = scanner
        .acquire_scan("drop")
        .await
        .unwrap()
        .expect("its own");
    assert_eq!(
        kept.epoch(),
        first.epoch(),
        "keeping the role is no takeover"
    );
    assert!(
        other.acquire_scan("other-watch").await.unwrap().is_some(),
        "per watch"
    );

    let taken = eventually(15, "the scanner role to fail over", || async {
        other.acquire_scan("drop").await.unwrap()
    })
    .await;
    assert_eq!(taken.epoch(), first.epoch() + 1);
    assert!(!scanner.holds(&first).await.unwrap());
    assert!(other.holds(&taken).await.unwrap());
    fleet.close().await;
}

/// The real binary with `--config config` and `args`, run to its end.
async fn batchdrop(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_password_comes_from_its_file_and_status_lists_the_instances() {
    let pg = Postgres::start();
    let mut no_password = pg.state(LEASE);
    no_password.password = None;
    let err = match Fleet::connect(&no_password).await {
        Ok(_) => panic!("the cluster asks for a password"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&pg.url()), "names the database: {err}");
    assert!(
        err.contains("[state] password"),
        "says what to check: {err}"
    );

    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let a = fleet.join("host-a").await.unwrap();
    let b = fleet.join("host-b").await.unwrap();
    let pool = admin_pool(&pg).await;
    let batch = insert_batch(&pool, "ext-status").await;
    a.acquire_batch(batch).await.unwrap().unwrap();
    b.acquire_scan("drop").await.unwrap().unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t\n").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[state]\nurl = \"{}\"\npassword_file = \"{}\"\n\
             [platform]\nendpoint = \"http://127.0.0.1:9\"\naccess_token_file = \"token\"\n\
             [[watch]]\npath = \"drop\"\ndataset = \"ds\"\nmode = \"poll\"\n",
            pg.url(),
            pg.password_file().display()
        ),
    )
    .unwrap();
    let out = batchdrop(&config, &["status", "--json"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains(pg.password()),
        "the password never shows: {text}"
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let instances = json["fleet"]["instances"].as_array().unwrap();
    let by_id = |id: &str| {
        instances
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{id} listed: {text}"))
    };
    assert_eq!(by_id(a.id())["host"], "host-a");
    assert_eq!(by_id(a.id())["batch_leases"], 1);
    assert_eq!(by_id(b.id())["scan_leases"], 1);
    assert_eq!(by_id(b.id())["lost"], false);

    fleet.close().await;
}

#[tokio::test]
async fn inotify_watches_and_the_embedded_platform_are_refused_in_fleet_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(dir.path().join("token"), "t\n").unwrap();
    let fleet = "state = \"postgres://batchdrop@db/bd\"\n";
    let platform = "[platform]\nendpoint = \"http://127.0.0.1:9\"\naccess_token_file = \"token\"\n";
    let watch = "[[watch]]\npath = \"drop\"\ndataset = \"ds\"\n";
    for (text, expected) in [
        (format!("{fleet}{platform}{watch}"), "needs mode = \"poll\""),
        (
            format!("{fleet}{watch}mode = \"poll\"\n"),
            "platform every instance shares",
        ),
    ] {
        let err = batchdrop::config::Config::parse(&text, &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
    let ok = format!("{fleet}{platform}{watch}mode = \"poll\"\n");
    batchdrop::config::Config::parse(&ok, &path).expect("a fleet config");
}

#[tokio::test]
async fn coordination_pauses_while_the_database_is_down_and_resumes_after() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let member = fleet.join("host-a").await.unwrap();
    let key = FileKey {
        watch: "drop".into(),
        rel_path: "a.json".into(),
        dev: 1,
        ino: 2,
        size: 3,
        mtime_ns: 4,
    };
    assert_eq!(member.claim_file(&key).await.unwrap(), Claim::Won);

    pg.stop_server();
    let err = member
        .heartbeat()
        .await
        .expect_err("no database, no heartbeat");
    assert!(!err.to_string().is_empty());
    pg.start_server();

    eventually(30, "the heartbeat to work again", || async {
        member.heartbeat().await.ok()
    })
    .await;
    // What was recorded before the outage is still there: the claim stays its owner's.
    assert_eq!(
        member.claim_file(&key).await.unwrap(),
        Claim::Held {
            owner: member.id().to_owned()
        }
    );
    assert_eq!(fleet.instances().await.unwrap().len(), 1);
    fleet.close().await;
}

/// Every member tries to lease every batch at once: the epochs each batch was leased at.
async fn race(members: &[Member], batches: &[i64]) -> BTreeMap<i64, Vec<i64>> {
    let tries = futures::future::join_all(members.iter().flat_map(|member| {
        batches
            .iter()
            .map(move |&batch| async move { (batch, member.acquire_batch(batch).await.unwrap()) })
    }))
    .await;
    let mut won: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (batch, lease) in tries {
        if let Some(lease) = lease {
            won.entry(batch).or_default().push(lease.epoch());
        }
    }
    won
}

#[tokio::test]
async fn racing_instances_get_one_lease_per_batch_and_one_taker_after_expiry() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let pool = admin_pool(&pg).await;
    let mut batches = Vec::new();
    for i in 0..30 {
        batches.push(insert_batch(&pool, &format!("race-{i}")).await);
    }
    let members = [
        fleet.join("host-a").await.unwrap(),
        fleet.join("host-b").await.unwrap(),
        fleet.join("host-c").await.unwrap(),
    ];
    // Every instance tries every batch at once; then, with nobody renewing (all "lost"),
    // they race again for the takeover.
    let first = race(&members, &batches).await;
    assert_eq!(first.len(), batches.len(), "every batch leased");
    assert!(first.values().all(|epochs| epochs == &vec![1]), "{first:?}");

    eventually(15, "every lease to expire", || async {
        (members[0].batches_to_take_over().await.unwrap().len() == batches.len()).then_some(())
    })
    .await;
    let second = race(&members, &batches).await;
    assert_eq!(second.len(), batches.len(), "every batch taken over");
    assert!(
        second.values().all(|epochs| epochs == &vec![2]),
        "one taker per batch: {second:?}"
    );
    fleet.close().await;
}

/// The claim of `key`'s file version, and the store's description of that file.
fn file_version(rel_path: &str, ino: i64) -> (FileKey, NewFile) {
    let key = FileKey {
        watch: "drop".into(),
        rel_path: rel_path.into(),
        dev: 1,
        ino,
        size: 10,
        mtime_ns: 7,
    };
    let file = NewFile {
        watch: key.watch.clone(),
        dataset: "ds".into(),
        format: batchdrop::format::Format::Json,
        multiline_json: false,
        root: "/drop".into(),
        rel_path: key.rel_path.clone(),
        dev: key.dev,
        ino: key.ino,
        size: key.size,
        mtime_ns: key.mtime_ns,
        raw_path: None,
    };
    (key, file)
}

async fn claims(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT rel_path FROM file_claims ORDER BY rel_path")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A fleet that starts on a backlog must not plan with the statistics of empty tables until
/// autovacuum's next round: the heartbeat's refresh gathers them once the queue changed much.
#[tokio::test]
async fn the_queues_statistics_are_gathered_once_it_changed_much() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let store = Store::on_fleet(&fleet);
    let pool = admin_pool(&pg).await;
    let member = fleet.join("host-a").await.unwrap();
    let estimate = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, f32>(
                "SELECT reltuples FROM pg_class WHERE oid = 'files'::regclass",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert!(estimate().await < 0.0, "never gathered on a new database");
    let files: Vec<NewFile> = (0..2000)
        .map(|i| file_version(&format!("backlog-{i}.json"), i).1)
        .collect();
    store.record_ready_many(&files).await.unwrap();
    assert!(member.refresh_statistics().await.unwrap());
    assert_eq!(
        estimate().await,
        2000.0,
        "the planner now knows the backlog"
    );
}

/// The heartbeat may beat while the instance leaves (a clean exit). Both take the instance's
/// row first, so the leave waits for the beat; in another order each held a row the other
/// waited for, PostgreSQL failed one of them, and the instance stayed listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_while_a_heartbeat_beats_waits_for_it_instead_of_deadlocking() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let member = fleet.join("host-a").await.unwrap();
    member.acquire_scan("drop").await.unwrap().expect("free");
    let id = member.id().to_owned();
    let pool = admin_pool(&pg).await;
    // A beat half done: it took the instance's row, as `renew` does first.
    let mut beat = pool.begin().await.unwrap();
    sqlx::query("UPDATE instances SET heartbeat_at = heartbeat_at WHERE id = $1")
        .bind(&id)
        .execute(&mut *beat)
        .await
        .unwrap();
    let leaving = tokio::spawn(async move { member.leave().await });
    eventually(30, "the leave waits for a lock", || {
        let pool = pool.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        }
    })
    .await;
    // The beat's next rows (its scan lease) are free: the leave holds none of them yet.
    sqlx::query("UPDATE scan_leases SET expires_at = expires_at WHERE owner = $1")
        .bind(&id)
        .execute(&mut *beat)
        .await
        .unwrap();
    beat.commit().await.unwrap();
    leaving.await.unwrap().unwrap();
    let instances: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM instances")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(instances, 0, "the instance left");
}

#[tokio::test]
async fn claims_of_finished_files_are_swept_and_a_file_dropped_again_is_judged_as_before() {
    let pg = Postgres::start();
    let fleet = Fleet::connect(&pg.state(LEASE)).await.unwrap();
    let store = Store::on_fleet(&fleet);
    let pool = admin_pool(&pg).await;
    let first = fleet.join("host-a").await.unwrap();
    // Archived after success, quarantined after failure, and one still in flight.
    let (archived, quarantined, queued) = (
        file_version("archived.json", 1),
        file_version("quarantined.json", 2),
        file_version("queued.json", 3),
    );
    for (version, finished) in [
        (&archived, Some(FileState::Done)),
        (&quarantined, Some(FileState::Failed)),
        (&queued, None),
    ] {
        assert_eq!(first.claim_file(&version.0).await.unwrap(), Claim::Won);
        let Recorded::New(id) = store.record_ready_with(&version.1, None).await.unwrap() else {
            panic!("{} is new", version.0.rel_path);
        };
        if let Some(state) = finished {
            store.mark_finalized(id, state, "moved").await.unwrap();
        }
    }

    // Claims younger than `keep` stay; older ones of finished files go, `limit` at a time.
    let keep = Duration::from_secs(3600);
    assert_eq!(first.forget_finished_claims(keep, 10).await.unwrap(), 0);
    assert_eq!(claims(&pool).await.len(), 3);
    assert_eq!(
        first
            .forget_finished_claims(Duration::ZERO, 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        first
            .forget_finished_claims(Duration::ZERO, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        first
            .forget_finished_claims(Duration::ZERO, 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        claims(&pool).await,
        ["queued.json"],
        "the file in flight keeps its claim"
    );

    // The same versions dropped again, seen by another (live) instance: the swept ones are
    // claimed anew and judged by the queue as on SQLite (an ingested version is known and not
    // queued again; a quarantined one is taken again); the one in flight stays its owner's.
    let second = fleet.join("host-b").await.unwrap();
    assert_eq!(second.claim_file(&archived.0).await.unwrap(), Claim::Won);
    assert!(matches!(
        store.record_ready_with(&archived.1, None).await.unwrap(),
        Recorded::Known
    ));
    assert_eq!(second.claim_file(&quarantined.0).await.unwrap(), Claim::Won);
    assert!(matches!(
        store.record_ready_with(&quarantined.1, None).await.unwrap(),
        Recorded::New(_)
    ));
    assert_eq!(
        second.claim_file(&queued.0).await.unwrap(),
        Claim::Held {
            owner: first.id().to_owned()
        }
    );
    assert_eq!(
        store.queued_files().await.unwrap(),
        2,
        "queued and the retried one"
    );
    pool.close().await;
    fleet.close().await;
}
