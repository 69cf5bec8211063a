//! Files becoming ready: recorded by the watcher (or `push`), or rejected with a reason; the
//! replay a `.replay` sidecar asks for, attached to its file while it is still queued.

use super::events::{Event, Kind, insert_event, insert_events};
use super::{
    Conn, FileRow, FileState, NewFile, QueryBuilder, Recorded, ReplayRequest, Store, StoreError,
    now_ms,
};

impl Store {
    /// Records a file that became stable. A version already known (same path and identity, in
    /// any state) is not queued again; a queued-but-unbatched record of the same path whose
    /// content changed is updated in place. The replay its `.replay` sidecar asks for is set
    /// in the same transaction: the batcher can never see the file without it.
    pub async fn record_ready_with(
        &self,
        f: &NewFile,
        replay: Option<&ReplayRequest>,
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.pool.begin().await?;
        let recorded = record_ready_in(&mut tx, f, replay).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// [`Store::record_ready_with`] (no replay) for several files in one transaction: one commit (one WAL
    /// append) instead of one per file, which was most of the cost of queueing a backlog.
    /// Outcomes are in the order of `files`.
    ///
    /// Paths never seen before (the usual case: a backlog at start-up, a burst of new files) are
    /// inserted with one multi-row statement per few hundred files; a statement costs a round
    /// trip to SQLite's thread, which per file was most of the time. Paths with history go
    /// through the per-file rules.
    pub async fn record_ready_many(&self, files: &[NewFile]) -> Result<Vec<Recorded>, StoreError> {
        use std::collections::{HashMap, HashSet};
        const BULK: usize = 500; // 13 values per row, well under SQLite's 32766 variables
        let mut tx = self.pool.begin().await?;
        let mut out: Vec<Option<Recorded>> = files.iter().map(|_| None).collect();
        // Which paths have rows already, in any state.
        let mut by_watch: HashMap<&str, Vec<&str>> = HashMap::new();
        for f in files {
            by_watch.entry(&f.watch).or_default().push(&f.rel_path);
        }
        let mut known: HashSet<(String, String)> = HashSet::new();
        for (watch, paths) in by_watch {
            for part in paths.chunks(BULK) {
                let mut q = QueryBuilder::new("SELECT DISTINCT rel_path FROM files WHERE watch = ");
                q.push_bind(watch).push(" AND rel_path IN (");
                let mut list = q.separated(", ");
                for p in part {
                    list.push_bind(*p);
                }
                q.push(")");
                let found: Vec<String> = q.build_query_scalar().fetch_all(&mut *tx).await?;
                known.extend(found.into_iter().map(|p| (watch.to_owned(), p)));
            }
        }
        let mut first_time = HashSet::new();
        let fresh: Vec<usize> = (0..files.len())
            .filter(|&i| {
                let key = (files[i].watch.clone(), files[i].rel_path.clone());
                !known.contains(&key) && first_time.insert(key)
            })
            .collect();
        if !fresh.is_empty() {
            // Fleet mode's tests pause an instance here, past its scan lease, between what it
            // read and what it writes (PostgreSQL migration 0161 refuses the write).
            crate::crashpoint::hit("record-ready-checked");
        }
        let now = now_ms();
        for part in fresh.chunks(BULK) {
            let mut q = QueryBuilder::new(
                "INSERT INTO files (watch, dataset, format, multiline_json, root, rel_path, dev, ino,
                   size, mtime_ns, state, discovered_at, updated_at) ",
            );
            q.push_values(part, |mut row, &i| {
                let f = &files[i];
                row.push_bind(&f.watch)
                    .push_bind(&f.dataset)
                    .push_bind(f.format)
                    .push_bind(f.multiline_json)
                    .push_bind(&f.root)
                    .push_bind(&f.rel_path)
                    .push_bind(f.dev)
                    .push_bind(f.ino)
                    .push_bind(f.size)
                    .push_bind(f.mtime_ns)
                    .push("'ready'")
                    .push_bind(now)
                    .push_bind(now);
            });
            q.push(" RETURNING id, watch, rel_path");
            let rows: Vec<(i64, String, String)> = q.build_query_as().fetch_all(&mut *tx).await?;
            let ids: HashMap<(String, String), i64> =
                rows.into_iter().map(|(id, w, p)| ((w, p), id)).collect();
            let details: Vec<(i64, String)> = part
                .iter()
                .map(|&i| {
                    let f = &files[i];
                    let id = ids[&(f.watch.clone(), f.rel_path.clone())];
                    out[i] = Some(Recorded::New(id));
                    (id, format!("{} bytes", f.size))
                })
                .collect();
            let events = details
                .iter()
                .map(|(id, detail)| Event::file(*id, Kind::Ready, detail))
                .collect::<Vec<_>>();
            insert_events(&mut tx, now, &events).await?;
        }
        let mut done = Vec::with_capacity(files.len());
        for (f, o) in files.iter().zip(out) {
            done.push(match o {
                Some(o) => o,
                None => record_ready_in(&mut tx, f, None).await?,
            });
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Which of these versions of files of `watch` (a path and its identity) the store knows
    /// already, in the order given: a scan asks this a page at a time instead of remembering
    /// every path it handed over, so its memory does not grow with the folder. A version
    /// failed and moved away counts as unknown, as `record_ready_with` sees it: the same file
    /// dropped again is taken again.
    pub async fn known_versions(
        &self,
        watch: &str,
        versions: &[(&str, crate::disk::Identity)],
    ) -> Result<Vec<bool>, StoreError> {
        use std::collections::HashSet;
        const BULK: usize = 1000;
        let mut known: HashSet<(String, i64, i64, i64, i64)> = HashSet::new();
        for part in versions.chunks(BULK) {
            let mut q = QueryBuilder::new(
                "SELECT rel_path, dev, ino, size, mtime_ns FROM files WHERE watch = ",
            );
            q.push_bind(watch).push(" AND rel_path IN (");
            let mut list = q.separated(", ");
            for (rel, _) in part {
                list.push_bind(*rel);
            }
            q.push(") AND NOT (state IN ('failed', 'superseded') AND finalized = TRUE)");
            let rows: Vec<(String, i64, i64, i64, i64)> =
                q.build_query_as().fetch_all(&self.pool).await?;
            known.extend(rows);
        }
        Ok(versions
            .iter()
            .map(|(rel, id)| {
                known.contains(&(
                    (*rel).to_owned(),
                    id.dev as i64,
                    id.ino as i64,
                    id.size as i64,
                    id.mtime_ns,
                ))
            })
            .collect())
    }

    /// Records a file that cannot be ingested at all (unknown format, bad name...): it goes
    /// straight to the failed folder with `reason` in its receipt.
    pub async fn record_rejected(
        &self,
        f: &NewFile,
        reason: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.record_rejected_with(f, reason, None).await
    }

    /// [`Store::record_rejected`] for a file that came with a `.replay` sidecar (at `sidecar`,
    /// relative to the root): the archiver moves both to the failed folder.
    pub async fn record_rejected_with(
        &self,
        f: &NewFile,
        reason: &str,
        sidecar: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let known: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM files WHERE watch = $1 AND rel_path = $2 AND dev = $3 AND ino = $4 AND size = $5
               AND mtime_ns = $6 LIMIT 1",
        )
        .bind(&f.watch)
        .bind(&f.rel_path)
        .bind(f.dev)
        .bind(f.ino)
        .bind(f.size)
        .bind(f.mtime_ns)
        .fetch_optional(&mut *tx)
        .await?;
        if known.is_some() {
            return Ok(None);
        }
        let now = now_ms();
        let id = insert_file(&mut tx, f, Entry::Rejected { reason, sidecar }, now).await?;
        insert_event(&mut *tx, now, Event::file(id, Kind::Rejected, reason)).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Attaches a sidecar that arrived after its file was queued. Only a file still `ready`
    /// (not yet in a batch) can take it; returns whether it did.
    pub async fn attach_replay(
        &self,
        file_id: i64,
        replay: &ReplayRequest,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE files SET replay_json = $1, replay_reason = $2, sidecar = $3, updated_at = $4
             WHERE id = $5 AND state = 'ready' AND sidecar IS NULL",
        )
        .bind(&replay.predecessors)
        .bind(&replay.reason)
        .bind(&replay.sidecar)
        .bind(now)
        .bind(file_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            let detail = format!(
                "{} replaces {}",
                replay.sidecar.as_deref().unwrap_or("replay"),
                replay.predecessors
            );
            insert_event(&mut *tx, now, Event::file(file_id, Kind::Replay, &detail)).await?;
            tx.commit().await?;
        }
        Ok(n > 0)
    }

    /// Fails a queued (`ready`) file because of its sidecar, which goes with it to the failed
    /// folder. Returns whether the file was still ready.
    pub async fn reject_ready_with_sidecar(
        &self,
        file_id: i64,
        reason: &str,
        sidecar: &str,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE files SET state = 'failed', reason = $1, sidecar = $2, updated_at = $3
             WHERE id = $4 AND state = 'ready' AND sidecar IS NULL",
        )
        .bind(reason)
        .bind(sidecar)
        .bind(now)
        .bind(file_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            insert_event(&mut *tx, now, Event::file(file_id, Kind::Failed, reason)).await?;
            tx.commit().await?;
        }
        Ok(n > 0)
    }

