//! Unit tests of every state transition the store records, each on a store of its own on both
//! backends (a temp SQLite file; a database of its own on PostgreSQL, see `on_both_backends!`),
//! driven through the store's public API only: what each transition moves,
//! what it leaves alone (a file or batch no longer in the state it applies to), and the event
//! it leaves in the history. The one-copy rule's transitions are tested in `batching`, the
//! steps of a batch in flight in `upload`.
//!
//! This module must not reach into the tables behind the API, except to stage what only an
//! older version of batchdrop could have written (migration 0040's backfill).

use super::testing::{
    batch_of_w, loading_batch, new_file, on_both_backends, ready, seal, sealed_batch, temp_store,
};
use super::{
    BatchOutcome, BatchState, Dedupe, FileState, Finalized, Predecessors, Recorded, ReplayRequest,
    Step, Store, Uploaded, Verdict,
};

/// The kinds of a file's history (its own events and its batch's), oldest first.
async fn kinds(store: &Store, file: i64) -> Vec<String> {
    let events = store.events_for_file(file).await.unwrap();
    events.into_iter().map(|e| e.kind).collect()
}

async fn state_of(store: &Store, file: i64) -> FileState {
    store.file(file).await.unwrap().unwrap().state
}

fn uploaded(file: i64) -> Uploaded {
    Uploaded {
        file_id: file,
        sha256: Some("ab".repeat(32)),
        size: 10,
        hash_stored: false,
    }
}

fn replay_of(batch: &str) -> ReplayRequest {
    ReplayRequest {
        predecessors: Predecessors(vec![batch.into()]),
        reason: "fix".into(),
        sidecar: Some("a.json.replay".into()),
    }
}

on_both_backends!(
    a_new_file_is_ready_once_and_a_known_version_is_not_queued_again,
    a_rejected_file_is_failed_with_its_reason_once,
    a_replay_attaches_to_a_ready_file_only_once,
    a_ready_file_fails_with_its_sidecar_but_a_batched_one_does_not,
    a_ready_file_whose_content_is_elsewhere_becomes_a_duplicate,
    sealing_batches_ready_files_and_skips_those_no_longer_ready,
    an_acknowledged_file_is_uploaded_unless_it_left_its_batch_meanwhile,
    a_file_sent_before_its_hash_was_known_is_listed_until_it_is_recorded,
    facts_of_more_files_than_one_statement_takes_are_all_recorded,
    a_batch_lists_its_files_by_state_and_counts_them,
    a_changed_file_is_superseded_and_finished,
    an_abandoned_batch_sends_its_files_back_to_the_queue_untouched,
    a_batch_that_ends_gives_its_files_to_the_archiver,
    a_failed_batch_requeues_the_files_its_errors_do_not_blame,
    an_aborted_batch_fails_its_files_and_only_a_batch_in_flight_aborts,
    only_a_successful_batch_is_reverted,
    a_replaced_batch_names_its_replacement,
    a_finished_file_keeps_its_place_and_its_receipts,
    a_failed_file_put_back_by_retry_is_superseded_and_only_a_failed_one,
    a_transient_failure_is_counted_and_progress_resets_the_count,
    a_blocked_dataset_holds_its_batches_and_sends_unsent_ones_back,
);

async fn a_new_file_is_ready_once_and_a_known_version_is_not_queued_again(store: Store) {
    let file = new_file("a.json", 10);
    let Recorded::New(id) = store.record_ready_with(&file, None).await.unwrap() else {
        panic!("a first version is new");
    };
    assert_eq!(state_of(&store, id).await, FileState::Ready);
    assert_eq!(kinds(&store, id).await, ["ready"]);
    assert!(matches!(
        store.record_ready_with(&file, None).await.unwrap(),
        Recorded::Known
    ));
    assert_eq!(store.queued_files().await.unwrap(), 1);
}

async fn a_rejected_file_is_failed_with_its_reason_once(store: Store) {
    let file = new_file("a.xml", 10);
    let id = store
        .record_rejected(&file, "unknown format")
        .await
        .unwrap()
        .expect("recorded");
    let row = store.file(id).await.unwrap().unwrap();
    assert_eq!(row.state, FileState::Failed);
    assert_eq!(row.reason.as_deref(), Some("unknown format"));
    assert_eq!(kinds(&store, id).await, ["rejected"]);
    assert_eq!(store.record_rejected(&file, "again").await.unwrap(), None);
}

