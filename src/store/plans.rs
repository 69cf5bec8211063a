//! Unit tests of SQLite's query plans for the queue's hot questions about unfinished files: the
//! partial indexes of migration 0071 must stay usable for them (the planner matches a partial
//! index only when the query spells its condition the same way, `finalized = FALSE`).
//!
//! This module must not test behaviour (the other test modules do), only plans.

use super::testing::temp_store;

/// The plan's detail lines for `sql` on a fresh store.
async fn plan(sql: &str) -> String {
    let (_dir, store) = temp_store().await;
    let rows: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(super::testing::sqlite_pool(&store))
            .await
            .unwrap();
    rows.into_iter()
        .map(|(_, _, _, detail)| detail)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_oldest_pending_file_is_found_through_its_partial_index() {
    // `Store::oldest_pending_ms`, asked at every /metrics scrape.
    let plan = plan("SELECT MIN(discovered_at) FROM files WHERE finalized = FALSE").await;
    assert!(plan.contains("files_pending_since"), "{plan}");
}

#[tokio::test]
async fn the_archivers_pass_can_walk_the_unfinished_files_only() {
    // `Store::files_to_finalize`, at every pass of the archiver. Which index the planner picks
    // depends on the data; `INDEXED BY` makes it an error ("no query solution") if the partial
    // index cannot serve this spelling of the condition at all.
    let plan = plan(
        "SELECT f.* FROM files f INDEXED BY files_unfinalized
           LEFT JOIN batches b ON b.id = f.batch_id
         WHERE f.finalized = FALSE AND f.id > 0 AND (
               f.state IN ('failed', 'duplicate')
            OR (f.state IN ('batched', 'uploaded') AND b.state IN ('success', 'failed', 'aborted')))
         ORDER BY f.id LIMIT 10",
    )
    .await;
    assert!(plan.contains("files_unfinalized"), "{plan}");
}
