//! The batcher's tests: hashing before the seal (and by the local check), first scans, twins of
//! files in flight.

use super::*;

use crate::schedule::tests::file;

#[test]
fn a_queued_file_is_hashed_only_as_the_version_queued_and_only_up_to_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.json");
    std::fs::write(&path, "{\"a\": 1}\n").unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    let queued = disk::Identity::of(&meta);
    let mut f = file(1, "json", queued.size as i64, 0);
    f.root = dir.path().to_string_lossy().into_owned();
    f.rel_path = "a.json".into();
    (f.dev, f.ino, f.mtime_ns) = (queued.dev as i64, queued.ino as i64, queued.mtime_ns);
    use sha2::Digest;
    let expected = format!("{:x}", sha2::Sha256::digest(b"{\"a\": 1}\n"));
    assert_eq!(sha256_queued(&f, None).unwrap(), Some(expected.clone()));
    // Going on from an early hash: a whole one is taken as is, a partial one gone on from
    // (a state of other bytes shows that the first ones are not read again).
    let planted = "e".repeat(64);
    let done = Some(crate::early_hash::Outcome::Done(planted.clone()));
    assert_eq!(sha256_queued(&f, done).unwrap(), Some(planted.clone()));
    let mut state = sha2::Sha256::new();
    state.update(b"{\"a\"");
    let partial = crate::early_hash::Outcome::HandedOver { at: 4, state };
    assert_eq!(sha256_queued(&f, Some(partial)).unwrap(), Some(expected));
    let mut other = sha2::Sha256::new();
    other.update(b"XXXX");
    let mut foreign = other.clone();
    foreign.update(b": 1}\n");
    let partial = crate::early_hash::Outcome::HandedOver {
        at: 4,
        state: other,
    };
    assert_eq!(
        sha256_queued(&f, Some(partial)).unwrap(),
        Some(format!("{:x}", foreign.finalize()))
    );

    // Grown since it was queued: not hashed (reading to EOF would hash the new bytes).
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"b\": 2}\n")
        .unwrap();
    assert_eq!(sha256_queued(&f, None).unwrap(), None);
    // Nor taken from an early hash of the version queued: what is there is another one.
    let done = Some(crate::early_hash::Outcome::Done(planted));
    assert_eq!(sha256_queued(&f, done).unwrap(), None);
    // Replaced by another file: not hashed either.
    std::fs::write(dir.path().join("b.json"), "{\"a\": 1}\n").unwrap();
    std::fs::rename(dir.path().join("b.json"), &path).unwrap();
    assert_eq!(sha256_queued(&f, None).unwrap(), None);
}

/// One watch of dataset "d" on `dir`/drop that seals at once, and its store in
/// `dir`/state.
async fn one_watch(dir: &Path) -> (Watch, Store) {
    let root = dir.join("drop");
    std::fs::create_dir_all(&root).unwrap();
    let text =
        format!("[[watch]]\npath = {root:?}\ndataset = \"d\"\nsettle = \"0\"\nmax_wait = \"0\"\n");
    let config = crate::config::Config::parse(&text, &dir.join("c.toml")).unwrap();
    let store = Store::open_exclusive(&dir.join("state"), false)
        .await
        .unwrap();
    (config.watches[0].clone(), store)
}

/// Writes `body` to `rel` in `watch`'s folder; the file as the watcher would queue it.
fn queued(watch: &Watch, rel: &str, body: &str) -> crate::store::NewFile {
    let path = watch.path.join(rel);
    std::fs::write(&path, body).unwrap();
    let identity = crate::disk::Identity::of(&std::fs::metadata(&path).unwrap());
    crate::store::NewFile {
        watch: watch.name.clone(),
        dataset: watch.dataset.clone(),
        format: crate::format::Format::Json,
        multiline_json: false,
        root: watch.path.to_string_lossy().into_owned(),
        rel_path: rel.into(),
        dev: identity.dev as i64,
        ino: identity.ino as i64,
        size: identity.size as i64,
        mtime_ns: identity.mtime_ns,
        raw_path: None,
    }
}