async fn a_replay_attaches_to_a_ready_file_only_once(store: Store) {
    let id = ready(&store, &[("a.json", 10, None)]).await[0];
    assert!(store.attach_replay(id, &replay_of("OLD")).await.unwrap());
    let row = store.file(id).await.unwrap().unwrap();
    assert_eq!(row.replay, Some(Predecessors(vec!["OLD".into()])));
    assert_eq!(row.sidecar.as_deref(), Some("a.json.replay"));
    assert!(
        !store.attach_replay(id, &replay_of("OTHER")).await.unwrap(),
        "a file takes one sidecar"
    );
    assert_eq!(kinds(&store, id).await, ["ready", "replay"]);

    let batched = ready(&store, &[("b.json", 10, None)]).await[0];
    store
        .seal_batch(&batch_of_w(), &[batched], Dedupe::AllowDuplicates)
        .await
        .unwrap();
    assert!(
        !store
            .attach_replay(batched, &replay_of("OLD"))
            .await
            .unwrap(),
        "too late once batched"
    );
}

async fn a_ready_file_fails_with_its_sidecar_but_a_batched_one_does_not(store: Store) {
    let ids = ready(&store, &[("a.json", 10, None), ("b.json", 11, None)]).await;
    assert!(
        store
            .reject_ready_with_sidecar(ids[0], "bad sidecar", "a.json.replay")
            .await
            .unwrap()
    );
    let row = store.file(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.sidecar.as_deref()),
        (FileState::Failed, Some("a.json.replay"))
    );
    assert_eq!(kinds(&store, ids[0]).await, ["ready", "failed"]);

    store
        .seal_batch(&batch_of_w(), &ids[1..], Dedupe::AllowDuplicates)
        .await
        .unwrap();
    assert!(
        !store
            .reject_ready_with_sidecar(ids[1], "bad sidecar", "b.json.replay")
            .await
            .unwrap()
    );
    assert_eq!(state_of(&store, ids[1]).await, FileState::Batched);
}

async fn a_ready_file_whose_content_is_elsewhere_becomes_a_duplicate(store: Store) {
    let ids = ready(&store, &[("a.json", 10, None), ("b.json", 11, None)]).await;
    store
        .mark_duplicate_elsewhere(ids[0], "already in the dataset")
        .await
        .unwrap();
    let row = store.file(ids[0]).await.unwrap().unwrap();
    assert_eq!(row.state, FileState::Duplicate);
    assert_eq!(row.reason.as_deref(), Some("already in the dataset"));
    assert_eq!(kinds(&store, ids[0]).await, ["ready", "duplicate"]);

    store
        .seal_batch(&batch_of_w(), &ids[1..], Dedupe::AllowDuplicates)
        .await
        .unwrap();
    store
        .mark_duplicate_elsewhere(ids[1], "too late")
        .await
        .unwrap();
    assert_eq!(state_of(&store, ids[1]).await, FileState::Batched);
    assert_eq!(kinds(&store, ids[1]).await, ["ready", "sealed"]);
}

async fn sealing_batches_ready_files_and_skips_those_no_longer_ready(store: Store) {
    let ids = ready(&store, &[("a.json", 10, None), ("b.json", 11, None)]).await;
    store.fail_file(ids[1], "gone").await.unwrap();
    let sealed = seal(&store, &ids).await;
    let batch = sealed.batch_id.expect("a batch for the ready file");
    assert_eq!(sealed.files, [ids[0]]);
    let row = store.file(ids[0]).await.unwrap().unwrap();
    assert_eq!((row.state, row.batch_id), (FileState::Batched, Some(batch)));
    let row = store.file(ids[1]).await.unwrap().unwrap();
    assert_eq!((row.state, row.batch_id), (FileState::Failed, None));
    assert_eq!(
        store.batch(batch).await.unwrap().state(),
        BatchState::Sealed
    );
    assert_eq!(kinds(&store, ids[0]).await, ["ready", "sealed"]);

    let none = seal(&store, &ids).await;
    assert_eq!(none.batch_id, None, "no batch without a file for it");
}

