//! What the store's unit tests share: a store on a temp SQLite file, and files and batches
//! brought to a state through the store's own API.

use super::{Dedupe, NewBatch, NewFile, Recorded, Sealed, Step, Store};
use crate::format::Format;

/// A store of its own in a fresh temp dir (kept alive by the returned guard).
pub(super) async fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_exclusive(dir.path(), false).await.unwrap();
    (dir, store)
}

/// The SQLite pool of a store from [`temp_store`], for tests that look under the API.
pub(super) fn sqlite_pool(store: &Store) -> &sqlx::SqlitePool {
    match &store.backend {
        super::Backend::Sqlite(queue) => &queue.pool,
        super::Backend::Postgres(_) => panic!("temp_store is SQLite"),
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

/// A batch of one new file, sealed and driven to `loading` as the platform's batch `remote`;
/// returns (batch id, file id).
pub(super) async fn loading_batch(store: &Store, rel: &str, remote: &str) -> (i64, i64) {
    let file = ready(store, &[(rel, 10, None)]).await[0];
    let sealed = store
        .seal_batch(&batch_of_w(), &[file], Dedupe::AllowDuplicates)
        .await
        .unwrap();
    let batch = sealed.batch_id.unwrap();
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
