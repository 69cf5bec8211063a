//! What the store's unit tests share: a store of its own on either backend (a temp SQLite
//! file, or a database of its own in a PostgreSQL cluster the test binary shares), the macro
//! that runs a test on both, and files and batches brought to a state through the store's own
//! API.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::Connection;

use super::{Dedupe, Fleet, NewBatch, NewFile, Recorded, Sealed, Step, Store};
use crate::format::Format;

/// The throwaway cluster of the fleet's integration tests.
#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/support/postgres.rs"]
mod cluster;

/// Runs each store test named, `async fn name(store: Store)`, once per backend: as
/// `sqlite::name` on a temp SQLite file, and as `postgres::name` on a database of its own in
/// the test binary's PostgreSQL cluster. A test body written once holds for both; a test left
/// out of the list is dead code, which clippy refuses.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_dir, store) = crate::store::testing::temp_store().await;
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let store = crate::store::testing::temp_postgres_store().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}
pub(super) use on_both_backends;

/// A store of its own in a fresh temp dir (kept alive by the returned guard).
pub(super) async fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_exclusive(dir.path(), false).await.unwrap();
    (dir, store)
}

/// A store of its own in a new database of the shared cluster, migrated as fleet mode migrates
/// it. The session is no instance of a fleet, so no batch lease guards its changes (as for an
/// operator's command); the lease guard has tests of its own (`tests/fleet.rs`).
pub(super) async fn temp_postgres_store() -> Store {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pg = shared_cluster();
    let database = format!("store_test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let options: sqlx::postgres::PgConnectOptions = pg.url().parse().unwrap();
    let mut admin = sqlx::PgConnection::connect_with(&options.password(pg.password()))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let fleet = Fleet::connect(&pg.database_state(&database, Duration::from_secs(10)))
        .await
        .unwrap();
    Store::on_fleet(&fleet)
}

/// The test binary's cluster, started by the first test that needs it, and stopped and
/// deleted when the binary ends.
fn shared_cluster() -> &'static cluster::Postgres {
    static CLUSTER: OnceLock<(cluster::Postgres, std::process::Child)> = OnceLock::new();
    let (pg, _watchdog) = CLUSTER.get_or_init(|| {
        let pg = cluster::Postgres::start();
        let watchdog = pg.stop_with_this_process();
        (pg, watchdog)
    });
    pg
}

/// The SQLite pool of a store from [`temp_store`], for tests that look under the API.
pub(super) fn sqlite_pool(store: &Store) -> &sqlx::SqlitePool {
    match &store.backend {
        super::Backend::Sqlite(queue) => &queue.pool,
        super::Backend::Postgres(_) => panic!("temp_store is SQLite"),
    }
}

/// The PostgreSQL pool of a store from [`temp_postgres_store`], for tests of the connection.
pub(super) fn postgres_pool(store: &Store) -> &sqlx::PgPool {
    match &store.backend {
        super::Backend::Postgres(queue) => &queue.pool,
        super::Backend::Sqlite(_) => panic!("temp_postgres_store is PostgreSQL"),
    }
}

/// A JSON file of watch `w`, dataset `d`, with an identity of its own.
pub(super) fn new_file(rel: &str, size: i64) -> NewFile {
    NewFile {
        watch: "w".into(),
        dataset: "d".into(),
        format: Format::Json,
        multiline_json: false,
        root: "/nowhere".into(),
        rel_path: rel.into(),
        dev: 1,
        ino: rel.len() as i64 + size,
        size,
        mtime_ns: 0,
        raw_path: None,
    }
}

/// Records ready files (path, size, known SHA-256); returns their ids.
pub(super) async fn ready(store: &Store, files: &[(&str, i64, Option<&str>)]) -> Vec<i64> {
    let new: Vec<NewFile> = files.iter().map(|(r, s, _)| new_file(r, *s)).collect();
    let ids: Vec<i64> = store
        .record_ready_many(&new)
        .await
        .unwrap()
        .into_iter()
        .map(|r| match r {
            Recorded::New(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    let shas: Vec<(i64, String)> = ids
        .iter()
        .zip(files)
        .filter_map(|(id, (_, _, sha))| sha.map(|s| (*id, s.to_owned())))
        .collect();
    store.set_shas(&shas).await.unwrap();
    ids
}

/// The batch of watch `w` these files would be sealed into.
pub(super) fn batch_of_w() -> NewBatch<'static> {
    NewBatch {
        watch: "w",
        dataset: "d",
        sandbox: "prod",
        format: Format::Json,
        multiline_json: false,
        replay: None,
    }
}

/// Seals these files of watch `w` under the one-copy rule.
pub(super) async fn seal(store: &Store, ids: &[i64]) -> Sealed {
    store
        .seal_batch(&batch_of_w(), ids, Dedupe::OneCopy)
        .await
        .unwrap()
}

/// Seals these files of watch `w` as one batch, duplicates allowed; returns its id.
pub(super) async fn sealed_batch(store: &Store, ids: &[i64]) -> i64 {
    store
        .seal_batch(&batch_of_w(), ids, Dedupe::AllowDuplicates)
        .await
        .unwrap()
        .batch_id
        .expect("the files were ready: a batch was sealed")
}

/// A batch of one new file, sealed and driven to `loading` as the platform's batch `remote`;
/// returns (batch id, file id).
pub(super) async fn loading_batch(store: &Store, rel: &str, remote: &str) -> (i64, i64) {
    let file = ready(store, &[(rel, 10, None)]).await[0];
    let batch = sealed_batch(store, &[file]).await;
    store
        .advance_batch(batch, Step::Creating, "create-batch sent")
        .await
        .unwrap();
    store
        .advance_batch(batch, Step::Loading { remote_id: remote }, "created")
        .await
        .unwrap();
    (batch, file)
}
