//! Ready files → sealed batches, and the rule that keeps one copy of any content per dataset
//! (`content_claims`, `files.waits_for`: see migration 0030). The rule lives here, in the
//! transaction that seals, so that it holds for every writer of the database.

use sqlx::FromRow;

use super::events::{Event, Kind, insert_event, insert_events};
use super::values::IN_FLIGHT;
use super::{
    Carried, Conn, Dedupe, FileRow, LeftOut, NewBatch, PerRow, QueryBuilder, Sealed, Store,
    StoreError, fetch_page, now_ms, push_binds, push_ids, push_per_row,
};

impl Store {
    /// The oldest `limit` files of a watch waiting to be batched (not those waiting for another
    /// file's outcome: see [`Sealed::waiting`]).
    pub async fn ready_files(&self, watch: &str, limit: i64) -> Result<Vec<FileRow>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT * FROM files WHERE watch = $1 AND state = 'ready' AND waits_for IS NULL
             ORDER BY id LIMIT $2",
        )
        .bind(watch)
        .bind(limit)
        .fetch(&self.pool);
        fetch_page(rows, limit.max(0) as usize).await
    }

    /// Whether a file of this size was ingested (or is on its way) into the dataset: only then
    /// is it worth hashing a file before its upload to find duplicates.
    pub async fn size_seen(
        &self,
        dataset: &str,
        size: i64,
        except: i64,
    ) -> Result<bool, StoreError> {
        // EXISTS, not COUNT: files of a common size are many, and one is enough.
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM files WHERE dataset = $1 AND size = $2 AND id != $3
               AND state IN ('ready', 'batched', 'uploaded', 'done'))",
        )
        .bind(dataset)
        .bind(size)
        .bind(except)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records the hashes of several files in one transaction.
    pub async fn set_shas(&self, shas: &[(i64, String)]) -> Result<(), StoreError> {
        self.write_shas(shas, "").await
    }

    /// Records the hashes of several files whose content is not known yet; a file whose
    /// hash was recorded meanwhile (its upload hashes what it sends) keeps that one.
    pub async fn set_unknown_shas(&self, shas: &[(i64, String)]) -> Result<(), StoreError> {
        self.write_shas(shas, " AND files.sha256 IS NULL").await
    }

    /// `shas` in one transaction, on the rows that also meet `condition` (SQL after the rows'
    /// own `WHERE`, see `per_row.rs`).
    async fn write_shas(
        &self,
        shas: &[(i64, String)],
        condition: &'static str,
    ) -> Result<(), StoreError> {
        if shas.is_empty() {
            return Ok(());
        }
        // One statement per few hundred files: a statement is a round trip to SQLite's thread.
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for part in shas.chunks(400) {
            let rows = PerRow::new(part.iter().map(|(id, _)| *id))
                .text("sha256", part.iter().map(|(_, sha)| Some(sha.as_str())));
            let mut q = QueryBuilder::new("UPDATE files SET updated_at = ");
            q.push_bind(now).push(",");
            push_per_row(&mut q, &rows);
            q.push(condition);
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many batches of `watch` were sealed since `since` (unix ms), and when the first
    /// and the last of them were: the daily batch budget's bookkeeping.
    pub async fn batches_sealed_since(
        &self,
        watch: &str,
        since: i64,
    ) -> Result<crate::schedule::Sealed, StoreError> {
        let (count, first_ms, last_ms) = sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at), MAX(created_at) FROM batches
              WHERE watch = $1 AND created_at >= $2",
        )
        .bind(watch)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(crate::schedule::Sealed {
            count,
            first_ms,
            last_ms,
        })
    }

    /// Records that these files' records passed the local check against the dataset's schema.
    pub async fn mark_validated(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for part in ids.chunks(400) {
            let mut q = QueryBuilder::new("UPDATE files SET validated = 1 WHERE id IN (");
            push_ids(&mut q, part.iter().copied());
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether a file's records passed the local check (see [`Store::mark_validated`]).
    pub async fn validated(&self, id: i64) -> Result<bool, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT validated FROM files WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v == Some(1))
    }

    /// Lets waiting files go back to the batcher once their reason to wait is over: the file
    /// they wait for left flight (its batch ended, or it failed or changed), or its content,
    /// once known, differs from theirs. Returns how many went back.
    pub async fn release_waiting(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query(concat!(
            "UPDATE files SET waits_for = NULL WHERE waits_for IS NOT NULL AND (state != 'ready'
               OR NOT EXISTS (SELECT 1 FROM files h LEFT JOIN batches b ON b.id = h.batch_id
                 WHERE h.id = files.waits_for
                   AND (h.state = 'ready' OR (h.state IN ('batched', 'uploaded') AND b.state IN
                        ",
            in_flight!(),
            "))
                   AND (h.sha256 IS NULL OR h.sha256 = files.sha256)))"
        ))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// How `dataset` holds each of `contents` (SHA-256, size), as this state knows it, read
    /// only: for a push beside the daemon (see `cli::push`). A content absent from the answer
    /// is carried by none of this state's files.
    pub async fn carried(
        &self,
        dataset: &str,
        contents: &[(String, i64)],
    ) -> Result<std::collections::HashMap<String, Carried>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let shas: Vec<&str> = contents.iter().map(|(sha, _)| sha.as_str()).collect();
        let sizes: Vec<i64> = contents.iter().map(|(_, size)| *size).collect();
        let (carriers, _) = carriers_of(&mut conn, dataset, &shas).await?;
        let unknown = unknown_by_size(&mut conn, dataset, &sizes).await?;
        let mut out = std::collections::HashMap::new();
        for (sha, size) in contents {
            let Some(c) = carriers.get(sha).or_else(|| unknown.get(size)) else {
                continue;
            };
            let batch: Option<String> = if c.ingested {
                sqlx::query_scalar(
                    "SELECT b.remote_id FROM files f JOIN batches b ON b.id = f.batch_id WHERE f.id = $1",
                )
                .bind(c.id)
                .fetch_optional(&mut *conn)
                .await?
                .flatten()
            } else {
                None
            };
            out.insert(
                sha.clone(),
                Carried {
                    file: c.rel_path.clone(),
                    ingested: c.ingested,
                    batch,
                },
            );
        }
        Ok(out)
    }

    /// Takes a ready file out as a duplicate of content that another state (the daemon's,
    /// for a push) says is in the dataset; `reason` says where.
    pub async fn mark_duplicate_elsewhere(
        &self,
        file_id: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE files SET state = 'duplicate', reason = $1, updated_at = $2 WHERE id = $3 AND state = 'ready'",
        )
        .bind(reason)
        .bind(now)
        .bind(file_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            insert_event(&mut *tx, now, Event::file(file_id, Kind::Duplicate, reason)).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Seals a batch: the batch row and its files' assignment are one transaction, so a file is
    /// never in two batches and never in none. With [`Dedupe::OneCopy`] the same transaction
    /// keeps a second copy of any content out of the dataset (see [`Sealed`] for what happens
    /// to the files left out); a batch is created only when a file remains for it.
    pub async fn seal_batch(
        &self,
        batch: &NewBatch<'_>,
        file_ids: &[i64],
        dedupe: Dedupe,
    ) -> Result<Sealed, StoreError> {
        let dataset = batch.dataset;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let mut sealed = Sealed::default();
        let ids = match dedupe {
            Dedupe::AllowDuplicates => file_ids.to_vec(),
            Dedupe::OneCopy => one_copy_in(&mut tx, dataset, file_ids, now, &mut sealed).await?,
        };
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(sealed);
        }
        let external_id = uuid::Uuid::now_v7().to_string();
        let batch_id: i64 = sqlx::query_scalar(
            "INSERT INTO batches (external_id, watch, dataset, sandbox, format, multiline_json,
               replay_json, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'sealed', $8, $9) RETURNING id",
        )
        .bind(&external_id)
        .bind(batch.watch)
        .bind(dataset)
        .bind(batch.sandbox)
        .bind(batch.format)
        .bind(batch.multiline_json)
        .bind(batch.replay)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        // A statement per few hundred files, not per file (each is a round trip to SQLite).
        // The files take the batch's dataset: a reload may have pointed their watch elsewhere
        // since they were queued, and their receipts must name where they went.
        for part in ids.chunks(500) {
            let mut q = QueryBuilder::new("UPDATE files SET state = 'batched', batch_id = ");
            q.push_bind(batch_id)
                .push(", dataset = ")
                .push_bind(dataset)
                .push(", uploaded_bytes = 0, sent = FALSE, updated_at = ")
                .push_bind(now)
                .push(concat!(" WHERE ", row_state!(), " = 'ready' AND id IN ("));
            push_ids(&mut q, part.iter().copied());
            q.build().execute(&mut *tx).await?;
        }
        let detail = format!("{} files, externalId {external_id}", ids.len());
        insert_event(&mut *tx, now, Event::batch(batch_id, Kind::Sealed, &detail)).await?;
        tx.commit().await?;
        sealed.batch_id = Some(batch_id);
        sealed.files = ids;
        Ok(sealed)
    }

    /// Bytes of the files in batches sealed but not finished.
    pub async fn inflight_bytes(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT CAST(COALESCE(SUM(f.size), 0) AS BIGINT) FROM files f JOIN batches b ON b.id = f.batch_id
             WHERE b.state IN ",
            in_flight!(),
            "
               AND f.state IN ('batched', 'uploaded')"
        ))
        .fetch_one(&self.pool)
        .await?)
    }
}