/// Records `files` as ready, each as a new file: their ids, in order.
async fn recorded_new<const N: usize>(
    store: &Store,
    files: [&crate::store::NewFile; N],
) -> [i64; N] {
    let new: Vec<crate::store::NewFile> = files.into_iter().cloned().collect();
    let recorded = store.record_ready_many(&new).await.unwrap();
    let ids: Vec<i64> = recorded
        .iter()
        .map(|r| match r {
            crate::store::Recorded::New(id) => *id,
            other => panic!("not recorded as new: {other:?}"),
        })
        .collect();
    ids.try_into().expect("one outcome per file")
}

/// The identity `file` was queued with.
fn identity(file: &crate::store::NewFile) -> crate::disk::Identity {
    crate::disk::Identity {
        dev: file.dev as u64,
        ino: file.ino as u64,
        size: file.size as u64,
        mtime_ns: file.mtime_ns,
    }
}

/// Each file's hash is kept in `early` for its upload, done, as `sha`.
fn assert_kept_for_upload<const N: usize>(
    early: &crate::early_hash::EarlyHashes,
    kept: [(&crate::store::NewFile, &String); N],
) {
    for (file, sha) in kept {
        let job = early
            .take(identity(file))
            .unwrap_or_else(|| panic!("{}: no hash kept for its upload", file.rel_path));
        assert_eq!(
            job.outcome(),
            Some(crate::early_hash::Outcome::Done(sha.clone())),
            "{}",
            file.rel_path
        );
    }
}

/// A batcher of `watches` alone on `store`: no checks, budgets, mappings or fleet, and no
/// cap on the bytes in flight.
fn batcher_of(store: &Store, state_dir: &Path, watches: Vec<Watch>) -> Batcher {
    Batcher {
        watches: Arc::new(std::sync::RwLock::new(watches)),
        validators: Default::default(),
        budgets: Default::default(),
        mappers: Default::default(),
        state_dir: state_dir.to_path_buf(),
        checked: Default::default(),
        store: store.clone(),
        health: Default::default(),
        // (The cap is compared as a signed count of bytes.)
        max_inflight_bytes: i64::MAX as u64,
        wake: Default::default(),
        wake_uploader: Default::default(),
        leases: None,
        early: Default::default(),
    }
}

/// A file that cannot be read when it must be hashed (here: a folder now has its name)
/// fails with a reason, rather than waiting unsealed for ever; the others go on.
#[tokio::test]
async fn a_file_that_cannot_be_hashed_fails_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("drop");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("ok.json"), b"{\"id\": 1}\n").unwrap();
    // Hashed only from a descriptor that is the version queued: take its real identity.
    let ok = crate::disk::Identity::of(&std::fs::metadata(root.join("ok.json")).unwrap());
    let store = Store::open_exclusive(&dir.path().join("state"), false)
        .await
        .unwrap();
    let new = |rel: &str, ino: i64, mtime_ns: i64| crate::store::NewFile {
        watch: "w".into(),
        dataset: "d".into(),
        format: crate::format::Format::Json,
        multiline_json: false,
        root: root.to_string_lossy().into_owned(),
        rel_path: rel.into(),
        dev: ok.dev as i64,
        ino,
        size: ok.size as i64,
        mtime_ns,
        raw_path: None,
    };
    // gone.json was deleted after it was queued.
    store
        .record_ready_many(&[
            new("ok.json", ok.ino as i64, ok.mtime_ns),
            new("gone.json", 2, 0),
        ])
        .await
        .unwrap();
    let batcher = batcher_of(&store, &dir.path().join("state"), Vec::new());
    let ready = store.ready_files("w", 10).await.unwrap();
    let kept = batcher
        .hash_where_needed("d", ready, &CancellationToken::new())
        .await
        .unwrap()
        .expect("not shut down");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].rel_path, "ok.json");
    assert!(
        kept[0].sha256.is_some(),
        "a file of a size seen twice is hashed"
    );
    let failed = store
        .files_in_state("w", crate::store::FileState::Failed)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("was deleted") && r.contains("gone.json")),
        "{:?}",
        failed[0].reason
    );
}