async fn an_acknowledged_file_is_uploaded_unless_it_left_its_batch_meanwhile(store: Store) {
    let (_, file) = loading_batch(&store, "a.json", "B1").await;
    let (_, failed) = loading_batch(&store, "b.json", "B2").await;
    store.mark_sent(file).await.unwrap();
    store.set_uploaded_bytes(file, 4).await.unwrap();
    let row = store.file(file).await.unwrap().unwrap();
    assert!(row.sent);
    assert_eq!((row.state, row.uploaded_bytes), (FileState::Batched, 4));

    store.fail_file(failed, "unreadable").await.unwrap();
    store
        .mark_uploaded_many(&[uploaded(file), uploaded(failed)])
        .await
        .unwrap();
    let row = store.file(file).await.unwrap().unwrap();
    assert_eq!(row.state, FileState::Uploaded);
    assert_eq!(row.uploaded_bytes, 10);
    assert_eq!(row.sha256, Some("ab".repeat(32)));
    let row = store.file(failed).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.reason.as_deref()),
        (FileState::Failed, Some("unreadable"))
    );
    assert!(kinds(&store, failed).await.contains(&"failed".to_owned()));
}

async fn a_file_sent_before_its_hash_was_known_is_listed_until_it_is_recorded(store: Store) {
    let (batch, behind) = loading_batch(&store, "big.json", "B1").await;
    let (other_batch, hashed) = loading_batch(&store, "small.json", "B2").await;
    let unknown = Uploaded {
        sha256: None,
        ..uploaded(behind)
    };
    store
        .mark_uploaded_many(&[unknown, uploaded(hashed)])
        .await
        .unwrap();
    let row = store.file(behind).await.unwrap().unwrap();
    assert_eq!((row.state, row.sha256), (FileState::Uploaded, None));
    let listed: Vec<i64> = store
        .uploaded_without_hash(batch)
        .await
        .unwrap()
        .iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(listed, [behind]);
    assert!(
        store
            .uploaded_without_hash(other_batch)
            .await
            .unwrap()
            .is_empty(),
        "a file whose hash came with its fact is not listed"
    );

    store.record_hash(behind, &"cd".repeat(32)).await.unwrap();
    let row = store.file(behind).await.unwrap().unwrap();
    assert_eq!(row.sha256, Some("cd".repeat(32)));
    assert!(store.uploaded_without_hash(batch).await.unwrap().is_empty());
}

async fn facts_of_more_files_than_one_statement_takes_are_all_recorded(store: Store) {
    // 450 facts: more than one statement records (a few hundred each); every file of each
    // statement moves on, in one call.
    let names: Vec<String> = (0..450).map(|n| format!("f{n}.json")).collect();
    // Sizes apart, so that each file has an identity of its own.
    let files: Vec<(&str, i64, Option<&str>)> = names
        .iter()
        .enumerate()
        .map(|(k, n)| (n.as_str(), 1000 + 10 * k as i64, None))
        .collect();
    let ids = ready(&store, &files).await;
    let batch = sealed_batch(&store, &ids).await;
    let facts: Vec<Uploaded> = ids.iter().map(|id| uploaded(*id)).collect();
    store.mark_uploaded_many(&facts).await.unwrap();
    let states = store.batch_file_states(batch).await.unwrap();
    assert_eq!(states, vec![(FileState::Uploaded, 450)]);
    // A single fact.
    let (other, file) = loading_batch(&store, "g.json", "B2").await;
    store.mark_uploaded_many(&[uploaded(file)]).await.unwrap();
    let states = store.batch_file_states(other).await.unwrap();
    assert_eq!(states, vec![(FileState::Uploaded, 1)]);
}