/// A file `f` whose batch `b` carries its content into the dataset: in flight, or successful
/// and neither replaced nor reverted (content of those is no longer in the dataset).
const CARRIES: &str = concat!("((f.state IN ('batched', 'uploaded')
      AND b.state IN ", in_flight!(), ")
   OR (f.state IN ('batched', 'uploaded', 'done') AND b.state = 'success' AND b.replaced_by IS NULL))");

/// A file that carries some content into a dataset: on its way (ready to travel again, or in
/// a batch in flight), or ingested (in a successful batch not replaced nor reverted).
#[derive(Debug, Clone)]
struct Carrier {
    id: i64,
    rel_path: String,
    ingested: bool,
}

/// A file being sealed under [`Dedupe::OneCopy`].
#[derive(Debug, FromRow)]
struct Candidate {
    id: i64,
    rel_path: String,
    size: i64,
    sha256: Option<String>,
    replay_json: Option<String>,
}

/// Files of `dataset` in flight whose content is not known yet, by size (the first of each):
/// a file of one of these sizes cannot be told apart from them yet.
async fn unknown_by_size(
    conn: &mut Conn,
    dataset: &str,
    sizes: &[i64],
) -> Result<std::collections::HashMap<i64, Carrier>, StoreError> {
    use std::collections::HashMap;
    let mut unknown: HashMap<i64, Carrier> = HashMap::new();
    for part in sizes.chunks(400) {
        let mut q = QueryBuilder::new(
            "SELECT f.size, f.id, f.rel_path FROM files f JOIN batches b ON b.id = f.batch_id
             WHERE f.dataset = ",
        );
        q.push_bind(dataset)
            .push(" AND f.sha256 IS NULL AND f.state IN ('batched', 'uploaded') AND b.state IN ")
            .push(IN_FLIGHT)
            .push(" AND f.size IN (");
        push_binds(&mut q, part.iter().copied());
        q.push(" ORDER BY f.id");
        let rows: Vec<(i64, i64, String)> = q.build_query_as().fetch_all(&mut *conn).await?;
        for (size, id, rel_path) in rows {
            unknown.entry(size).or_insert(Carrier {
                id,
                rel_path,
                ingested: false,
            });
        }
    }
    Ok(unknown)
}

