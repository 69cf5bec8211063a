//! The watcher's own state, driven by hand: candidates looked at (or not) as their settle
//! runs, the queue's room, early hashes. Real files in a temp folder and a real store; no
//! watch loop, no events (a change a test makes is one no event told of).

use super::*;
use sha2::Digest;

/// A watcher of `dir`/drop (created) with `settle`, queueing at most `max_queued` files, and
/// its store in `dir`/state (the scan's tests use it too).
pub(super) async fn watcher_of(
    dir: &Path,
    settle: &str,
    max_queued: u64,
) -> (Watcher, Store, PathBuf) {
    let drop = dir.join("drop");
    let text = format!("[[watch]]\npath = {drop:?}\ndataset = \"d\"\nsettle = \"{settle}\"\n");
    let config = crate::config::Config::parse(&text, &dir.join("c.toml")).unwrap();
    let store = Store::open_shared(&dir.join("state")).await.unwrap();
    let watcher = Watcher::new(
        config.watches[0].clone(),
        store.clone(),
        Arc::new(Notify::new()),
        Arc::default(),
        max_queued,
    );
    std::fs::create_dir_all(&drop).unwrap();
    (watcher, store, drop)
}

#[tokio::test]
async fn versions_of_files_gone_from_the_folder_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _store, _drop) = watcher_of(dir.path(), "0", 1000).await;
    for i in 0..3 {
        std::fs::write(dir.path().join(format!("drop/{i}.json")), "{}\n").unwrap();
    }
    w.scan().await.unwrap();
    w.check_candidates().await.unwrap();
    assert_eq!(w.recorded.len(), 3);
    std::fs::remove_file(dir.path().join("drop/0.json")).unwrap();
    std::fs::remove_file(dir.path().join("drop/1.json")).unwrap();
    w.scan().await.unwrap();
    assert_eq!(w.recorded.keys().collect::<Vec<_>>(), ["2.json"]);
}

#[tokio::test]
async fn the_queue_is_counted_again_only_when_its_room_could_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let (w, store, drop) = watcher_of(dir.path(), "0", 10).await;
    let mut count = QueueCount::default();
    assert_eq!(count.queued(&store, 10, 1).await.unwrap(), 0);
    // Another writer (a second watch, `push`) queues five files behind its back.
    let others: Vec<_> = (0..5)
        .map(|i| {
            let identity = Identity {
                dev: 1,
                ino: i,
                size: 3,
                mtime_ns: 1,
            };
            let rel = format!("other-{i}.json");
            w.new_file(&rel, identity, &drop.join(&rel))
        })
        .collect();
    store.record_ready_many(&others).await.unwrap();
    // Room enough by the last count: not counted again; its own files are added to it.
    assert_eq!(count.queued(&store, 10, 1).await.unwrap(), 0);
    count.added(4);
    assert_eq!(count.queued(&store, 10, 6).await.unwrap(), 4);
    // Taking 7 could reach the cap by the last count: counted again, the others seen.
    assert_eq!(count.queued(&store, 10, 7).await.unwrap(), 5);
}

#[tokio::test]
async fn a_waiting_file_is_read_again_only_once_it_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _store, drop) = watcher_of(dir.path(), "10s", 1000).await;
    std::fs::write(drop.join("a.json"), "{}\n").unwrap();
    w.scan().await.unwrap();
    let wait_out_settle = |w: &mut Watcher| {
        let c = w.candidates.get_mut("a.json").unwrap();
        c.since -= Duration::from_secs(11);
    };

    // Rewritten with no event to tell (as through a mapping): not due, so not read.
    std::fs::write(drop.join("a.json"), "{\"id\":1}\n").unwrap();
    w.check_candidates().await.unwrap();
    assert_eq!(w.candidates["a.json"].identity.size, 3, "read before due");

    // Due: read, the change seen, its clock started again.
    wait_out_settle(&mut w);
    w.check_candidates().await.unwrap();
    assert!(w.recorded.is_empty(), "taken although it changed");
    let c = &w.candidates["a.json"];
    assert_eq!(c.identity.size, 9);
    assert!(
        c.since.elapsed() < Duration::from_secs(10),
        "clock not restarted"
    );

    // Held still for its settle since: taken.
    wait_out_settle(&mut w);
    w.check_candidates().await.unwrap();
    assert_eq!(w.recorded["a.json"].size, 9);
}