/// While a watch's first scan runs, its files wait in the queue unsealed, even on a
/// flush; once the scan ends they are sealed as usual.
#[tokio::test]
async fn a_watch_seals_nothing_while_its_first_scan_records_a_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let (watch, store) = one_watch(dir.path()).await;
    // Sizes of their own: none needs hashing before it is sealed.
    let files: Vec<_> = (0..3)
        .map(|i| queued(&watch, &format!("{i}.json"), &"{}\n".repeat(i + 1)))
        .collect();
    store.record_ready_many(&files).await.unwrap();
    let batcher = batcher_of(&store, &dir.path().join("state"), vec![watch.clone()]);
    let health = batcher.health.clone();
    let shutdown = CancellationToken::new();

    let scan = crate::telemetry::BacklogScan::start(&health, &watch.name, &batcher.wake);
    assert!(health.scanning_backlog(&watch.name));
    batcher.pass(true, &shutdown).await.unwrap();
    assert_eq!(store.ready_files(&watch.name, 10).await.unwrap().len(), 3);

    drop(scan);
    assert!(!health.scanning_backlog(&watch.name));
    batcher.pass(true, &shutdown).await.unwrap();
    assert!(store.ready_files(&watch.name, 10).await.unwrap().is_empty());
    assert_eq!(store.batches_in_flight().await.unwrap().len(), 1);
}

/// A file queued after another of its size was sealed (unhashed: alone with its size
/// then) does not wait for that one's upload: the batcher hashes the one in flight, and
/// its next pass compares contents. Another content goes then; the same content waits.
#[tokio::test]
async fn a_twin_of_a_file_in_flight_does_not_wait_for_its_upload_when_contents_differ() {
    let dir = tempfile::tempdir().unwrap();
    let (watch, store) = one_watch(dir.path()).await;
    let queue = |rel: &str, body: &str| queued(&watch, rel, body);
    let new_id = |recorded: &[crate::store::Recorded]| match recorded {
        [crate::store::Recorded::New(id)] => *id,
        other => panic!("not recorded as new: {other:?}"),
    };
    let batcher = batcher_of(&store, &dir.path().join("state"), vec![watch.clone()]);
    let shutdown = CancellationToken::new();

    let first = new_id(
        &store
            .record_ready_many(&[queue("first.json", "{\"a\":1}\n")])
            .await
            .unwrap(),
    );
    batcher.pass(true, &shutdown).await.unwrap();
    let first_row = store.file(first).await.unwrap().unwrap();
    assert_eq!(first_row.state, crate::store::FileState::Batched);
    assert_eq!(
        first_row.sha256, None,
        "alone with its size: sealed unhashed"
    );

    // Same size, other content; then same size, same content as the first.
    let other = new_id(
        &store
            .record_ready_many(&[queue("other.json", "{\"a\":2}\n")])
            .await
            .unwrap(),
    );
    // This pass leaves it waiting, and hashes the first one; the next seals it.
    batcher.pass(true, &shutdown).await.unwrap();
    assert!(store.file(first).await.unwrap().unwrap().sha256.is_some());
    batcher.pass(true, &shutdown).await.unwrap();
    assert_eq!(
        store.file(other).await.unwrap().unwrap().state,
        crate::store::FileState::Batched,
        "another content does not wait for the first one's upload"
    );
    assert_eq!(store.batches_in_flight().await.unwrap().len(), 2);

    let copy = new_id(
        &store
            .record_ready_many(&[queue("copy.json", "{\"a\":1}\n")])
            .await
            .unwrap(),
    );
    batcher.pass(true, &shutdown).await.unwrap();
    let copy_row = store.file(copy).await.unwrap().unwrap();
    assert_eq!(copy_row.state, crate::store::FileState::Ready);
    assert_eq!(
        copy_row.waits_for,
        Some(first),
        "the same content waits for it"
    );
}

