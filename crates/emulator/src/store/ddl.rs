//! The metadata database's tables, and bringing an older data dir's database up to them.

use sqlx::{Connection, SqliteConnection};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS datasets (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        schema_ref TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        extra TEXT NOT NULL DEFAULT '{}',
        ims_org TEXT NOT NULL DEFAULT '',
        sandbox TEXT NOT NULL DEFAULT '',
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        identity_field TEXT
    )",
    "CREATE TABLE IF NOT EXISTS batches (
        id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL,
        status TEXT NOT NULL,
        input_format TEXT NOT NULL,
        external_id TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        replay TEXT,
        options TEXT NOT NULL DEFAULT '{}',
        ims_org TEXT NOT NULL DEFAULT '',
        sandbox TEXT NOT NULL DEFAULT '',
        created_user TEXT NOT NULL DEFAULT '',
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        started INTEGER,
        completed INTEGER,
        metrics TEXT,
        errors TEXT,
        gc_due INTEGER
    )",
    "CREATE INDEX IF NOT EXISTS batches_dataset ON batches(dataset_id, created)",
    "CREATE INDEX IF NOT EXISTS batches_status ON batches(status)",
    "CREATE INDEX IF NOT EXISTS batches_external ON batches(external_id)",
    "CREATE TABLE IF NOT EXISTS files (
        id TEXT PRIMARY KEY,
        batch_id TEXT NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        records INTEGER,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        served_size INTEGER,
        UNIQUE (batch_id, path)
    )",
    // It covered the per-PUT count and size of a batch's other files; the batch's counters
    // (`FILE_COUNTERS`) answer that now, and every PUT would still pay for its upkeep.
    "DROP INDEX IF EXISTS files_batch_sizes",
    "CREATE TABLE IF NOT EXISTS chunks (
        file_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        start INTEGER NOT NULL,
        end_incl INTEGER NOT NULL,
        total INTEGER,
        sha256 TEXT NOT NULL, -- unused since chunks are compared byte for byte ('' now)
        acked INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (file_id, seq)
    )",
    "CREATE TABLE IF NOT EXISTS failed_rows (
        batch_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        file_path TEXT NOT NULL,
        row_no INTEGER,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        raw TEXT,
        errors TEXT,
        PRIMARY KEY (batch_id, seq)
    )",
    "CREATE TABLE IF NOT EXISTS schemas (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        identity_field TEXT,
        created INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS upsert_rows (
        dataset_id TEXT NOT NULL,
        identity TEXT NOT NULL,
        record TEXT NOT NULL,
        batch_id TEXT NOT NULL,
        updated INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, identity)
    )",
];

/// Columns added after the first release: (table, column, declaration). Added at start when an
/// older data dir lacks them (a new one gets them from `SCHEMA`).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // All the problems of a failed row, as a JSON array of {code, message, path}.
    ("failed_rows", "errors", "TEXT"),
    // Size of the good-rows copy Data Access serves for a partially ingested file.
    ("files", "served_size", "INTEGER"),
    // The identity field of an upsert dataset, when its config names one.
    ("datasets", "identity_field", "TEXT"),
    // 1: the chunk's bytes are at their offsets in the file's data (`data_path`), not in a
    // part of their own.
    ("chunks", "in_place", "INTEGER NOT NULL DEFAULT 0"),
];

/// Each batch's file count and bytes (what its limits are checked against on every PUT, in
/// `batch_at_path`), kept by triggers in the transaction of every change to `files`: a PUT
/// reads two columns instead of summing the batch's file list (O(files in the batch) per PUT,
/// O(n²) per batch), and the figures cannot drift from the rows, whatever writes them, across
/// restarts and concurrent requests alike. Added to an older data dir with its figures
/// counted once, in the same transaction.
const FILE_COUNTERS: &[&str] = &[
    "ALTER TABLE batches ADD COLUMN file_count INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE batches ADD COLUMN file_bytes INTEGER NOT NULL DEFAULT 0",
    "UPDATE batches SET
        file_count = (SELECT COUNT(*) FROM files f WHERE f.batch_id = batches.id),
        file_bytes = (SELECT COALESCE(SUM(size), 0) FROM files f WHERE f.batch_id = batches.id)",
    "CREATE TRIGGER files_counted_in AFTER INSERT ON files BEGIN
        UPDATE batches SET file_count = file_count + 1, file_bytes = file_bytes + NEW.size
        WHERE id = NEW.batch_id;
    END",
    // An upsert that finds its row fires this one, not the INSERT's.
    "CREATE TRIGGER files_counted_again AFTER UPDATE OF size, batch_id ON files
    WHEN OLD.size IS NOT NEW.size OR OLD.batch_id IS NOT NEW.batch_id BEGIN
        UPDATE batches SET file_count = file_count - 1, file_bytes = file_bytes - OLD.size
        WHERE id = OLD.batch_id;
        UPDATE batches SET file_count = file_count + 1, file_bytes = file_bytes + NEW.size
        WHERE id = NEW.batch_id;
    END",
    "CREATE TRIGGER files_counted_out AFTER DELETE ON files BEGIN
        UPDATE batches SET file_count = file_count - 1, file_bytes = file_bytes - OLD.size
        WHERE id = OLD.batch_id;
    END",
];

/// Creates the tables, and the columns an older data dir lacks, on one connection that is then
/// closed: a pooled connection that cached the schema before an ALTER TABLE would prepare
/// `SELECT *` with the old columns, and SQLite's silent re-prepare would then hand sqlx rows
/// wider than it expects.
pub(super) async fn create(mut conn: SqliteConnection) -> Result<(), sqlx::Error> {
    for stmt in SCHEMA {
        sqlx::query(*stmt).execute(&mut conn).await?;
    }
    for (table, column, decl) in ADDED_COLUMNS {
        if !has_column(&mut conn, table, column).await? {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {table} ADD COLUMN {column} {decl}"
            )))
            .execute(&mut conn)
            .await?;
        }
    }
    if !has_column(&mut conn, "batches", "file_count").await? {
        let mut tx = conn.begin().await?;
        for stmt in FILE_COUNTERS {
            sqlx::query(*stmt).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    conn.close().await
}

async fn has_column(
    conn: &mut SqliteConnection,
    table: &str,
    column: &str,
) -> Result<bool, sqlx::Error> {
    let cols: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT name FROM pragma_table_info('{table}')"
    )))
    .fetch_all(conn)
    .await?;
    Ok(cols.iter().any(|(c,)| c == column))
}