#[tokio::test]
async fn waiting_files_are_not_looked_at_while_intake_is_paused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, store, drop) = watcher_of(dir.path(), "0", 1).await;
    for i in 0..3 {
        std::fs::write(drop.join(format!("{i}.json")), "{}\n").unwrap();
    }
    w.scan().await.unwrap();
    w.check_candidates().await.unwrap();
    assert_eq!(w.recorded.len(), 1, "max_queued_files = 1");
    assert!(w.queue_full);
    let mut waiting: Vec<String> = w.candidates.keys().cloned().collect();
    waiting.sort();
    assert_eq!(waiting.len(), 2);

    // Removed while intake is paused: nobody looks, so nobody notices.
    std::fs::remove_file(drop.join(&waiting[0])).unwrap();
    w.check_candidates().await.unwrap();
    assert_eq!(w.candidates.len(), 2, "the waiting files were not re-read");

    // The queue drains: they are looked at again, the removed one forgotten.
    let taken = w.recorded.keys().next().unwrap().clone();
    let id = store.files_by_path(&taken).await.unwrap()[0].id;
    store.fail_file(id, "test: out of the queue").await.unwrap();
    w.check_candidates().await.unwrap();
    assert!(!w.queue_full);
    assert!(w.candidates.is_empty(), "{:?}", w.candidates.keys());
    assert!(w.recorded.contains_key(&waiting[1]));
    assert!(!w.recorded.contains_key(&waiting[0]));
}

#[tokio::test]
async fn a_large_file_just_found_is_looked_at_again_soon_so_its_hash_starts_early() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _store, drop) = watcher_of(dir.path(), "10s", 1000).await;
    w.early = crate::early_hash::EarlyHashes::new(1 << 20);
    // A small file just written brings the next look no closer than its settle...
    w.next_check = Instant::now() + Duration::from_secs(3600);
    std::fs::write(drop.join("small.json"), b"{}\n").unwrap();
    w.scan().await.unwrap();
    assert!(w.candidates.contains_key("small.json"));
    assert!(w.next_check > Instant::now() + Duration::from_secs(5));
    // ...a large one is looked at again within EARLY_LOOK of being found.
    std::fs::write(drop.join("big.json"), vec![b'1'; 2 << 20]).unwrap();
    w.scan().await.unwrap();
    assert!(w.candidates.contains_key("big.json"));
    assert!(
        w.next_check <= Instant::now() + Duration::from_millis(50),
        "the next look is {:?} away",
        w.next_check.saturating_duration_since(Instant::now())
    );
}

#[tokio::test]
async fn a_large_file_is_hashed_once_it_holds_still_and_again_after_a_change() {
    let dir = tempfile::tempdir().unwrap();
    // A long settle: every look below finds the file due, none takes it.
    let (mut w, _store, drop) = watcher_of(dir.path(), "1h", 1000).await;
    let early = crate::early_hash::EarlyHashes::new(1 << 20);
    w.early = early.clone();
    let path = drop.join("big.json");
    let first = vec![b'1'; 16 << 20];
    std::fs::write(&path, &first).unwrap();
    std::fs::write(drop.join("small.json"), b"{}\n").unwrap();
    w.scan().await.unwrap();
    let first_id = Identity::read(&path).unwrap();
    w.check_candidates().await.unwrap();
    // Held still since it was found: its hash started (not the small file's).
    let hashing = early.take(first_id).expect("hashing the first version");
    let small = Identity::read(&drop.join("small.json")).unwrap();
    assert!(early.take(small).is_none());
    early.known(first_id, "not taken: only its identity matters here");
    w.check_candidates().await.unwrap();
    assert!(early.take(first_id).is_some(), "one hash per version");
    assert!(hashing.finish().await.is_some());

    // Rewritten while it settles: the look that sees the change cancels the old version's
    // hash and starts none (the new version may still be being written)...
    let hashing = early.start(&drop, &path, first_id).unwrap();
    let second = vec![b'2'; (16 << 20) + 1];
    std::fs::write(&path, &second).unwrap();
    let second_id = Identity::read(&path).unwrap();
    w.check_candidates().await.unwrap();
    assert!(
        early.take(first_id).is_none(),
        "the old version's hash is forgotten"
    );
    assert!(
        early.take(second_id).is_none(),
        "not hashed on the look that saw it change"
    );
    // Cancelled, or failed by the change; a hash it gives is the whole first version's.
    if let Some(sha) = hashing.finish().await {
        assert_eq!(sha, format!("{:x}", sha2::Sha256::digest(&first)));
    }
    // ...and the next look, which finds it unchanged, hashes the new version.
    w.check_candidates().await.unwrap();
    let hashing = early.take(second_id).expect("hashing the second version");
    assert_eq!(
        hashing.finish().await.unwrap(),
        format!("{:x}", sha2::Sha256::digest(&second))
    );
}
