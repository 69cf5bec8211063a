//! Unit tests of SQLite's query plans for the queue's hot questions about unfinished files: the
//! partial indexes of migrations 0021 and 0180 must stay usable for them (the planner matches a
//! partial index only when the query spells its condition the same way, `finalized = FALSE`),
//! and a statement about a list of files must look them up by id, whatever their state.
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
async fn the_archivers_pass_reads_only_files_whose_fate_is_known() {
    // `Store::files_to_finalize`, at every page of the archiver's pass: both halves go through
    // the partial index by state (the second per terminal batch), never through an index that
    // holds the ready files or the batches' finished ones.
    let plan = plan(
        "SELECT * FROM (
            SELECT f.* FROM files f
             WHERE f.finalized = FALSE AND f.state IN ('failed', 'duplicate') AND f.id > 0
            UNION ALL
            SELECT f.* FROM batches b CROSS JOIN files f
             WHERE b.state IN ('success', 'failed', 'aborted') AND f.batch_id = b.id
               AND f.finalized = FALSE AND f.state IN ('batched', 'uploaded') AND f.id > 0
         ) AS due ORDER BY id LIMIT 200",
    )
    .await;
    assert_eq!(
        plan.matches("files_unfinished_by_state").count(),
        2,
        "{plan}"
    );
    assert!(
        plan.contains("files_unfinished_by_state (state=? AND batch_id=?"),
        "{plan}"
    );
    assert!(!plan.contains("SCAN f"), "{plan}");
}

#[tokio::test]
async fn names_asked_about_are_looked_up_in_the_promised_destinations() {
    // `Store::promised_among`, at every page of the archiver's pass.
    let plan =
        plan("SELECT final_path FROM files WHERE finalized = FALSE AND final_path IN ('/a', '/b')")
            .await;
    assert!(
        plan.contains("files_pending_destinations (final_path=?)"),
        "{plan}"
    );
}

#[tokio::test]
async fn listed_files_are_looked_up_by_id_whatever_their_state() {
    // The batcher's and the uploader's statements about a list of files (`row_state!`): with
    // `state = 'ready'` the planner walks every ready file in `files_state` instead.
    for sql in [
        concat!(
            "SELECT id, rel_path, size, sha256, replay_json FROM files WHERE ",
            row_state!(),
            " = 'ready' AND id IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)"
        ),
        concat!(
            "UPDATE files SET state = 'uploaded', updated_at = 1 WHERE ",
            row_state!(),
            " = 'batched' AND id IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)"
        ),
    ] {
        let plan = plan(sql).await;
        assert!(plan.contains("INTEGER PRIMARY KEY"), "{sql}\n{plan}");
        assert!(!plan.contains("files_state"), "{sql}\n{plan}");
    }
}

#[tokio::test]
async fn a_page_of_rows_with_their_own_values_is_looked_up_by_id() {
    // `per_row.rs`: every row of the page found by its key from the joined values, whatever
    // the statement adds after them (the conditions its callers add), never a walk of
    // `files` or of a partial index that holds every unfinished file.
    use super::per_row::{PerRow, sqlite::push_per_row};
    for condition in [
        "",
        " AND files.sha256 IS NULL",
        concat!(" AND ", row_state!(), " = 'ready'"),
        concat!(" AND ", row_state!(), " = 'batched'"),
        " AND final_path IS NULL",
        " AND finalized = FALSE RETURNING id",
    ] {
        let ids = 1..=12;
        let rows = PerRow::new(ids.clone())
            .text("final_path", ids.clone().map(|_| Some("p")))
            .int("records", ids.clone());
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE files SET updated_at = 1,");
        push_per_row(&mut q, &rows);
        q.push(condition);
        let plan = plan(q.sql().as_str()).await;
        // By the key itself, or by the key in the partial index of unfinished files (that
        // index's entries carry it) when the condition is that index's.
        let lookups = plan
            .lines()
            .filter(|line| line.contains("files"))
            .all(|line| {
                line.starts_with("SEARCH files")
                    && (line.contains("INTEGER PRIMARY KEY") || line.contains("(id=? AND rowid=?)"))
            });
        assert!(lookups, "{condition}\n{plan}");
        assert!(plan.contains("SEARCH files"), "{condition}\n{plan}");
        assert!(!plan.contains("SCAN files"), "{condition}\n{plan}");
    }
}
