//! How one `UPDATE files` gives each row of a page its own values, on each backend: the
//! queries (`queries.rs`) say which columns and rows, and call the backend's `push_per_row`,
//! which `mod.rs` hands to each compilation of them.
//!
//! - SQLite has no arrays: the rows' values are a `VALUES` list, joined by id (`UPDATE …
//!   FROM`); each row is found by its key and gets its values from the join. (A
//!   `col = CASE id WHEN … THEN … END` per column walks the list for every row: a page of n
//!   rows cost n², a fifth of an `UPDATE` of 200 files with three columns.)
//! - PostgreSQL joins the rows to one array per column, `FROM UNNEST($1::bigint[], …)`: one
//!   statement text whatever the page's size (prepared once), and each row finds its values
//!   by the join too.
//!
//! Both name the values' columns apart from the table's (`v.row_id`, `v.new_col`), so that the
//! query's own conditions (`final_path IS NULL`) and `RETURNING id` stay unambiguous.
//!
//! This module must not hold whole statements: the queries own their other columns and
//! conditions.

/// The rows of a page and the values each gets, one list per column (in the order of the ids).
pub(super) struct PerRow<'a> {
    ids: Vec<i64>,
    columns: Vec<(&'static str, Values<'a>)>,
}

/// One column's values, a value per row.
enum Values<'a> {
    Int(Vec<i64>),
    Text(Vec<Option<&'a str>>),
}

impl<'a> PerRow<'a> {
    /// The rows `ids`, whose columns the calls below add.
    pub(super) fn new(ids: impl Iterator<Item = i64>) -> Self {
        PerRow {
            ids: ids.collect(),
            columns: Vec::new(),
        }
    }

    /// Sets the `BIGINT` column `column` of each row to its value.
    pub(super) fn int(mut self, column: &'static str, values: impl Iterator<Item = i64>) -> Self {
        self.add(column, Values::Int(values.collect()));
        self
    }

    /// Sets the `TEXT` column `column` of each row to its value (`None`: NULL).
    pub(super) fn text(
        mut self,
        column: &'static str,
        values: impl Iterator<Item = Option<&'a str>>,
    ) -> Self {
        self.add(column, Values::Text(values.collect()));
        self
    }

    fn add(&mut self, column: &'static str, values: Values<'a>) {
        let len = match &values {
            Values::Int(v) => v.len(),
            Values::Text(v) => v.len(),
        };
        // A list shorter than the ids would pair the rows with the wrong values.
        assert_eq!(len, self.ids.len(), "one value of {column} per row");
        self.columns.push((column, values));
    }
}

/// SQLite's: appends ` col = v.new_col, … FROM (SELECT column1 AS row_id, column2 AS
/// new_col, … FROM (VALUES (id1, v1, …), …)) AS v WHERE files.id = v.row_id` (SQLite names a
/// `VALUES` list's columns `column1`, `column2`, …).
pub(super) mod sqlite {
    use super::{PerRow, Values};

    pub(in crate::store) fn push_per_row(
        q: &mut sqlx::QueryBuilder<sqlx::Sqlite>,
        rows: &PerRow<'_>,
    ) {
        for (n, (column, _)) in rows.columns.iter().enumerate() {
            q.push(if n == 0 { " " } else { ", " });
            q.push(format_args!("{column} = v.new_{column}"));
        }
        q.push(" FROM (SELECT column1 AS row_id");
        for (n, (column, _)) in rows.columns.iter().enumerate() {
            q.push(format_args!(", column{} AS new_{column}", n + 2));
        }
        q.push(" FROM (VALUES ");
        for (i, id) in rows.ids.iter().enumerate() {
            q.push(if i == 0 { "(" } else { ", (" });
            q.push_bind(*id);
            for (_, values) in &rows.columns {
                q.push(", ");
                match values {
                    Values::Int(v) => q.push_bind(v[i]),
                    Values::Text(v) => q.push_bind(v[i]),
                };
            }
            q.push(")");
        }
        q.push(")) AS v WHERE files.id = v.row_id");
    }
}

/// PostgreSQL's: appends ` col = v.new_col, … FROM UNNEST($i::bigint[], $j::…[], …) AS
/// v(row_id, new_col, …) WHERE files.id = v.row_id`.
pub(super) mod postgres {
    use super::{PerRow, Values};

