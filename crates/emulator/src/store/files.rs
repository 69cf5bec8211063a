//! A batch's files, and the chunks of its large files. The bytes are on disk (paths in
//! `mod.rs`); these rows say which bytes arrived and what they are.

use super::datasets::Scope;
use super::rows::{ChunkPlace, ChunkRow, FileKind, FileRow, FileState};
use super::{DbError, Store, now_ms};

impl Store {
    pub async fn files_of(&self, batch_id: &str) -> Result<Vec<FileRow>, DbError> {
        sqlx::query_as::<_, FileRow>("SELECT * FROM files WHERE batch_id = ? ORDER BY path")
            .bind(batch_id)
            .fetch_all(&self.pool)
            .await
    }

    /// At most `limit` of a batch's files from the `start`-th, in the order of [`files_of`]
    /// (Data Access lists a batch a page at a time: loading every file for each page made
    /// listing a batch of n files O(n²)).
    ///
    /// [`files_of`]: Store::files_of
    pub async fn files_page(
        &self,
        batch_id: &str,
        start: u64,
        limit: u64,
    ) -> Result<Vec<FileRow>, DbError> {
        sqlx::query_as::<_, FileRow>(
            "SELECT * FROM files WHERE batch_id = ? ORDER BY path LIMIT ? OFFSET ?",
        )
        .bind(batch_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(start).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
    }

    pub async fn file(&self, batch_id: &str, path: &str) -> Result<Option<FileRow>, DbError> {
        sqlx::query_as::<_, FileRow>("SELECT * FROM files WHERE batch_id = ? AND path = ?")
            .bind(batch_id)
            .bind(path)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn file_by_id(&self, id: &str) -> Result<Option<FileRow>, DbError> {
        sqlx::query_as::<_, FileRow>("SELECT * FROM files WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The first `limit` files of the dataset's successful batches the caller can see,
    /// oldest batch first, each with its batch's `inputFormat` (for the dataset preview).
    pub async fn readable_files_of_dataset(
        &self,
        dataset_id: &str,
        scope: Scope<'_>,
        limit: i64,
    ) -> Result<Vec<(FileRow, String)>, DbError> {
        let rows: Vec<FileWith> = sqlx::query_as(
            "SELECT f.*, b.input_format AS with_batch FROM files f JOIN batches b ON b.id = f.batch_id \
             WHERE b.dataset_id = ? AND b.status = 'success' \
               AND (b.sandbox = '' OR b.sandbox = ?) AND (b.ims_org = '' OR b.ims_org = ?) \
             ORDER BY b.created, b.id, f.path LIMIT ?",
        )
        .bind(dataset_id)
        .bind(scope.sandbox)
        .bind(scope.org)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(FileWith::pair).collect())
    }

    /// The files of the successful batches the caller can see (of the given datasets, or
    /// all), with their batch's dataset: the Catalog's `dataSetFiles`. With `page` (`start`,
    /// `limit`), only those, newest first (by `created`, then by id, as the Catalog orders).
    pub async fn readable_files(
        &self,
        datasets: &[String],
        scope: Scope<'_>,
        page: Option<(usize, usize)>,
    ) -> Result<Vec<(FileRow, String)>, DbError> {
        let mut sql = String::from(
            "SELECT f.*, b.dataset_id AS with_batch FROM files f JOIN batches b ON b.id = f.batch_id \
             WHERE b.status = 'success' \
               AND (b.sandbox = '' OR b.sandbox = ?) AND (b.ims_org = '' OR b.ims_org = ?)",
        );
        if !datasets.is_empty() {
            sql.push_str(&format!(
                " AND b.dataset_id IN ({})",
                vec!["?"; datasets.len()].join(",")
            ));
        }
        if page.is_some() {
            sql.push_str(" ORDER BY f.created DESC, f.id DESC LIMIT ? OFFSET ?");
        }
        let mut query = sqlx::query_as::<_, FileWith>(sqlx::AssertSqlSafe(sql))
            .bind(scope.sandbox.to_owned())
            .bind(scope.org.to_owned());
        for dataset in datasets {
            query = query.bind(dataset.clone());
        }
        if let Some((start, limit)) = page {
            let bound = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            query = query.bind(bound(limit)).bind(bound(start));
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(FileWith::pair).collect())
    }

    /// Records a whole file that a PUT stored (new, or replacing the file at its path), on the
    /// PUT path's connection.
    pub async fn put_file(
        &self,
        file_id: &str,
        batch_id: &str,
        path: &str,
        len: u64,
    ) -> Result<(), DbError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO files (id, batch_id, path, kind, state, size, created, updated)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (batch_id, path) DO UPDATE SET kind = excluded.kind, state = excluded.state,
                 size = excluded.size, updated = excluded.updated",
        )
        .bind(file_id)
        .bind(batch_id)
        .bind(path)
        .bind(FileKind::Put)
        .bind(FileState::Complete)
        .bind(len as i64)
        .bind(now)
        .bind(now)
        .execute(self.put_conn().await?.get())
        .await?;
        Ok(())
    }

    /// A new large file, `uploading`.
    pub async fn insert_large_file(&self, batch_id: &str, path: &str) -> Result<(), DbError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO files (id, batch_id, path, kind, state, size, created, updated)
             VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
        )
        .bind(ulid::Ulid::new().to_string())
        .bind(batch_id)
        .bind(path)
        .bind(FileKind::Large)
        .bind(FileState::Uploading)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A finished file becomes a new large upload, empty.
    pub async fn restart_as_large(&self, file_id: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE files SET kind = ?, state = ?, size = 0, updated = ? WHERE id = ?")
            .bind(FileKind::Large)
            .bind(FileState::Uploading)
            .bind(now_ms())
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A large file's chunks were assembled into its `size` bytes.
    pub async fn complete_file(&self, file_id: &str, size: u64) -> Result<(), DbError> {
        sqlx::query("UPDATE files SET state = ?, size = ?, updated = ? WHERE id = ?")
            .bind(FileState::Complete)
            .bind(size as i64)
            .bind(now_ms())
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that a large file was just written to (Data Access lists when each file changed).
    pub async fn touch_file(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE files SET updated = ? WHERE id = ?")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn chunks_of(&self, file_id: &str) -> Result<Vec<ChunkRow>, DbError> {
        sqlx::query_as::<_, ChunkRow>(
            "SELECT * FROM chunks WHERE file_id = ? ORDER BY start, end_incl, seq",
        )
        .bind(file_id)
        .fetch_all(&self.pool)
        .await
    }

    /// The sequence numbers of a file's recorded chunks.
    pub async fn chunk_seqs(&self, file_id: &str) -> Result<Vec<i64>, DbError> {
        let seqs: Vec<(i64,)> = sqlx::query_as("SELECT seq FROM chunks WHERE file_id = ?")
            .bind(file_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(seqs.into_iter().map(|(s,)| s).collect())
    }

    /// Records chunk `seq` of a file: bytes `start..=end` (of `total`, if announced), where
    /// they were written, and whether the client is sent the 200 for it.
    pub async fn insert_chunk(
        &self,
        file_id: &str,
        seq: i64,
        (start, end, total): (u64, u64, Option<u64>),
        place: ChunkPlace,
        acked: bool,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO chunks (file_id, seq, start, end_incl, total, sha256, acked, in_place)
             VALUES (?, ?, ?, ?, ?, '', ?, ?)",
        )
        .bind(file_id)
        .bind(seq)
        .bind(start as i64)
        .bind(end as i64)
        .bind(total.map(|t| t as i64))
        .bind(acked)
        .bind(place == ChunkPlace::InPlace)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The client now knows that the chunks inside `start..=end` arrived.
    pub async fn ack_chunks(&self, file_id: &str, start: u64, end: u64) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE chunks SET acked = 1 WHERE file_id = ? AND start >= ? AND end_incl <= ?",
        )
        .bind(file_id)
        .bind(start as i64)
        .bind(end as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_chunk(&self, file_id: &str, seq: i64) -> Result<(), DbError> {
        sqlx::query("DELETE FROM chunks WHERE file_id = ? AND seq = ?")
            .bind(file_id)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_chunks(&self, file_id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM chunks WHERE file_id = ?")
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A total size that an earlier chunk of the file announced, other than `total`.
    pub async fn other_total(&self, file_id: &str, total: u64) -> Result<Option<u64>, DbError> {
        let known: Option<(i64,)> = sqlx::query_as(
            "SELECT total FROM chunks WHERE file_id = ? AND total IS NOT NULL AND total != ? LIMIT 1",
        )
        .bind(file_id)
        .bind(total as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(known.map(|(t,)| t as u64))
    }

    /// Complete files that still have chunk rows (completed just before a stop, their parts
    /// not yet removed).
    pub async fn complete_files_with_chunks(&self) -> Result<Vec<String>, DbError> {
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT c.file_id FROM chunks c JOIN files f ON f.id = c.file_id WHERE f.state = ?",
        )
        .bind(FileState::Complete)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }
}

/// A file's row and one column of its batch, read in the same statement (a statement per
/// file made listing a dataset of n files n + 1 statements: seconds per page at 70,000).
#[derive(sqlx::FromRow)]
struct FileWith {
    #[sqlx(flatten)]
    file: FileRow,
    with_batch: String,
}

impl FileWith {
    fn pair(self) -> (FileRow, String) {
        (self.file, self.with_batch)
    }
}