async fn a_batch_lists_its_files_by_state_and_counts_them(store: Store) {
    let ids = ready(
        &store,
        &[
            ("a.json", 10, None),
            ("b.json", 11, None),
            ("c.json", 12, None),
        ],
    )
    .await;
    let batch = sealed_batch(&store, &ids).await;
    let (other, _) = loading_batch(&store, "d.json", "B2").await;
    store.mark_uploaded_many(&[uploaded(ids[1])]).await.unwrap();
    store.fail_file(ids[2], "unreadable").await.unwrap();

    let batched = store
        .batch_files_in_state(batch, FileState::Batched)
        .await
        .unwrap();
    assert_eq!(batched.iter().map(|f| f.id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(
        store
            .batch_file_paths(batch, FileState::Uploaded)
            .await
            .unwrap(),
        [(ids[1], "b.json".to_owned())]
    );
    let mut states = store.batch_file_states(batch).await.unwrap();
    states.sort();
    assert_eq!(
        states,
        [
            (FileState::Batched, 1),
            (FileState::Uploaded, 1),
            (FileState::Failed, 1)
        ]
    );
    // Each batch counts its own files only.
    assert_eq!(
        store.batch_file_states(other).await.unwrap(),
        [(FileState::Batched, 1)]
    );
}

async fn a_changed_file_is_superseded_and_finished(store: Store) {
    let (_, file) = loading_batch(&store, "a.json", "B1").await;
    store.supersede(file, "it changed").await.unwrap();
    let row = store.file(file).await.unwrap().unwrap();
    assert_eq!(row.state, FileState::Superseded);
    assert!(row.finalized, "nothing is left to move");
    assert_eq!(row.reason.as_deref(), Some("it changed"));
    assert_eq!(kinds(&store, file).await.last().unwrap(), "superseded");
}

async fn an_abandoned_batch_sends_its_files_back_to_the_queue_untouched(store: Store) {
    let (batch, file) = loading_batch(&store, "a.json", "B1").await;
    store.mark_sent(file).await.unwrap();
    store.set_uploaded_bytes(file, 4).await.unwrap();
    store.abandon_batch(batch, "expired").await.unwrap();
    let row = store.batch(batch).await.unwrap();
    assert_eq!(row.state(), BatchState::Abandoned);
    assert_eq!(row.remote_id(), Some("B1"), "an ended batch keeps its id");
    assert_eq!(row.last_error.as_deref(), Some("expired"));
    let row = store.file(file).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.batch_id, row.uploaded_bytes, row.sent),
        (FileState::Ready, None, 0, false)
    );
    assert_eq!(store.ready_files("w", 10).await.unwrap().len(), 1);
    let batch_events = store.events_for_batch(batch).await.unwrap();
    assert_eq!(batch_events.last().unwrap().kind, "abandoned");

    // Only a batch in flight is abandoned.
    store.abandon_batch(batch, "again").await.unwrap();
    let row = store.batch(batch).await.unwrap();
    assert_eq!(row.last_error.as_deref(), Some("expired"));
}

async fn a_batch_that_ends_gives_its_files_to_the_archiver(store: Store) {
    let (batch, file) = loading_batch(&store, "a.json", "B1").await;
    store.mark_uploaded_many(&[uploaded(file)]).await.unwrap();
    assert!(store.files_to_finalize(0, 10).await.unwrap().is_empty());
    store
        .advance_batch(batch, Step::Completing, "COMPLETE sent")
        .await
        .unwrap();
    store
        .advance_batch(batch, Step::Processing, "COMPLETE accepted")
        .await
        .unwrap();
    let outcome = BatchOutcome(serde_json::json!({ "metrics": { "inputRecordCount": 2 } }));
    store
        .finish_batch(batch, Verdict::Success, &outcome, "succeeded")
        .await
        .unwrap();
    let row = store.batch(batch).await.unwrap();
    assert_eq!(row.state(), BatchState::Success);
    assert_eq!(row.outcome, Some(outcome));
    let due: Vec<i64> = store
        .files_to_finalize(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(due, [file]);
    assert_eq!(
        store
            .events_for_batch(batch)
            .await
            .unwrap()
            .last()
            .unwrap()
            .kind,
        "success"
    );

    // An ended batch does not end again.
    store
        .finish_batch(batch, Verdict::Failed, &BatchOutcome::default(), "late")
        .await
        .unwrap();
    assert_eq!(
        store.batch(batch).await.unwrap().state(),
        BatchState::Success
    );
}

async fn a_failed_batch_requeues_the_files_its_errors_do_not_blame(store: Store) {
    let ids = ready(&store, &[("a.json", 10, None), ("b.json", 11, None)]).await;
    let batch = sealed_batch(&store, &ids).await;
    store
        .advance_batch(batch, Step::Creating, "sent")
        .await
        .unwrap();
    store
        .advance_batch(batch, Step::Loading { remote_id: "B1" }, "created")
        .await
        .unwrap();
    store
        .fail_batch(
            batch,
            &BatchOutcome::local_error("a.json is bad"),
            "failed",
            &ids[1..],
            "its batch failed because of a.json",
            "batch B1 failed: fix a.json",
        )
        .await
        .unwrap();
    assert_eq!(
        store.batch(batch).await.unwrap().state(),
        BatchState::Failed
    );
    assert_eq!(state_of(&store, ids[0]).await, FileState::Batched);
    let culprit = store.file(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        culprit.reason.as_deref(),
        Some("batch B1 failed: fix a.json")
    );
    let innocent = store.file(ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (innocent.state, innocent.batch_id, innocent.reason),
        (FileState::Ready, None, None)
    );
    assert_eq!(kinds(&store, ids[1]).await.last().unwrap(), "requeued");
    let due: Vec<i64> = store
        .files_to_finalize(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(due, [ids[0]], "the blamed file goes to the failed folder");
}

async fn an_aborted_batch_fails_its_files_and_only_a_batch_in_flight_aborts(store: Store) {
    let (batch, file) = loading_batch(&store, "a.json", "B1").await;
    assert!(store.abort_batch(batch, "by the operator").await.unwrap());
    let row = store.batch(batch).await.unwrap();
    assert_eq!(row.state(), BatchState::Aborted);
    let row = store.file(file).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.reason.as_deref()),
        (FileState::Failed, Some("by the operator"))
    );
    assert!(!store.abort_batch(batch, "twice").await.unwrap());

    let (ended, _) = loading_batch(&store, "b.json", "B2").await;
    store
        .finish_batch(ended, Verdict::Success, &BatchOutcome::default(), "ok")
        .await
        .unwrap();
    assert!(!store.abort_batch(ended, "too late").await.unwrap());
    assert_eq!(
        store.batch(ended).await.unwrap().state(),
        BatchState::Success
    );
}