    pub(in crate::store) fn push_per_row(
        q: &mut sqlx::QueryBuilder<sqlx::Postgres>,
        rows: &PerRow<'_>,
    ) {
        for (n, (column, _)) in rows.columns.iter().enumerate() {
            q.push(if n == 0 { " " } else { ", " });
            q.push(format_args!("{column} = v.new_{column}"));
        }
        q.push(" FROM UNNEST(")
            .push_bind(&rows.ids)
            .push("::bigint[]");
        for (_, values) in &rows.columns {
            q.push(", ");
            match values {
                Values::Int(v) => q.push_bind(v).push("::bigint[]"),
                Values::Text(v) => q.push_bind(v).push("::text[]"),
            };
        }
        q.push(") AS v(row_id");
        for (column, _) in &rows.columns {
            q.push(format_args!(", new_{column}"));
        }
        q.push(") WHERE files.id = v.row_id");
    }
}

/// Each statement that sets values per row, on pages whose rows all get different values, the
/// ids not in order: a value paired with the wrong row shows in that row.
#[cfg(test)]
mod tests {
    use crate::store::testing::{on_both_backends, ready, seal};
    use crate::store::{BatchOutcome, FileState, Finalized, Store, Uploaded, Verdict};

    on_both_backends!(
        each_file_gets_its_own_hash_and_destination,
        a_destination_is_recorded_only_where_none_is_yet,
        each_uploaded_file_gets_its_own_hash_and_size_and_only_a_batched_one,
        a_hash_the_row_holds_is_not_written_again,
        each_finished_file_gets_its_own_state_place_and_receipt_once,
        each_copy_waits_for_and_is_the_duplicate_of_its_own_carrier,
    );

    /// Five ready files without a hash, of distinct sizes; their ids.
    async fn five(store: &Store) -> Vec<i64> {
        let names = ["a", "b", "c", "d", "e"];
        let files: Vec<(&str, i64, Option<&str>)> = names
            .iter()
            .enumerate()
            .map(|(n, name)| (*name, 10 + n as i64, None))
            .collect();
        ready(store, &files).await
    }

    async fn each_file_gets_its_own_hash_and_destination(store: Store) {
        let ids = five(&store).await;
        let backwards: Vec<i64> = ids.iter().rev().copied().collect();
        let shas: Vec<(i64, String)> = backwards
            .iter()
            .map(|id| (*id, format!("sha-{id}")))
            .collect();
        store.set_shas(&shas).await.unwrap();
        let places: Vec<(i64, String)> = backwards
            .iter()
            .map(|id| (*id, format!("/d/_done/{id}")))
            .collect();
        store.set_final_paths(&places).await.unwrap();
        for id in &ids {
            let row = store.file(*id).await.unwrap().unwrap();
            assert_eq!(row.sha256, Some(format!("sha-{id}")), "file {id}");
            assert_eq!(row.final_path, Some(format!("/d/_done/{id}")), "file {id}");
            assert_eq!(row.state, FileState::Ready, "file {id}");
        }
    }

