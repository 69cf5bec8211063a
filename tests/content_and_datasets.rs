//! One copy of any content per dataset (issue #26) and watches whose dataset the platform
//! does not know (issue #25), end to end against the real emulator: what the platform holds is
//! read back over its Catalog and Data Access APIs, what the operator sees from receipts,
//! `/readyz` and `batchdrop status`.

mod support;

use batchdrop::api::{BatchQuery, BatchStatus};
use batchdrop::emulator::{EmulatorConfig, FaultConfig};
use support::*;

/// The successful batches of the dataset, as the Catalog lists them, with the records Data
/// Access holds for each.
async fn successful_batches(env: &Env) -> Vec<(String, u64)> {
    let batches = env
        .api
        .find_batches(&BatchQuery {
            dataset_id: Some(DATASET.into()),
            status: Some(BatchStatus::Success),
            limit: Some(100),
            ..BatchQuery::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let records = records_in_batch(&env.api, &b.id).await;
        out.push((b.id, records));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_files_dropped_together_are_ingested_once_and_the_rest_name_that_batch() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("", ""));
    let content = jsonl(0, 2);
    let names: Vec<String> = (0..5).map(|i| format!("copy-{i}.json")).collect();
    for name in &names {
        write_atomic(&env.drop_dir().join(name), content.as_bytes());
    }
    let receipts = wait_receipts(&env.archive(), names.len(), 60).await;
    daemon.stop().await;

    let ingested = successful_batches(&env).await;
    assert_eq!(
        ingested.len(),
        1,
        "the content is in exactly one successful batch: {ingested:?}"
    );
    let (batch, records) = &ingested[0];
    assert_eq!(*records, 2, "its two records, once");
    let success: Vec<_> = receipts.iter().filter(|r| r["status"] == "success").collect();
    assert_eq!(success.len(), 1, "{receipts:#?}");
    assert_eq!(success[0]["batch"], batch.as_str());
    assert_eq!(success[0]["file_records"], 2, "{}", success[0]);
    let dups: Vec<_> = receipts
        .iter()
        .filter(|r| r["status"] == "duplicate")
        .collect();
    assert_eq!(dups.len(), names.len() - 1, "{receipts:#?}");
    for d in dups {
        assert_eq!(d["duplicate_of"]["batch"], batch.as_str(), "{d}");
        assert_eq!(d["duplicate_of"]["file"], success[0]["file"], "{d}");
        assert!(d["batch"].is_null(), "a duplicate is in no batch: {d}");
    }
    assert!(
        support::receipts(&env.failed()).is_empty(),
        "nothing in the failed folder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_first_copy_fails_a_later_copy_is_ingested_after_all() {
    // The first batch processed fails whatever it holds: the one with the first copy.
    let env = Env::with_emulator(EmulatorConfig {
        faults: FaultConfig {
            fail_first_batches: 1,
            ..FaultConfig::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let daemon = Daemon::start(env.config("", ""));
    let content = jsonl(10, 2);
    for i in 0..3 {
        write_atomic(
            &env.drop_dir().join(format!("copy-{i}.json")),
            content.as_bytes(),
        );
    }
    let failed = wait_receipts(&env.failed(), 1, 60).await;
    let archived = wait_receipts(&env.archive(), 2, 60).await;
    daemon.stop().await;

    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["status"], "failed", "{}", failed[0]);
    let ingested = successful_batches(&env).await;
    assert_eq!(ingested.len(), 1, "{ingested:?}");
    let (batch, records) = &ingested[0];
    assert_eq!(*records, 2);
    assert_ne!(
        failed[0]["batch"],
        batch.as_str(),
        "the failed copy's batch is not the one that ingested the content"
    );
    let success: Vec<_> = archived.iter().filter(|r| r["status"] == "success").collect();
    assert_eq!(success.len(), 1, "{archived:#?}");
    assert_eq!(success[0]["batch"], batch.as_str());
    assert_ne!(success[0]["file"], failed[0]["file"]);
    let dup = archived
        .iter()
        .find(|r| r["status"] == "duplicate")
        .expect("the third copy is a duplicate");
    assert_eq!(dup["duplicate_of"]["batch"], batch.as_str(), "{dup}");
}
