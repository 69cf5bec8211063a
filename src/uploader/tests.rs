//! The batch's state machine driven by a real [`Uploader`] against a real emulator, from
//! states a stop leaves in the store. The states are made through the store's API only; it
//! must not reach into the tables behind it.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Uploader;
use super::transfer::tests::{DATASET, Platform, platform, platform_with};
use crate::api::BatchAction;
use crate::config::Upload;
use crate::disk::Identity;
use crate::format::Format;
use crate::store::{
    BatchPhase, BatchState, Dedupe, FileState, NewBatch, NewFile, Recorded, Step, Uploaded,
};

/// A stop right after COMPLETE can come before the hash of a large file, still computed
/// behind its read, was recorded. The batch's next drive reads the file again and records
/// its hash before the batch's outcome is taken: the receipts and the one-copy rule go by it.
#[tokio::test]
async fn a_hash_lost_to_a_stop_after_complete_is_read_again_before_the_outcome() {
    let platform = platform().await;
    let (store, api, remote) = (&platform.store, &platform.api, &platform.batch);
    let content = b"{\"a\":1}\n{\"a\":2}\n".repeat(200);
    let (file, batch) = sealed(&platform, &content).await;

    // The drive before the stop: the batch created, the file sent and recorded without its
    // hash (still behind), COMPLETE sent; then the process ended.
    store
        .advance_batch(batch, Step::Creating, "create-batch sent")
        .await
        .unwrap();
    store
        .advance_batch(batch, Step::Loading { remote_id: remote }, "created")
        .await
        .unwrap();
    let size = content.len() as u64;
    api.put_file(
        remote,
        DATASET,
        "big.json",
        super::read::memory_body(content.clone().into()),
        size,
    )
    .await
    .unwrap();
    store
        .mark_uploaded_many(&[Uploaded {
            file_id: file,
            sha256: None,
            size: size as i64,
            hash_stored: false,
        }])
        .await
        .unwrap();
    store
        .advance_batch(batch, Step::Completing, "COMPLETE sent")
        .await
        .unwrap();
    api.batch_action(remote, BatchAction::Complete)
        .await
        .unwrap();

    let ended = drive_until_ended(&platform, batch, |_| false).await;
    assert_eq!(ended, BatchState::Success);
    assert_eq!(
        store.file(file).await.unwrap().unwrap().sha256,
        Some(format!("{:x}", Sha256::digest(&content)))
    );
}

/// A large file's hash, still computed behind its read when its batch is completed, is
/// recorded from the descriptor the bytes were sent from: a file renamed over it once it is
/// on the platform changes nothing of what is recorded (read again from the name, the other
/// file would give no hash at all).
#[tokio::test]
async fn the_hash_behind_an_upload_is_of_the_bytes_sent_whatever_the_name_holds_later() {
    // Every request waits, the batch's COMPLETE too: 0.6 s to rename before the hash is
    // taken, a margin for a busy machine.
    let mut config = batchdrop_emulator::EmulatorConfig::default();
    config.faults.latency_probability = 1.0;
    config.faults.latency_ms = 600;
    let platform = platform_with(config).await;
    let content = b"{\"a\":1}\n{\"a\":2}\n".repeat(200);
    assert!(
        content.len() > 1024,
        "sent in chunks, its hash behind the read"
    );
    let (file, batch) = sealed(&platform, &content).await;

    let name = platform.dir.path().join("drop/big.json");
    let other = platform.dir.path().join("drop/.other");
    std::fs::write(&other, b"{\"b\":3}\n").unwrap();
    let mut renamed = false;
    let ended = drive_until_ended(&platform, batch, |f| {
        if f.state == FileState::Uploaded {
            assert_eq!(f.sha256, None, "renamed before its hash was recorded");
            std::fs::rename(&other, &name).unwrap();
            renamed = true;
        }
        renamed
    })
    .await;
    assert!(renamed, "the file was renamed over once uploaded");
    assert_eq!(ended, BatchState::Success);
    assert_eq!(
        platform.store.file(file).await.unwrap().unwrap().sha256,
        Some(format!("{:x}", Sha256::digest(&content)))
    );
}

/// `content` written to `drop/big.json`, queued and sealed into a batch of its own: the
/// file's and the batch's ids.
async fn sealed(platform: &Platform, content: &[u8]) -> (i64, i64) {
    let drop = platform.dir.path().join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(drop.join("big.json"), content).unwrap();
    let on_disk = Identity::of(&std::fs::metadata(drop.join("big.json")).unwrap());
    let new = NewFile {
        watch: "w".into(),
        dataset: DATASET.into(),
        format: Format::Json,
        multiline_json: false,
        root: drop.to_string_lossy().into_owned(),
        rel_path: "big.json".into(),
        dev: on_disk.dev as i64,
        ino: on_disk.ino as i64,
        size: on_disk.size as i64,
        mtime_ns: on_disk.mtime_ns,
        raw_path: None,
    };
    let store = &platform.store;
    let Recorded::New(file) = store.record_ready_with(&new, None).await.unwrap() else {
        panic!("a new file")
    };
    let sealed = NewBatch {
        watch: "w",
        dataset: DATASET,
        sandbox: "prod",
        format: Format::Json,
        multiline_json: false,
        replay: None,
    };
    let batch = store
        .seal_batch(&sealed, &[file], Dedupe::AllowDuplicates)
        .await
        .unwrap()
        .batch_id
        .unwrap();
    (file, batch)
}

/// Runs a real uploader (files over 1 KiB sent in 1 KiB chunks, no hash taken while they
/// settled) until the batch ends, showing `watch` the batch's first file every few
/// milliseconds until it says it has seen enough; the state the batch ended in.
async fn drive_until_ended(
    platform: &Platform,
    batch: i64,
    mut watch: impl FnMut(&crate::store::FileRow) -> bool,
) -> BatchState {
    let second = Duration::from_secs(1);
    let upload = Upload {
        large_file_threshold: 1024,
        chunk_size: 1024,
        concurrency: 4,
        max_attempts: 1,
        max_retry_age: second,
        backoff_initial: second,
        backoff_max: second,
        poll_initial: Duration::from_millis(50),
        poll_max: Duration::from_millis(50),
        max_processing_age: Duration::from_secs(60),
        give_up_after: Duration::from_secs(60),
    };
    let store = &platform.store;
    let uploader = Uploader::new(
        store.clone(),
        platform.api.clone(),
        upload,
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
        Arc::default(),
        None,
        crate::early_hash::EarlyHashes::default(),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(uploader.run(shutdown.clone(), second));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut watching = true;
    let ended = loop {
        if watching {
            let files = store.batch_files(batch).await.unwrap();
            watching = !watch(&files[0]);
        }
        let phase = store.batch(batch).await.unwrap().phase;
        if let BatchPhase::Ended { state, .. } = phase {
            break state;
        }
        assert!(std::time::Instant::now() < deadline, "still {phase:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    shutdown.cancel();
    running.await.unwrap();
    ended
}