async fn only_a_successful_batch_is_reverted(store: Store) {
    let (batch, _) = loading_batch(&store, "a.json", "B1").await;
    assert!(!store.mark_reverted(batch, "in flight").await.unwrap());
    store
        .finish_batch(batch, Verdict::Success, &BatchOutcome::default(), "ok")
        .await
        .unwrap();
    assert!(store.mark_reverted(batch, "by the operator").await.unwrap());
    assert_eq!(
        store.batch(batch).await.unwrap().state(),
        BatchState::Reverted
    );
    assert!(!store.mark_reverted(batch, "twice").await.unwrap());
    let events = store.events_for_batch(batch).await.unwrap();
    assert_eq!(
        events.iter().filter(|e| e.kind == "reverted").count(),
        1,
        "{events:?}"
    );
}

async fn a_replaced_batch_names_its_replacement(store: Store) {
    let (batch, _) = loading_batch(&store, "a.json", "OLD").await;
    store
        .finish_batch(batch, Verdict::Success, &BatchOutcome::default(), "ok")
        .await
        .unwrap();
    store.mark_replaced(&["OLD".into()], "NEW").await.unwrap();
    let row = store.batch(batch).await.unwrap();
    assert_eq!(row.replaced_by.as_deref(), Some("NEW"));
    assert_eq!(row.state(), BatchState::Success);
}

async fn a_finished_file_keeps_its_place_and_its_receipts(store: Store) {
    let ids = ready(&store, &[("a.json", 10, None), ("b.json", 11, None)]).await;
    store.fail_file(ids[0], "bad").await.unwrap();
    store
        .set_final_paths(&[(ids[0], "/d/_failed/a.json".into())])
        .await
        .unwrap();
    let asked = ["/d/_failed/a.json".to_owned()];
    assert_eq!(store.promised_among(&asked).await.unwrap(), asked);
    store
        .mark_finalized_many(&[Finalized {
            file_id: ids[0],
            state: FileState::Failed,
            final_path: Some("/d/_failed/a.json".into()),
            detail: "failed; receipt /d/_failed/a.json.receipt.json".into(),
            receipt: Some("/d/_failed/a.json.receipt.json".into()),
        }])
        .await
        .unwrap();
    let row = store.file(ids[0]).await.unwrap().unwrap();
    assert!(row.finalized);
    assert_eq!(row.state, FileState::Failed);
    assert_eq!(row.final_path.as_deref(), Some("/d/_failed/a.json"));
    assert_eq!(
        row.receipt_path.as_deref(),
        Some("/d/_failed/a.json.receipt.json")
    );
    assert!(store.promised_among(&asked).await.unwrap().is_empty());
    assert!(store.files_to_finalize(0, 10).await.unwrap().is_empty());
    assert_eq!(kinds(&store, ids[0]).await.last().unwrap(), "finalized");

    // `push` leaves its files where they are: no place, no receipt.
    store
        .mark_finalized(ids[1], FileState::Done, "push ended")
        .await
        .unwrap();
    let row = store.file(ids[1]).await.unwrap().unwrap();
    assert!(row.finalized);
    assert_eq!(
        (row.state, row.final_path, row.receipt_path),
        (FileState::Done, None, None)
    );
}

