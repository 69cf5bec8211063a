//! Datasets (the Catalog's, and those the emulator's owner sets up), and the registered
//! schemas' JSON, kept so that they are registered again at the next start.

use super::rows::{DatasetRow, NewDataset};

/// Whose datasets and batches a call may see: the caller's organisation and sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub org: &'a str,
    pub sandbox: &'a str,
}

/// The rows (datasets or batches) a [`Scope`] sees, for a `WHERE`: binds the sandbox, then
/// the organisation. Rows the emulator's owner set up without either are seen from everywhere.
pub(super) const IN_SCOPE: &str = "(sandbox = '' OR sandbox = ?) AND (ims_org = '' OR ims_org = ?)";
use super::{DbError, Page, Store, now_ms};

impl Store {
    pub async fn dataset(&self, id: &str) -> Result<Option<DatasetRow>, DbError> {
        sqlx::query_as::<_, DatasetRow>("SELECT * FROM datasets WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The dataset if the caller's organisation and sandbox can see it: datasets belong to
    /// the sandbox (and organisation) they were created in, and are 404 from any other. Those
    /// the emulator's owner set up without naming one (`ensure_dataset`, config seeds without
    /// `sandbox`) are seen from every sandbox.
    pub async fn visible_dataset(
        &self,
        id: &str,
        scope: Scope<'_>,
    ) -> Result<Option<DatasetRow>, DbError> {
        let sql = format!("SELECT * FROM datasets WHERE id = ? AND {IN_SCOPE}");
        sqlx::query_as::<_, DatasetRow>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(scope.sandbox)
            .bind(scope.org)
            .fetch_optional(&self.pool)
            .await
    }

    /// Deletes a dataset and the current view of its rows (returns whether it existed). Its
    /// batches stay, as history: the Catalog still answers about them.
    pub async fn delete_dataset(&self, id: &str) -> Result<bool, DbError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM datasets WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM upsert_rows WHERE dataset_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Creates a dataset with exactly this id if it does not exist (returns whether it did).
    pub async fn insert_dataset_if_missing(&self, d: NewDataset<'_>) -> Result<bool, DbError> {
        let now = now_ms();
        let r = sqlx::query(
            "INSERT OR IGNORE INTO datasets (id, name, schema_ref, tags, extra, ims_org, sandbox, created, updated, identity_field)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(d.id)
        .bind(d.name)
        .bind(d.schema_ref)
        .bind(d.tags)
        .bind(d.extra)
        .bind(d.ims_org)
        .bind(d.sandbox)
        .bind(now)
        .bind(now)
        .bind(d.identity_field)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Sets what the emulator's owner says about an existing dataset (config seeds, embedded
    /// mode): each `Some` replaces the stored value.
    pub async fn update_dataset_setup(
        &self,
        id: &str,
        schema_ref: Option<&str>,
        tags: Option<&str>,
        identity_field: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE datasets SET schema_ref = COALESCE(?, schema_ref), tags = COALESCE(?, tags),
                 identity_field = COALESCE(?, identity_field), updated = ? WHERE id = ?",
        )
        .bind(schema_ref)
        .bind(tags)
        .bind(identity_field)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces what a client's PATCH may change: the name, the tags and the other fields.
    pub async fn update_dataset(
        &self,
        id: &str,
        name: &str,
        tags: &str,
        extra: &str,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE datasets SET name = ?, tags = ?, extra = ?, updated = ? WHERE id = ?")
            .bind(name)
            .bind(tags)
            .bind(extra)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a schema's JSON so it is registered again at the next start.
    pub async fn save_schema(
        &self,
        id: &str,
        name: &str,
        body: &str,
        identity_field: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO schemas (id, name, body, identity_field, created) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body,
                 identity_field = excluded.identity_field",
        )
        .bind(id)
        .bind(name)
        .bind(body)
        .bind(identity_field)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored schemas: (id, name, body, identity_field).
    pub async fn saved_schemas(
        &self,
    ) -> Result<Vec<(String, String, String, Option<String>)>, DbError> {
        sqlx::query_as("SELECT id, name, body, identity_field FROM schemas ORDER BY created, id")
            .fetch_all(&self.pool)
            .await
    }

    /// A page of the datasets the caller can see (see [`Store::visible_dataset`]),
    /// optionally only those with this name.
    pub async fn list_datasets(
        &self,
        scope: Scope<'_>,
        name: Option<&str>,
        page: &Page,
    ) -> Result<Vec<DatasetRow>, DbError> {
        let mut sql = format!("SELECT * FROM datasets WHERE {IN_SCOPE}");
        if name.is_some() {
            sql.push_str(" AND name = ?");
        }
        sql.push_str(&page.clause());
        let mut query = sqlx::query_as::<_, DatasetRow>(sqlx::AssertSqlSafe(sql))
            .bind(scope.sandbox.to_owned())
            .bind(scope.org.to_owned());
        if let Some(n) = name {
            query = query.bind(n.to_owned());
        }
        query.fetch_all(&self.pool).await
    }
}