    /// Whether a sidecar at this path already belongs to a file still in the pipeline.
    pub async fn sidecar_claimed(&self, watch: &str, sidecar: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM files WHERE watch = $1 AND sidecar = $2 AND finalized = FALSE",
        )
        .bind(watch)
        .bind(sidecar)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// The unfinished record of a path in a watch (ready, in a batch, or about to be moved).
    pub async fn unfinished_file(
        &self,
        watch: &str,
        rel_path: &str,
    ) -> Result<Option<FileRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM files WHERE watch = $1 AND rel_path = $2 AND finalized = FALSE
             ORDER BY id DESC LIMIT 1",
        )
        .bind(watch)
        .bind(rel_path)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Files queued but not finished (the resource cap on intake counts these).
    pub async fn queued_files(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM files WHERE finalized = FALSE AND state IN ('ready', 'batched', 'uploaded')",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// The checks and writes of [`Store::record_ready_with`], inside the caller's transaction.
async fn record_ready_in(
    conn: &mut Conn,
    f: &NewFile,
    replay: Option<&ReplayRequest>,
) -> Result<Recorded, StoreError> {
    let same: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM files WHERE watch = $1 AND rel_path = $2 AND dev = $3 AND ino = $4
           AND size = $5 AND mtime_ns = $6 AND NOT (state IN ('failed', 'superseded') AND finalized = TRUE)
         LIMIT 1",
    )
    .bind(&f.watch)
    .bind(&f.rel_path)
    .bind(f.dev)
    .bind(f.ino)
    .bind(f.size)
    .bind(f.mtime_ns)
    .fetch_optional(&mut *conn)
    .await?;
    if same.is_some() {
        return Ok(Recorded::Known);
    }
    // A path still in flight under an older identity: the uploader checks identity before
    // and after sending and restarts or fails that record, so it is left alone here, and
    // the new version waits (`Deferred`) until the older one is finished.
    let in_flight: Option<(i64, FileState)> = sqlx::query_as(
        "SELECT id, state FROM files WHERE watch = $1 AND rel_path = $2
           AND state IN ('ready', 'batched', 'uploaded') AND finalized = FALSE LIMIT 1",
    )
    .bind(&f.watch)
    .bind(&f.rel_path)
    .fetch_optional(&mut *conn)
    .await?;
    let now = now_ms();
    let id = match in_flight {
        Some((id, FileState::Ready)) => {
            sqlx::query(
                "UPDATE files SET dev = $1, ino = $2, size = $3, mtime_ns = $4, sha256 = NULL,
                   waits_for = NULL, format = $5, updated_at = $6 WHERE id = $7",
            )
            .bind(f.dev)
            .bind(f.ino)
            .bind(f.size)
            .bind(f.mtime_ns)
            .bind(f.format)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            if let Some(r) = replay {
                sqlx::query(
                    "UPDATE files SET replay_json = $1, replay_reason = $2, sidecar = $3 WHERE id = $4",
                )
                .bind(&r.predecessors)
                .bind(&r.reason)
                .bind(&r.sidecar)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            return Ok(Recorded::Known);
        }
        Some(_) => return Ok(Recorded::Deferred),
        None => insert_file(conn, f, Entry::Ready { replay }, now).await?,
    };
    let detail = format!("{} bytes", f.size);
    insert_event(&mut *conn, now, Event::file(id, Kind::Ready, &detail)).await?;
    Ok(Recorded::New(id))
}

/// How a new file's record starts.
enum Entry<'a> {
    /// Queued for a batch, with the replay its `.replay` sidecar asked for.
    Ready { replay: Option<&'a ReplayRequest> },
    /// Failed at once (the archiver moves it, and `sidecar` with it) with `reason`.
    Rejected {
        reason: &'a str,
        sidecar: Option<&'a str>,
    },
}

/// Inserts `f`'s record as `entry` says; returns its id.
async fn insert_file(
    conn: &mut Conn,
    f: &NewFile,
    entry: Entry<'_>,
    now: i64,
) -> Result<i64, StoreError> {
    // Only a rejected record keeps the raw bytes of its path (a name that is not UTF-8 can be
    // why it was rejected); ready records never stored them, here or in `record_ready_many`.
    let (state, reason, replay, sidecar, raw_path) = match entry {
        Entry::Ready { replay } => (
            FileState::Ready,
            None,
            replay,
            replay.and_then(|r| r.sidecar.as_deref()),
            None,
        ),
        Entry::Rejected { reason, sidecar } => (
            FileState::Failed,
            Some(reason),
            None,
            sidecar,
            f.raw_path.as_ref(),
        ),
    };
    Ok(sqlx::query_scalar(
        "INSERT INTO files (watch, dataset, format, multiline_json, root, rel_path, dev, ino, size,
           mtime_ns, state, reason, discovered_at, updated_at, replay_json, replay_reason, sidecar,
           raw_path)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
         RETURNING id",
    )
    .bind(&f.watch)
    .bind(&f.dataset)
    .bind(f.format)
    .bind(f.multiline_json)
    .bind(&f.root)
    .bind(&f.rel_path)
    .bind(f.dev)
    .bind(f.ino)
    .bind(f.size)
    .bind(f.mtime_ns)
    .bind(state)
    .bind(reason)
    .bind(now)
    .bind(now)
    .bind(replay.map(|r| &r.predecessors))
    .bind(replay.map(|r| &r.reason))
    .bind(sidecar)
    .bind(raw_path)
    .fetch_one(&mut *conn)
    .await?)
}
