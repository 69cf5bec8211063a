//! Staged files: what a watch with a mapping set made of a dropped file (see `crate::mapped`),
//! recorded once, when the staged file is complete and before its file can be batched. The
//! record is never replaced while its file may have been sent: a restart uploads the same
//! staged bytes, whatever the mapping set says by then.

use super::{StagedFile, Store, StoreError, now_ms};
use crate::format::Format;

#[derive(sqlx::FromRow)]
struct Row {
    file_id: i64,
    path: String,
    name: String,
    format: Format,
    dev: i64,
    ino: i64,
    size: i64,
    mtime_ns: i64,
    sha256: String,
    original_sha256: String,
    original_format: Format,
    mapping_path: String,
    mapping_sha256: String,
    records_in: i64,
    records_out: i64,
    rejected: i64,
    rejected_json: String,
}

impl Row {
    fn into_staged(self) -> Result<StagedFile, StoreError> {
        let rejected_rows = serde_json::from_str(&self.rejected_json).map_err(|e| {
            sqlx::Error::Decode(
                format!("staged file of file #{}: rejected_json: {e}", self.file_id).into(),
            )
        })?;
        Ok(StagedFile {
            file_id: self.file_id,
            path: self.path,
            name: self.name,
            format: self.format,
            identity: crate::disk::Identity {
                dev: self.dev as u64,
                ino: self.ino as u64,
                size: self.size as u64,
                mtime_ns: self.mtime_ns,
            },
            sha256: self.sha256,
            original_sha256: self.original_sha256,
            original_format: self.original_format,
            mapping_path: self.mapping_path,
            mapping_sha256: self.mapping_sha256,
            records_in: self.records_in,
            records_out: self.records_out,
            rejected: self.rejected,
            rejected_rows,
        })
    }
}

impl Store {
    /// Records a staged file, and makes its file one of the staged format with the original's
    /// SHA-256 (what the batcher groups and deduplicates by), if the file is still ready.
    /// Returns false (recording nothing) when the file is no longer ready, or was staged
    /// already: a staged file is never replaced.
    pub async fn record_staged(&self, staged: &StagedFile) -> Result<bool, StoreError> {
        let rejected = serde_json::to_string(&staged.rejected_rows).expect("plain data");
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE files SET format = $1, multiline_json = FALSE, sha256 = $2, updated_at = $3
             WHERE id = $4 AND state = 'ready'
               AND NOT EXISTS (SELECT 1 FROM staged_files WHERE file_id = $4)",
        )
        .bind(staged.format)
        .bind(&staged.original_sha256)
        .bind(now_ms())
        .bind(staged.file_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO staged_files (file_id, path, name, format, dev, ino, size, mtime_ns,
                 sha256, original_sha256, original_format, mapping_path, mapping_sha256,
                 records_in, records_out, rejected, rejected_json, staged_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(staged.file_id)
        .bind(&staged.path)
        .bind(&staged.name)
        .bind(staged.format)
        .bind(staged.identity.dev as i64)
        .bind(staged.identity.ino as i64)
        .bind(staged.identity.size as i64)
        .bind(staged.identity.mtime_ns)
        .bind(&staged.sha256)
        .bind(&staged.original_sha256)
        .bind(staged.original_format)
        .bind(&staged.mapping_path)
        .bind(&staged.mapping_sha256)
        .bind(staged.records_in)
        .bind(staged.records_out)
        .bind(staged.rejected)
        .bind(rejected)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The staged file of a file, if it has one.
    pub async fn staged_file(&self, file_id: i64) -> Result<Option<StagedFile>, StoreError> {
        let row: Option<Row> = sqlx::query_as("SELECT * FROM staged_files WHERE file_id = $1")
            .bind(file_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Row::into_staged).transpose()
    }

    /// The staged files of a batch's files.
    pub async fn staged_of_batch(&self, batch_id: i64) -> Result<Vec<StagedFile>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT s.* FROM staged_files s JOIN files f ON f.id = s.file_id WHERE f.batch_id = $1",
        )
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Row::into_staged).collect()
    }

    /// The staged files of those of `file_ids` that have one, by file id.
    pub async fn staged_of_files(
        &self,
        file_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, StagedFile>, StoreError> {
        if file_ids.is_empty() {
            return Ok(Default::default());
        }
        let mut q = sqlx::QueryBuilder::new("SELECT * FROM staged_files WHERE file_id IN (");
        super::push_ids(&mut q, file_ids.iter().copied());
        let rows: Vec<Row> = q.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|r| r.into_staged().map(|s| (s.file_id, s)))
            .collect()
    }

    /// Which of `file_ids` have a staged file.
    pub async fn staged_among(
        &self,
        file_ids: &[i64],
    ) -> Result<std::collections::HashSet<i64>, StoreError> {
        if file_ids.is_empty() {
            return Ok(Default::default());
        }
        let mut q = sqlx::QueryBuilder::new("SELECT file_id FROM staged_files WHERE file_id IN (");
        super::push_ids(&mut q, file_ids.iter().copied());
        let ids: Vec<i64> = q.build_query_scalar().fetch_all(&self.pool).await?;
        Ok(ids.into_iter().collect())
    }

    /// The paths of the staged files still needed: those of files not finished yet (a
    /// superseded file's staged bytes will never be sent).
    pub async fn staged_paths_in_use(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT s.path FROM staged_files s JOIN files f ON f.id = s.file_id
             WHERE f.finalized = FALSE AND f.state <> 'superseded'",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