async fn a_failed_file_put_back_by_retry_is_superseded_and_only_a_failed_one(store: Store) {
    let ids = ready(&store, &[("a.json", 10, None), ("b.json", 11, None)]).await;
    store.fail_file(ids[0], "bad").await.unwrap();
    store.mark_requeued(ids[0], "retry").await.unwrap();
    assert_eq!(state_of(&store, ids[0]).await, FileState::Superseded);
    assert_eq!(kinds(&store, ids[0]).await.last().unwrap(), "requeued");
    store.mark_requeued(ids[1], "retry").await.unwrap();
    assert_eq!(state_of(&store, ids[1]).await, FileState::Ready);
}

async fn a_transient_failure_is_counted_and_progress_resets_the_count(store: Store) {
    let (batch, _) = loading_batch(&store, "a.json", "B1").await;
    let (attempts, first) = store
        .schedule_retry(batch, "timeout", i64::MAX, true)
        .await
        .unwrap();
    assert_eq!(attempts, 1);
    assert!(store.batch_if_due(batch, 1).await.unwrap().is_none());
    let (attempts, again) = store
        .schedule_retry(batch, "unreachable", 0, false)
        .await
        .unwrap();
    assert_eq!((attempts, again), (1, first), "not reached: not counted");
    let row = store.batch(batch).await.unwrap();
    assert_eq!(row.last_error.as_deref(), Some("unreachable"));
    assert_eq!(row.first_error_at, Some(first));

    store.note_answered(batch).await.unwrap();
    let row = store.batch(batch).await.unwrap();
    assert_eq!((row.attempts, row.first_error_at), (0, Some(first)));
    store
        .schedule_retry(batch, "timeout", 0, true)
        .await
        .unwrap();
    store.note_progress(batch).await.unwrap();
    let row = store.batch(batch).await.unwrap();
    assert_eq!((row.attempts, row.first_error_at), (0, None));

    store.delay_batch(batch, i64::MAX).await.unwrap();
    assert!(store.batches_due(1).await.unwrap().is_empty());
    let row = store.batch(batch).await.unwrap();
    assert_eq!(row.state(), BatchState::Loading, "still in flight");
    let retries = store.events_for_batch(batch).await.unwrap();
    assert_eq!(retries.iter().filter(|e| e.kind == "retry").count(), 3);
}

async fn a_blocked_dataset_holds_its_batches_and_sends_unsent_ones_back(store: Store) {
    let ids = ready(&store, &[("a.json", 10, None)]).await;
    let batch = sealed_batch(&store, &ids).await;
    assert!(store.block_dataset("d", "w", "unknown", 0).await.unwrap());
    assert!(!store.block_dataset("d", "w", "again", 0).await.unwrap());
    assert!(store.batches_due(i64::MAX).await.unwrap().is_empty());
    assert_eq!(store.requeue_unsent_batches("d", "moved").await.unwrap(), 1);
    assert_eq!(
        store.batch(batch).await.unwrap().state(),
        BatchState::Abandoned
    );
    assert_eq!(state_of(&store, ids[0]).await, FileState::Ready);
    assert!(store.unblock_dataset("d").await.unwrap());
    assert!(!store.unblock_dataset("d").await.unwrap());
}

/// SQLite only: the backfill is SQLite's migration text.
#[tokio::test]
async fn files_finished_before_the_receipt_column_get_it_from_their_history() {
    let (_dir, store) = temp_store().await;
    let ids = ready(&store, &[("a.json", 10, None), ("b.json", 11, None)]).await;
    for (id, detail) in [
        (ids[0], "success; receipt /d/_archive/a.json.receipt.json"),
        (ids[1], "push ended: batch B1 success"),
    ] {
        store
            .mark_finalized_many(&[Finalized {
                file_id: id,
                state: FileState::Done,
                final_path: None,
                detail: detail.into(),
                receipt: None,
            }])
            .await
            .unwrap();
    }
    // What an older batchdrop left: no column value, the place in the event's text only.
    let migration = include_str!("../../migrations/0040_receipt_path.sql");
    let backfill = &migration[migration.find("UPDATE files").unwrap()..];
    sqlx::query(backfill)
        .execute(super::testing::sqlite_pool(&store))
        .await
        .unwrap();
    let row = store.file(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        row.receipt_path.as_deref(),
        Some("/d/_archive/a.json.receipt.json")
    );
    let row = store.file(ids[1]).await.unwrap().unwrap();
    assert_eq!(row.receipt_path, None, "no receipt was written for it");
}