/// Who carries each of `shas` into `dataset` now: the claim's holder while it is alive (ready
/// to travel again, in a batch in flight, or ingested), else any file ingested or on its way
/// with that content. Also returns the claims to record for the latter.
#[allow(clippy::type_complexity)]
async fn carriers_of(
    conn: &mut Conn,
    dataset: &str,
    shas: &[&str],
) -> Result<
    (
        std::collections::HashMap<String, Carrier>,
        Vec<(String, i64)>,
    ),
    StoreError,
> {
    use std::collections::HashMap;
    let mut carriers: HashMap<String, Carrier> = HashMap::new();
    let mut claims: Vec<(String, i64)> = Vec::new();
    for part in shas.chunks(400) {
        let mut q = QueryBuilder::new(
            "SELECT c.sha256, f.id, f.rel_path, b.state = 'success' FROM content_claims c
               JOIN files f ON f.id = c.file_id LEFT JOIN batches b ON b.id = f.batch_id
             WHERE c.dataset = ",
        );
        // A claim's holder waiting to travel again (its batch was given up) still carries it.
        q.push_bind(dataset)
            .push(" AND f.sha256 = c.sha256 AND (f.state = 'ready' OR ")
            .push(CARRIES)
            .push(") AND c.sha256 IN (");
        push_binds(&mut q, part.iter().copied());
        let rows: Vec<(String, i64, String, Option<bool>)> =
            q.build_query_as().fetch_all(&mut *conn).await?;
        for (sha, id, rel_path, ingested) in rows {
            let ingested = ingested.unwrap_or(false);
            carriers.insert(
                sha,
                Carrier {
                    id,
                    rel_path,
                    ingested,
                },
            );
        }
    }
    let unclaimed: Vec<&str> = shas
        .iter()
        .copied()
        .filter(|sha| !carriers.contains_key(*sha))
        .collect();
    for part in unclaimed.chunks(400) {
        let mut q = QueryBuilder::new(
            "SELECT f.sha256, f.id, f.rel_path, b.state = 'success' AS ingested
             FROM files f JOIN batches b ON b.id = f.batch_id WHERE f.dataset = ",
        );
        q.push_bind(dataset)
            .push(" AND ")
            .push(CARRIES)
            .push(" AND f.sha256 IN (");
        push_binds(&mut q, part.iter().copied());
        // An ingested carrier first: it settles the question at once.
        q.push(" ORDER BY ingested DESC, f.id");
        let rows: Vec<(String, i64, String, bool)> =
            q.build_query_as().fetch_all(&mut *conn).await?;
        for (sha, id, rel_path, ingested) in rows {
            if let std::collections::hash_map::Entry::Vacant(e) = carriers.entry(sha) {
                claims.push((e.key().clone(), id));
                e.insert(Carrier {
                    id,
                    rel_path,
                    ingested,
                });
            }
        }
    }
    Ok((carriers, claims))
}