    async fn a_destination_is_recorded_only_where_none_is_yet(store: Store) {
        let ids = five(&store).await;
        let first: Vec<(i64, String)> = ids[..2]
            .iter()
            .map(|id| (*id, format!("/first/{id}")))
            .collect();
        store.set_final_paths(&first).await.unwrap();
        let second: Vec<(i64, String)> = ids
            .iter()
            .rev()
            .map(|id| (*id, format!("/second/{id}")))
            .collect();
        let mut recorded = store.record_final_paths(&second).await.unwrap();
        recorded.sort();
        let expected: Vec<(i64, String)> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                (
                    *id,
                    format!("/{}/{id}", if n < 2 { "first" } else { "second" }),
                )
            })
            .collect();
        assert_eq!(recorded, expected);
        for (id, place) in &expected {
            let row = store.file(*id).await.unwrap().unwrap();
            assert_eq!(row.final_path.as_ref(), Some(place), "file {id}");
        }
    }

    async fn each_uploaded_file_gets_its_own_hash_and_size_and_only_a_batched_one(store: Store) {
        let ids = five(&store).await;
        let sealed = seal(&store, &ids).await;
        assert_eq!(sealed.files, ids);
        store.fail_file(ids[2], "unreadable").await.unwrap();
        let done: Vec<Uploaded> = ids
            .iter()
            .rev()
            .map(|id| Uploaded {
                file_id: *id,
                sha256: Some(format!("sha-{id}")),
                size: 100 + id,
                hash_stored: false,
            })
            .collect();
        store.mark_uploaded_many(&done).await.unwrap();
        for (n, id) in ids.iter().enumerate() {
            let row = store.file(*id).await.unwrap().unwrap();
            if n == 2 {
                assert_eq!(row.state, FileState::Failed);
                assert_eq!((row.sha256, row.uploaded_bytes), (None, 0), "file {id}");
            } else {
                assert_eq!(row.state, FileState::Uploaded, "file {id}");
                assert_eq!(row.sha256, Some(format!("sha-{id}")), "file {id}");
                assert_eq!(row.uploaded_bytes, 100 + id, "file {id}");
            }
        }
    }

    async fn a_hash_the_row_holds_is_not_written_again(store: Store) {
        // Every other file was hashed before sealing; one page mixes both kinds of facts.
        let ids = five(&store).await;
        let hashed: Vec<(i64, String)> = ids
            .iter()
            .step_by(2)
            .map(|id| (*id, format!("batcher-{id}")))
            .collect();
        store.set_shas(&hashed).await.unwrap();
        let mut sealed = seal(&store, &ids).await.files;
        sealed.sort();
        assert_eq!(sealed, ids);
        let done: Vec<Uploaded> = ids
            .iter()
            .enumerate()
            .rev()
            .map(|(n, id)| Uploaded {
                file_id: *id,
                // A fact that says its hash is stored is not written: were it written, this
                // different text would show in the row.
                sha256: Some(format!("uploader-{id}")),
                size: 100 + id,
                hash_stored: n % 2 == 0,
            })
            .collect();
        store.mark_uploaded_many(&done).await.unwrap();
        for (n, id) in ids.iter().enumerate() {
            let row = store.file(*id).await.unwrap().unwrap();
            assert_eq!(row.state, FileState::Uploaded, "file {id}");
            assert_eq!(row.uploaded_bytes, 100 + id, "file {id}");
            let who = if n % 2 == 0 { "batcher" } else { "uploader" };
            assert_eq!(row.sha256, Some(format!("{who}-{id}")), "file {id}");
        }
    }

    async fn each_finished_file_gets_its_own_state_place_and_receipt_once(store: Store) {
        let ids = five(&store).await;
        let finished = |id: i64, n: usize, tag: &str| Finalized {
            file_id: id,
            state: [FileState::Done, FileState::Failed, FileState::Duplicate][n % 3],
            // Every other file has no place (left where it is) and no receipt.
            final_path: n.is_multiple_of(2).then(|| format!("/{tag}/{id}")),
            detail: format!("{tag} {id}"),
            receipt: n
                .is_multiple_of(2)
                .then(|| format!("/{tag}/{id}.receipt.json")),
        };
        store
            .mark_finalized_many(&[finished(ids[4], 4, "early")])
            .await
            .unwrap();
        let done: Vec<Finalized> = ids
            .iter()
            .enumerate()
            .rev()
            .map(|(n, id)| finished(*id, n, "late"))
            .collect();
        store.mark_finalized_many(&done).await.unwrap();
        for (n, id) in ids.iter().enumerate() {
            let row = store.file(*id).await.unwrap().unwrap();
            let tag = if n == 4 { "early" } else { "late" };
            let want = finished(*id, n, tag);
            assert!(row.finalized, "file {id}");
            assert_eq!(row.state, want.state, "file {id}");
            assert_eq!(row.final_path, want.final_path, "file {id}");
            assert_eq!(row.receipt_path, want.receipt, "file {id}");
            let events = store.events_for_file(*id).await.unwrap();
            let finals: Vec<&str> = events
                .iter()
                .filter(|e| e.kind == "finalized")
                .filter_map(|e| e.detail.as_deref())
                .collect();
            assert_eq!(finals, [want.detail.as_str()], "file {id}");
        }
    }

    async fn each_copy_waits_for_and_is_the_duplicate_of_its_own_carrier(store: Store) {
        let carriers = ready(&store, &[("a", 5, Some("X")), ("b", 6, Some("Y"))]).await;
        let first = seal(&store, &carriers).await;
        assert_eq!(first.files, carriers);
        // The copies in the other order: the copy of b first.
        let copies = ready(&store, &[("b2", 6, Some("Y")), ("a2", 5, Some("X"))]).await;
        let waits = seal(&store, &copies).await;
        assert_eq!(waits.batch_id, None);
        for (copy, carrier) in copies.iter().zip(carriers.iter().rev()) {
            let row = store.file(*copy).await.unwrap().unwrap();
            assert_eq!(row.waits_for, Some(*carrier), "copy {copy}");
        }

        let batch = first.batch_id.unwrap();
        store
            .finish_batch(batch, Verdict::Success, &BatchOutcome::default(), "ok")
            .await
            .unwrap();
        assert_eq!(store.release_waiting().await.unwrap(), 2);
        let duplicates = seal(&store, &copies).await;
        assert_eq!(duplicates.duplicates.len(), 2);
        for (copy, carrier) in copies.iter().zip(carriers.iter().rev()) {
            let row = store.file(*copy).await.unwrap().unwrap();
            assert_eq!(
                (row.state, row.duplicate_of, row.waits_for),
                (FileState::Duplicate, Some(*carrier), None),
                "copy {copy}"
            );
        }
    }
}