/// A file whose records are checked before the seal is hashed once: the check goes on from
/// the file's early hash (computed while it settled), and gives the whole hash back for its
/// upload; a file with no early hash is hashed by the check, and that hash is given too.
#[tokio::test]
async fn a_checked_file_is_hashed_once_and_its_hash_given_to_the_upload() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let (watch, store) = one_watch(dir.path()).await;
    assert_eq!(watch.validate, crate::config::Validate::Reject);
    let mut batcher = batcher_of(&store, &dir.path().join("state"), vec![watch.clone()]);
    let schema = crate::api::RegistrySchema {
        id: "https://ns.adobe.com/test/schemas/ids".into(),
        version: "1.0".into(),
        document: serde_json::json!({
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "required": ["id"]
        }),
    };
    let validator = crate::preflight::validate::Validator::new(&schema, None).unwrap();
    batcher
        .validators
        .write()
        .unwrap()
        .insert(watch.name.clone(), Arc::new(validator));
    // Every file here counts as large.
    let early = crate::early_hash::EarlyHashes::new(8);
    batcher.early = early.clone();
    let shutdown = CancellationToken::new();

    let hashed_early = queued(&watch, "early.json", "{\"id\":1}\n{\"id\":2}\n");
    // A hash no read of the file gives: the one recorded can only be the early hash's.
    let planted = "e".repeat(64);
    early.known(identity(&hashed_early), &planted);
    let body = "{\"id\":3}\n{\"id\":4}\n{\"id\":5}\n";
    let not_early = queued(&watch, "late.json", body);
    let [early_id, late_id] = recorded_new(&store, [&hashed_early, &not_early]).await;
    batcher.pass(true, &shutdown).await.unwrap();

    let sealed = |id: i64| {
        let store = store.clone();
        async move {
            let row = store.file(id).await.unwrap().unwrap();
            assert_eq!(
                row.state,
                crate::store::FileState::Batched,
                "{}",
                row.rel_path
            );
            row.sha256
        }
    };
    assert_eq!(
        sealed(early_id).await.as_deref(),
        Some(planted.as_str()),
        "the check took the early hash rather than hashing the file again"
    );
    let real = format!("{:x}", sha2::Sha256::digest(body.as_bytes()));
    assert_eq!(sealed(late_id).await.as_deref(), Some(real.as_str()));
    assert_kept_for_upload(&early, [(&hashed_early, &planted), (&not_early, &real)]);
}

/// A large file that shares its size with another (a file dropped again, say) is hashed
/// before the seal to compare contents: from its early hash, not again, and the hash is
/// given back for its upload.
#[tokio::test]
async fn a_large_twin_is_hashed_from_its_early_hash_and_its_hash_given_to_the_upload() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let (watch, store) = one_watch(dir.path()).await;
    let mut batcher = batcher_of(&store, &dir.path().join("state"), vec![watch.clone()]);
    // Every file here counts as large.
    let early = crate::early_hash::EarlyHashes::new(4);
    batcher.early = early.clone();
    let shutdown = CancellationToken::new();
    let first = queued(&watch, "first.json", "{\"a\":1}\n");
    let twin = queued(&watch, "twin.json", "{\"a\":2}\n");
    assert_eq!(first.size, twin.size, "twins by size");
    let planted = "e".repeat(64);
    early.known(identity(&first), &planted);
    let [first_id, twin_id] = recorded_new(&store, [&first, &twin]).await;
    batcher.pass(true, &shutdown).await.unwrap();

    let first_row = store.file(first_id).await.unwrap().unwrap();
    assert_eq!(
        first_row.sha256.as_deref(),
        Some(planted.as_str()),
        "hashed from its early hash, not again"
    );
    let real = format!("{:x}", sha2::Sha256::digest(b"{\"a\":2}\n"));
    let twin_row = store.file(twin_id).await.unwrap().unwrap();
    assert_eq!(twin_row.sha256.as_deref(), Some(real.as_str()));
    assert_kept_for_upload(&early, [(&first, &planted), (&twin, &real)]);
}