/// The [`Dedupe::OneCopy`] rule of [`Store::seal_batch`], inside its transaction: of the ready
/// files `ids`, returns those that may be sealed, and records what becomes of the others in
/// `out` (and in the store). A file may be sealed when
/// - it is a replay (the same content again is its point), or
/// - its content is not known and no other file of the dataset has its size (a file that
///   does must be hashed first), or
/// - its content is known and nobody else carries it into the dataset: it then takes the
///   claim on (dataset, content). A carrier that is ingested makes it a duplicate of that
///   carrier; one on its way makes it wait for that carrier's outcome; so does a file in
///   flight of its size whose content is not known yet.
///
/// The claim row (the primary key of `content_claims`) is what makes a second carrier
/// impossible for any writer; carriers found without one (older rows, replays, files of
/// watches that allow duplicates) are given it here.
async fn one_copy_in(
    conn: &mut Conn,
    dataset: &str,
    ids: &[i64],
    now: i64,
    out: &mut Sealed,
) -> Result<Vec<i64>, StoreError> {
    use std::collections::{HashMap, HashSet};
    let mut candidates: Vec<Candidate> = Vec::new();
    for part in ids.chunks(400) {
        let mut q = QueryBuilder::new(concat!(
            "SELECT id, rel_path, size, sha256, replay_json FROM files
             WHERE ",
            row_state!(),
            " = 'ready' AND id IN ("
        ));
        push_ids(&mut q, part.iter().copied());
        candidates.extend(
            q.build_query_as::<Candidate>()
                .fetch_all(&mut *conn)
                .await?,
        );
    }
    candidates.sort_by_key(|c| c.id);
    let mut sealable = Vec::new();
    let (mut hashed, mut unhashed) = (Vec::new(), Vec::new());
    for c in candidates {
        match (&c.replay_json, &c.sha256) {
            (Some(_), _) => sealable.push(c.id),
            (None, Some(_)) => hashed.push(c),
            (None, None) => unhashed.push(c),
        }
    }

    // Content not known: only a file alone with its size in the dataset goes as it is.
    if !unhashed.is_empty() {
        let mut here: HashMap<i64, usize> = HashMap::new();
        for c in &unhashed {
            *here.entry(c.size).or_default() += 1;
        }
        let sizes: Vec<i64> = here.keys().copied().collect();
        let mut known: HashMap<i64, (i64, i64)> = HashMap::new();
        for part in sizes.chunks(400) {
            let mut q =
                QueryBuilder::new("SELECT size, MIN(id), MAX(id) FROM files WHERE dataset = ");
            q.push_bind(dataset)
                .push(" AND state IN ('ready', 'batched', 'uploaded', 'done') AND size IN (");
            push_binds(&mut q, part.iter().copied());
            q.push(" GROUP BY size");
            let rows: Vec<(i64, i64, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
            known.extend(rows.into_iter().map(|(size, lo, hi)| (size, (lo, hi))));
        }
        for c in unhashed {
            let alone = here[&c.size] == 1
                && known
                    .get(&c.size)
                    .is_none_or(|&(lo, hi)| lo == c.id && hi == c.id);
            if alone {
                sealable.push(c.id);
            } else {
                out.to_hash.push(c.id);
            }
        }
    }
    if hashed.is_empty() {
        return Ok(sealable);
    }

    let sizes: Vec<i64> = hashed
        .iter()
        .map(|c| c.size)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let unknown = unknown_by_size(conn, dataset, &sizes).await?;
    let shas: Vec<&str> = hashed
        .iter()
        .filter_map(|c| c.sha256.as_deref())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (mut carriers, mut claims) = carriers_of(conn, dataset, &shas).await?;

    let mut duplicates: Vec<(i64, Carrier)> = Vec::new();
    let mut waiting: Vec<(i64, Carrier, &'static str)> = Vec::new();
    for c in hashed {
        let sha = c.sha256.clone().expect("hashed");
        match carriers.get(&sha) {
            Some(h) if h.id == c.id => sealable.push(c.id),
            Some(h) if h.ingested => duplicates.push((c.id, h.clone())),
            _ if unknown.contains_key(&c.size) => waiting.push((
                c.id,
                unknown[&c.size].clone(),
                "same size, content not known yet",
            )),
            Some(h) => waiting.push((c.id, h.clone(), "same content")),
            None => {
                sealable.push(c.id);
                claims.push((sha.clone(), c.id));
                carriers.insert(
                    sha,
                    Carrier {
                        id: c.id,
                        rel_path: c.rel_path,
                        ingested: false,
                    },
                );
            }
        }
    }
    for part in claims.chunks(300) {
        let mut q = QueryBuilder::new("INSERT INTO content_claims (dataset, sha256, file_id) ");
        q.push_values(part, |mut row, (sha, id)| {
            row.push_bind(dataset).push_bind(sha).push_bind(*id);
        });
        q.push(" ON CONFLICT (dataset, sha256) DO UPDATE SET file_id = excluded.file_id");
        q.build().execute(&mut *conn).await?;
    }
    for part in duplicates.chunks(200) {
        let mut q = QueryBuilder::new(
            "UPDATE files SET state = 'duplicate', waits_for = NULL, updated_at = ",
        );
        q.push_bind(now).push(",");
        let rows = PerRow::new(part.iter().map(|(id, _)| *id))
            .int("duplicate_of", part.iter().map(|(_, h)| h.id));
        push_per_row(&mut q, &rows);
        q.push(concat!(" AND ", row_state!(), " = 'ready'"));
        q.build().execute(&mut *conn).await?;
        let details: Vec<(i64, String)> = part
            .iter()
            .map(|(id, h)| (*id, format!("same content as {}", h.rel_path)))
            .collect();
        let events = details
            .iter()
            .map(|(id, detail)| Event::file(*id, Kind::Duplicate, detail))
            .collect::<Vec<_>>();
        insert_events(&mut *conn, now, &events).await?;
    }
    for part in waiting.chunks(200) {
        let mut q = QueryBuilder::new("UPDATE files SET updated_at = ");
        q.push_bind(now).push(",");
        let rows = PerRow::new(part.iter().map(|(id, _, _)| *id))
            .int("waits_for", part.iter().map(|(_, h, _)| h.id));
        push_per_row(&mut q, &rows);
        q.push(concat!(" AND ", row_state!(), " = 'ready'"));
        q.build().execute(&mut *conn).await?;
        let details: Vec<(i64, String)> = part
            .iter()
            .map(|(id, h, why)| {
                (
                    *id,
                    format!("waits for the outcome of {} ({why})", h.rel_path),
                )
            })
            .collect();
        let events = details
            .iter()
            .map(|(id, detail)| Event::file(*id, Kind::Waiting, detail))
            .collect::<Vec<_>>();
        insert_events(&mut *conn, now, &events).await?;
    }
    let left_out = |id: i64, h: Carrier| LeftOut {
        file: id,
        carrier: h.id,
        carrier_path: h.rel_path,
    };
    out.duplicates = duplicates
        .into_iter()
        .map(|(id, h)| left_out(id, h))
        .collect();
    out.waiting = waiting
        .into_iter()
        .map(|(id, h, _)| left_out(id, h))
        .collect();
    Ok(sealable)
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::testing::{on_both_backends, ready, seal};
    use crate::store::{BatchOutcome, FileState, Uploaded, Verdict};

    on_both_backends!(
        a_page_of_ready_files_is_the_oldest_and_holds_no_room_beyond_its_limit,
        one_copy_per_content_waits_for_the_first_and_follows_its_outcome,
        a_file_of_the_size_of_one_in_flight_with_no_hash_yet_waits_for_its_hash,
        a_late_hash_leaves_the_one_recorded_meanwhile,
    );

    async fn a_page_of_ready_files_is_the_oldest_and_holds_no_room_beyond_its_limit(store: Store) {
        let names: Vec<String> = (0..40).map(|i| format!("f{i:02}")).collect();
        let files: Vec<(&str, i64, Option<&str>)> =
            names.iter().map(|n| (n.as_str(), 5, None)).collect();
        let ids = ready(&store, &files).await;

        // The batcher's page is thousands of full rows: room for more than the limit (a
        // doubling vector: 32 rows for 20) is memory held for nothing at its peak.
        let page = store.ready_files("w", 20).await.unwrap();
        let got: Vec<i64> = page.iter().map(|f| f.id).collect();
        assert_eq!(got, ids[..20], "the oldest first");
        assert!(page.capacity() <= 20, "room for {} rows", page.capacity());

        let all = store.ready_files("w", 100).await.unwrap();
        assert_eq!(all.len(), 40, "fewer than the limit: every one");
        assert!(all.capacity() <= 64, "room for {} rows", all.capacity());
    }

    async fn one_copy_per_content_waits_for_the_first_and_follows_its_outcome(store: Store) {
        let ids = ready(
            &store,
            &[
                ("a", 5, Some("X")),
                ("b", 5, Some("X")),
                ("c", 5, Some("X")),
            ],
        )
        .await;
        let first = seal(&store, &ids).await;
        assert_eq!(first.files, vec![ids[0]]);
        let waiting: Vec<(i64, i64)> = first.waiting.iter().map(|w| (w.file, w.carrier)).collect();
        assert_eq!(waiting, vec![(ids[1], ids[0]), (ids[2], ids[0])]);
        assert!(
            store.ready_files("w", 10).await.unwrap().is_empty(),
            "waiting files are out of the way"
        );
        assert_eq!(
            store.release_waiting().await.unwrap(),
            0,
            "the first is still in flight"
        );

        // Its batch fails: the next copy goes after all, the last one waits for it.
        let batch = first.batch_id.unwrap();
        store
            .finish_batch(batch, Verdict::Failed, &BatchOutcome::default(), "failed")
            .await
            .unwrap();
        assert_eq!(store.release_waiting().await.unwrap(), 2);
        let second = seal(&store, &ids[1..]).await;
        assert_eq!(second.files, vec![ids[1]]);
        assert_eq!(second.waiting.len(), 1);

        // That one succeeds: the last copy is its duplicate.
        let batch = second.batch_id.unwrap();
        store
            .finish_batch(batch, Verdict::Success, &BatchOutcome::default(), "ok")
            .await
            .unwrap();
        assert_eq!(store.release_waiting().await.unwrap(), 1);
        let third = seal(&store, &ids[2..]).await;
        assert_eq!(third.batch_id, None);
        assert_eq!(third.duplicates.len(), 1);
        assert_eq!(third.duplicates[0].carrier, ids[1]);
        let dup = store.file(ids[2]).await.unwrap().unwrap();
        assert_eq!(
            (dup.state, dup.duplicate_of),
            (FileState::Duplicate, Some(ids[1]))
        );
    }

    async fn a_file_of_the_size_of_one_in_flight_with_no_hash_yet_waits_for_its_hash(store: Store) {
        let first = ready(&store, &[("big", 9, None)]).await;
        let sealed = seal(&store, &first).await;
        assert_eq!(
            sealed.files, first,
            "alone with its size: sealed without a hash"
        );

        // Same size: unhashed, it must be hashed first; hashed, it waits for the first's hash.
        let second = ready(&store, &[("twin", 9, None)]).await;
        assert_eq!(seal(&store, &second).await.to_hash, second);
        store.set_shas(&[(second[0], "Y".into())]).await.unwrap();
        let waits = seal(&store, &second).await;
        assert_eq!(waits.waiting[0].carrier, first[0]);

        // The first one's upload tells its content: another one, so the twin goes.
        store
            .mark_uploaded_many(&[Uploaded {
                file_id: first[0],
                sha256: Some("Z".into()),
                size: 9,
                hash_stored: false,
            }])
            .await
            .unwrap();
        assert_eq!(store.release_waiting().await.unwrap(), 1);
        assert_eq!(seal(&store, &second).await.files, second);
    }

    async fn a_late_hash_leaves_the_one_recorded_meanwhile(store: Store) {
        // Two files in flight, sealed unhashed (alone with their sizes).
        let sealed = ready(&store, &[("a", 9, None), ("b", 7, None)]).await;
        assert_eq!(seal(&store, &sealed).await.files, sealed);
        // b's upload recorded its hash first: the batcher's late one leaves it as it is.
        store.set_shas(&[(sealed[1], "B".into())]).await.unwrap();
        store
            .set_unknown_shas(&[(sealed[0], "A".into()), (sealed[1], "late".into())])
            .await
            .unwrap();
        let sha = |id| {
            let store = store.clone();
            async move { store.file(id).await.unwrap().unwrap().sha256 }
        };
        assert_eq!(sha(sealed[0]).await.as_deref(), Some("A"));
        assert_eq!(sha(sealed[1]).await.as_deref(), Some("B"));
    }
}
