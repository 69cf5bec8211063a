//! Fleet mode's coordination in the shared PostgreSQL database (issue #22): which instances
//! run, which instance took each file (a claim, once), and which one drives each batch and
//! scans each watch (a lease: owner, epoch, expiry, renewed by heartbeat). A change guarded by
//! a lease happens only `WHERE owner = me AND epoch = mine AND` the lease has not expired, and
//! a takeover bumps the epoch: an instance that was paused (`SIGSTOP`, a long GC-like stall) or
//! cut off from the database can change nothing once its lease passed to another.
//!
//! Every time here is the database's clock (`clock_timestamp()`), never the instance's: the
//! instances of a fleet run on different machines, and a skewed clock must not make one of
//! them believe a lease is still its own.
//!
//! This module must not hold the queue's queries (files, batches and their states are the
//! store's, one text for both backends), nor do I/O on folders or talk to the platform.

use std::time::Duration;

use super::postgres::{self, PgPool};
use super::{BatchState, StoreError};
use crate::config::PostgresState;

/// The database clock in unix ms, for `concat!`.
macro_rules! db_now {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// A fleet's shared database, for coordination. `status` reads it without joining.
#[derive(Clone)]
pub struct Fleet {
    pool: PgPool,
    url: String,
    lease_ms: i64,
}

/// One running instance of the fleet: what it claims and leases is held in its name.
#[derive(Clone)]
pub struct Member {
    fleet: Fleet,
    id: String,
}

/// A new instance's id: new at every start, so a restarted daemon is a new instance.
fn new_instance_id(host: &str) -> String {
    format!(
        "{host}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A file version as found in a watched folder: the unique key of its claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub watch: String,
    pub rel_path: String,
    pub dev: i64,
    pub ino: i64,
    pub size: i64,
    pub mtime_ns: i64,
}

/// The answer to a claim on a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This instance took it: it is the only one that records, uploads and moves it.
    Won,
    /// Another instance (or this one, earlier) took it first.
    Held { owner: String },
}

/// What a lease is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeaseOn {
    Batch(i64),
    Scan(String),
}

/// A lease this instance took: valid while the database says this instance still holds it at
/// this epoch (see [`Member::holds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    on: LeaseOn,
    epoch: i64,
}

impl Lease {
    pub fn on(&self) -> &LeaseOn {
        &self.on
    }

    /// Bumped at every change of owner: a former owner's epoch is stale forever.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }
}

/// How far back the batches an instance drove count towards its share (see
/// [`Member::acquire_batch_fairly`]): long enough to even out a backfill, short enough that
/// an instance that joins a long-running fleet does not take every new batch until it has
/// driven as many as the others ever did.
const SHARE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The answer to [`Member::acquire_batch_fairly`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Took(Lease),
    /// Another instance holds it (or it is gone).
    HeldElsewhere,
    /// Nobody holds it, but another instance drove fewer lately: left to the others.
    OverShare,
}

/// The result of a change guarded by a lease.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    Done,
    /// The lease expired or passed to another instance: nothing was changed, and the caller
    /// must drop the work (its new owner resumes it from the platform's state).
    LeaseLost,
}

/// What a heartbeat renewed ([`Member::renew`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// The batches whose leases it renewed.
    pub batches: Vec<i64>,
    /// How many scan leases it renewed.
    pub scans: u64,
}

/// One instance, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InstanceRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub started_at: i64,
    /// Database clock, unix ms.
    pub heartbeat_at: i64,
    /// Leases held now (unexpired) on batches and on watch scans.
    pub batch_leases: i64,
    pub scan_leases: i64,
    /// The database clock when this was read, to judge `heartbeat_at` by.
    pub now: i64,
}

impl Fleet {
    /// Connects to fleet mode's database (migrating it) without joining the fleet.
    pub async fn connect(state: &PostgresState) -> Result<Fleet, StoreError> {
        Fleet::connect_as(state, None).await
    }

    /// Connects as `instance`: its changes to batches are refused by the database once it no
    /// longer holds their lease (see [`Fleet::join_as_daemon`]).
    async fn connect_as(
        state: &PostgresState,
        instance: Option<&str>,
    ) -> Result<Fleet, StoreError> {
        Ok(Fleet {
            pool: postgres::connect(state, instance).await?,
            url: state.url.clone(),
            lease_ms: i64::try_from(state.lease.as_millis()).unwrap_or(i64::MAX),
        })
    }

    /// The database's URL (never with the password), for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The pool the queue shares (see [`super::Store::on_fleet`]).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.unsigned_abs())
    }

    /// Joins the fleet as a new instance on `host` (the id is new at every start: a restarted
    /// daemon takes its old batches over like any other instance, after their leases expire).
    pub async fn join(&self, host: &str) -> Result<Member, StoreError> {
        self.join_with_id(new_instance_id(host), host).await
    }

    /// Connects and joins as a daemon: every change the daemon's queue makes through this
    /// fleet's pool is refused once its batch's lease passed to another instance or expired
    /// (migration 0090), so no statement of the queue needs a lease clause of its own.
    pub async fn join_as_daemon(state: &PostgresState, host: &str) -> Result<Member, StoreError> {
        let id = new_instance_id(host);
        let fleet = Fleet::connect_as(state, Some(&id)).await?;
        fleet.join_with_id(id, host).await
    }

    async fn join_with_id(&self, id: String, host: &str) -> Result<Member, StoreError> {
        sqlx::query(concat!(
            "INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, ",
            db_now!(),
            ", ",
            db_now!(),
            ")"
        ))
        .bind(&id)
        .bind(host)
        .bind(i64::from(std::process::id()))
        .execute(&self.pool)
        .await?;
        Ok(Member {
            fleet: self.clone(),
            id,
        })
    }

    /// Every instance that ever joined and did not leave, with the leases it holds now; one
    /// whose heartbeat is older than a lease is lost (its leases are there for the taking).
    pub async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT i.id, i.host, i.pid, i.started_at, i.heartbeat_at,
               (SELECT COUNT(*) FROM batches b
                 WHERE b.lease_owner = i.id AND b.lease_expires_at > ",
            db_now!(),
            ") AS batch_leases,
               (SELECT COUNT(*) FROM scan_leases s
                 WHERE s.owner = i.id AND s.expires_at > ",
            db_now!(),
            ") AS scan_leases, ",
            db_now!(),
            " AS now
             FROM instances i ORDER BY i.started_at, i.id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl Member {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Proves this instance alive and renews every lease it still holds; returns how many.
    /// A lease another instance took meanwhile is not this instance's any more and stays lost.
    pub async fn heartbeat(&self) -> Result<u64, StoreError> {
        let renewed = self.renew().await?;
        Ok(renewed.batches.len() as u64 + renewed.scans)
    }

    /// [`Member::heartbeat`], saying which batches' leases it renewed: the others are not this
    /// instance's to drive or archive any more (ended and finished, or taken over).
    pub async fn renew(&self) -> Result<Renewed, StoreError> {
        let mut tx = self.fleet.pool.begin().await?;
        sqlx::query(concat!(
            "UPDATE instances SET heartbeat_at = ",
            db_now!(),
            " WHERE id = $1"
        ))
        .bind(&self.id)
        .execute(&mut *tx)
        .await?;
        // Only the leases that still guard work: a batch in flight, or an ended one whose
        // files are not all finished (the archiver moves them under its lease). An instance
        // keeps the owner's name on every batch it drove (the fair share counts them), so
        // renewing them all would make each heartbeat write its whole history.
        let batches: Vec<i64> = sqlx::query_scalar(concat!(
            "UPDATE batches SET lease_expires_at = ",
            db_now!(),
            " + $2 WHERE lease_owner = $1 AND (state IN ",
            in_flight!(),
            " OR EXISTS (SELECT 1 FROM files f WHERE f.batch_id = batches.id
                            AND f.finalized = FALSE)) RETURNING id"
        ))
        .bind(&self.id)
        .bind(self.fleet.lease_ms)
        .fetch_all(&mut *tx)
        .await?;
        let scans = sqlx::query(concat!(
            "UPDATE scan_leases SET expires_at = ",
            db_now!(),
            " + $2 WHERE owner = $1"
        ))
        .bind(&self.id)
        .bind(self.fleet.lease_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Renewed { batches, scans })
    }

    /// Claims a file version for this instance; the primary key makes a second owner
    /// impossible, whichever instance's scan or event saw it. The claim of a lost instance
    /// (gone from the fleet, or silent for a lease) passes to the next claimant: it may have
    /// died between claiming a file and recording it, and the file must not wait forever.
    pub async fn claim_file(&self, file: &FileKey) -> Result<Claim, StoreError> {
        let won = sqlx::query(concat!(
            "INSERT INTO file_claims (watch, rel_path, dev, ino, size, mtime_ns, owner, claimed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, ",
            db_now!(),
            ") ON CONFLICT (watch, rel_path, dev, ino, size, mtime_ns) DO UPDATE
               SET owner = EXCLUDED.owner, claimed_at = EXCLUDED.claimed_at
             WHERE file_claims.owner <> EXCLUDED.owner
               AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = file_claims.owner
                                 AND i.heartbeat_at > ",
            db_now!(),
            " - $8)"
        ))
        .bind(&file.watch)
        .bind(&file.rel_path)
        .bind(file.dev)
        .bind(file.ino)
        .bind(file.size)
        .bind(file.mtime_ns)
        .bind(&self.id)
        .bind(self.fleet.lease_ms)
        .execute(&self.fleet.pool)
        .await?
        .rows_affected();
        if won == 1 {
            return Ok(Claim::Won);
        }
        let owner: String = sqlx::query_scalar(
            "SELECT owner FROM file_claims WHERE watch = $1 AND rel_path = $2 AND dev = $3
               AND ino = $4 AND size = $5 AND mtime_ns = $6",
        )
        .bind(&file.watch)
        .bind(&file.rel_path)
        .bind(file.dev)
        .bind(file.ino)
        .bind(file.size)
        .bind(file.mtime_ns)
        .fetch_one(&self.fleet.pool)
        .await?;
        Ok(Claim::Held { owner })
    }

    /// [`Member::claim_file`] for many files: one statement and one commit for them all,
    /// where a claim each would cost a commit (a flush of the database's log) per file, most
    /// of a backlog's intake. Returns each file's claim, in order. `files` must not name one
    /// version twice (a scan's listing does not).
    pub async fn claim_files(&self, files: &[FileKey]) -> Result<Vec<Claim>, StoreError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let watch: Vec<&str> = files.iter().map(|f| f.watch.as_str()).collect();
        let rel_path: Vec<&str> = files.iter().map(|f| f.rel_path.as_str()).collect();
        let dev: Vec<i64> = files.iter().map(|f| f.dev).collect();
        let ino: Vec<i64> = files.iter().map(|f| f.ino).collect();
        let size: Vec<i64> = files.iter().map(|f| f.size).collect();
        let mtime_ns: Vec<i64> = files.iter().map(|f| f.mtime_ns).collect();
        let won: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(concat!(
            "INSERT INTO file_claims (watch, rel_path, dev, ino, size, mtime_ns, owner, claimed_at)
             SELECT k.watch, k.rel_path, k.dev, k.ino, k.size, k.mtime_ns, $7, ",
            db_now!(),
            " FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                         $6::bigint[]) AS k(watch, rel_path, dev, ino, size, mtime_ns)
             ON CONFLICT (watch, rel_path, dev, ino, size, mtime_ns) DO UPDATE
               SET owner = EXCLUDED.owner, claimed_at = EXCLUDED.claimed_at
             WHERE file_claims.owner <> EXCLUDED.owner
               AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = file_claims.owner
                                 AND i.heartbeat_at > ",
            db_now!(),
            " - $8)
             RETURNING watch, rel_path, dev, ino, size, mtime_ns"
        ))
        .bind(&watch)
        .bind(&rel_path)
        .bind(&dev)
        .bind(&ino)
        .bind(&size)
        .bind(&mtime_ns)
        .bind(&self.id)
        .bind(self.fleet.lease_ms)
        .fetch_all(&self.fleet.pool)
        .await?;
        let key = |(watch, rel_path, dev, ino, size, mtime_ns)| FileKey {
            watch,
            rel_path,
            dev,
            ino,
            size,
            mtime_ns,
        };
        let won: std::collections::HashSet<FileKey> = won.into_iter().map(key).collect();
        let mut owners = std::collections::HashMap::new();
        if won.len() < files.len() {
            let held: Vec<(String, String, i64, i64, i64, i64, String)> = sqlx::query_as(
                "SELECT c.watch, c.rel_path, c.dev, c.ino, c.size, c.mtime_ns, c.owner
                   FROM file_claims c
                   JOIN UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                               $6::bigint[]) AS k(watch, rel_path, dev, ino, size, mtime_ns)
                  USING (watch, rel_path, dev, ino, size, mtime_ns)",
            )
            .bind(&watch)
            .bind(&rel_path)
            .bind(&dev)
            .bind(&ino)
            .bind(&size)
            .bind(&mtime_ns)
            .fetch_all(&self.fleet.pool)
            .await?;
            for (watch, rel_path, dev, ino, size, mtime_ns, owner) in held {
                owners.insert(key((watch, rel_path, dev, ino, size, mtime_ns)), owner);
            }
        }
        let mut claims = Vec::with_capacity(files.len());
        for file in files {
            claims.push(if won.contains(file) {
                Claim::Won
            } else if let Some(owner) = owners.remove(file) {
                Claim::Held { owner }
            } else {
                // Its claim went between the two statements (swept, or its owner's passed
                // on): claimed on its own, as a single file is.
                self.claim_file(file).await?
            });
        }
        Ok(claims)
    }

    /// Deletes up to `limit` claims of files finished at least `keep` ago (by the claim's age,
    /// on the database's clock), oldest first; returns how many. Finished: every record of
    /// that file version is finalized, so the file was archived or quarantined (moved out of
    /// the drop folder) or superseded (its version no longer exists). Without its claim, a
    /// version dropped again is claimed anew by whichever instance sees it, and the queue's own
    /// rules decide as on SQLite: a version ingested is known and not queued again, one that
    /// failed is taken again. Several instances sweeping at once skip each other's rows.
    pub async fn forget_finished_claims(
        &self,
        keep: Duration,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        Ok(sqlx::query(concat!(
            "DELETE FROM file_claims WHERE (watch, rel_path, dev, ino, size, mtime_ns) IN (
               SELECT c.watch, c.rel_path, c.dev, c.ino, c.size, c.mtime_ns FROM file_claims c
                WHERE c.claimed_at <= ",
            db_now!(),
            " - $1
                  AND EXISTS (SELECT 1 FROM files f WHERE f.watch = c.watch
                                AND f.rel_path = c.rel_path AND f.dev = c.dev AND f.ino = c.ino
                                AND f.size = c.size AND f.mtime_ns = c.mtime_ns AND f.finalized)
                  AND NOT EXISTS (SELECT 1 FROM files f WHERE f.watch = c.watch
                                AND f.rel_path = c.rel_path AND f.dev = c.dev AND f.ino = c.ino
                                AND f.size = c.size AND f.mtime_ns = c.mtime_ns
                                AND NOT f.finalized)
                ORDER BY c.claimed_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        ))
        .bind(keep_ms)
        .bind(limit)
        .execute(&self.fleet.pool)
        .await?
        .rows_affected())
    }

    /// Gathers the planner's statistics of the queue's tables again when one of them changed
    /// by more than a tenth (and 500 rows) since they were last gathered, or never was;
    /// returns whether it did. Autovacuum would, but only at its next round (a minute apart by
    /// default): a fleet that starts on a backlog plans with the statistics of empty tables
    /// meanwhile, and a plan that takes `files`' state index for a rare key reads every file
    /// of the dataset where the hash index reads a few (the one-copy rule's carriers: 186 ms
    /// a seal at 20,000 files, 3 ms with statistics). Any instance may do it for all.
    pub async fn refresh_statistics(&self) -> Result<bool, StoreError> {
        let stale: bool = sqlx::query_scalar(
            "SELECT COALESCE(bool_or(c.reltuples < 0
                      OR s.n_mod_since_analyze > 500 + 0.1 * c.reltuples), FALSE)
               FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
              WHERE c.oid IN ('files'::regclass, 'batches'::regclass,
                              'content_claims'::regclass)",
        )
        .fetch_one(&self.fleet.pool)
        .await?;
        if stale {
            sqlx::query("ANALYZE files, batches, content_claims")
                .execute(&self.fleet.pool)
                .await?;
        }
        Ok(stale)
    }

    /// Takes the lease on a batch that no instance holds (never leased, released, or expired:
    /// its owner was lost). `None` while another instance holds it.
    pub async fn acquire_batch(&self, batch_id: i64) -> Result<Option<Lease>, StoreError> {
        let epoch: Option<i64> = sqlx::query_scalar(concat!(
            "UPDATE batches SET lease_owner = $2, lease_epoch = lease_epoch + 1,
               lease_expires_at = ",
            db_now!(),
            " + $3
             WHERE id = $1 AND (lease_owner IS NULL OR lease_expires_at <= ",
            db_now!(),
            ") RETURNING lease_epoch"
        ))
        .bind(batch_id)
        .bind(&self.id)
        .bind(self.fleet.lease_ms)
        .fetch_optional(&self.fleet.pool)
        .await?;
        Ok(epoch.map(|epoch| Lease {
            on: LeaseOn::Batch(batch_id),
            epoch,
        }))
    }

    /// Takes the lease on a batch that no instance holds, as [`Member::acquire_batch`], but
    /// only while no other live instance (heartbeat younger than a lease) drove fewer batches
    /// lately (in flight, or ended within [`SHARE_WINDOW`]), unless `anyway`. Without that,
    /// the scanner's instance, which seals each batch and sees it first, drives most of them:
    /// counting only the batches in flight is not enough, since a backfill's batches are
    /// often sealed one at a time and done before the next. A lost instance stops counting at
    /// once, so its survivors take its batches over without waiting for one another; alone,
    /// an instance takes everything.
    pub async fn acquire_batch_fairly(
        &self,
        batch_id: i64,
        anyway: bool,
    ) -> Result<Acquired, StoreError> {
        let (free, epoch): (Option<bool>, Option<i64>) = sqlx::query_as(concat!(
            "WITH batch AS (
               SELECT (lease_owner IS NULL OR lease_expires_at <= ",
            db_now!(),
            ") AS free FROM batches WHERE id = $1),
             driven AS (
               SELECT i.id, (SELECT COUNT(*) FROM batches b WHERE b.lease_owner = i.id
                               AND (b.state IN ",
            in_flight!(),
            " OR b.updated_at > ",
            db_now!(),
            " - $5)) AS n
                 FROM instances i WHERE i.id = $2 OR i.heartbeat_at > ",
            db_now!(),
            " - $3),
             share AS (
               SELECT COALESCE((SELECT n FROM driven WHERE id = $2), 0)
                   <= COALESCE((SELECT MIN(n) FROM driven WHERE id <> $2), 9223372036854775807)
                 AS under),
             took AS (
               UPDATE batches SET lease_owner = $2, lease_epoch = lease_epoch + 1,
                 lease_expires_at = ",
            db_now!(),
            " + $3
               WHERE id = $1 AND (lease_owner IS NULL OR lease_expires_at <= ",
            db_now!(),
            ") AND ($4 OR (SELECT under FROM share))
               RETURNING lease_epoch)
             SELECT (SELECT free FROM batch), (SELECT lease_epoch FROM took)"
        ))
        .bind(batch_id)
        .bind(&self.id)
        .bind(self.fleet.lease_ms)
        .bind(anyway)
        .bind(i64::try_from(SHARE_WINDOW.as_millis()).unwrap_or(i64::MAX))
        .fetch_one(&self.fleet.pool)
        .await?;
        Ok(match (epoch, free) {
            (Some(epoch), _) => Acquired::Took(Lease {
                on: LeaseOn::Batch(batch_id),
                epoch,
            }),
            (None, Some(true)) => Acquired::OverShare,
            (None, _) => Acquired::HeldElsewhere,
        })
    }

    /// Batches in flight that no instance drives: leased by a lost instance (expired) or never
    /// leased. Each is resumed from the platform's state by whoever leases it, as after a crash.
    pub async fn batches_to_take_over(&self) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT id FROM batches WHERE state IN ",
            in_flight!(),
            " AND (lease_owner IS NULL OR lease_expires_at <= ",
            db_now!(),
            ") ORDER BY id"
        ))
        .fetch_all(&self.fleet.pool)
        .await?)
    }

    /// Moves a leased batch to `state`, only while this instance still holds its lease at its
    /// epoch; a batch no longer in flight does not move either (an operator aborted it).
    pub async fn advance_batch(
        &self,
        lease: &Lease,
        state: BatchState,
    ) -> Result<Guarded, StoreError> {
        let LeaseOn::Batch(batch_id) = lease.on else {
            return Ok(Guarded::LeaseLost);
        };
        let moved = sqlx::query(concat!(
            "UPDATE batches SET state = $4, updated_at = ",
            db_now!(),
            "
             WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3 AND lease_expires_at > ",
            db_now!(),
            " AND state IN ",
            in_flight!()
        ))
        .bind(batch_id)
        .bind(&self.id)
        .bind(lease.epoch)
        .bind(state.as_str())
        .execute(&self.fleet.pool)
        .await?
        .rows_affected();
        Ok(if moved == 1 {
            Guarded::Done
        } else {
            Guarded::LeaseLost
        })
    }

    /// Whether this instance still holds `lease`, asked right before a step that cannot be
    /// conditioned in the database (moving a file to the archive, writing its receipt).
    pub async fn holds(&self, lease: &Lease) -> Result<bool, StoreError> {
        // One statement for both kinds: the side whose key is NULL counts nothing.
        let (batch_id, watch) = match &lease.on {
            LeaseOn::Batch(batch_id) => (Some(*batch_id), None),
            LeaseOn::Scan(watch) => (None, Some(watch.as_str())),
        };
        let held: i64 = sqlx::query_scalar(concat!(
            "SELECT (SELECT COUNT(*) FROM batches WHERE id = $1 AND lease_owner = $3
                       AND lease_epoch = $4 AND lease_expires_at > ",
            db_now!(),
            ") + (SELECT COUNT(*) FROM scan_leases WHERE watch = $2 AND owner = $3
                       AND epoch = $4 AND expires_at > ",
            db_now!(),
            ")"
        ))
        .bind(batch_id)
        .bind(watch)
        .bind(&self.id)
        .bind(lease.epoch)
        .fetch_one(&self.fleet.pool)
        .await?;
        Ok(held == 1)
    }

    /// Takes (or keeps) the scanner role of `watch`: `None` while another instance holds it.
    /// Keeping it does not bump the epoch; taking it from a lost instance does.
    pub async fn acquire_scan(&self, watch: &str) -> Result<Option<Lease>, StoreError> {
        let epoch: Option<i64> = sqlx::query_scalar(concat!(
            "INSERT INTO scan_leases (watch, owner, epoch, expires_at) VALUES ($1, $2, 1, ",
            db_now!(),
            " + $3)
             ON CONFLICT (watch) DO UPDATE SET owner = excluded.owner,
               epoch = CASE WHEN scan_leases.owner = excluded.owner THEN scan_leases.epoch
                            ELSE scan_leases.epoch + 1 END,
               expires_at = excluded.expires_at
             WHERE scan_leases.owner = excluded.owner OR scan_leases.expires_at <= ",
            db_now!(),
            " RETURNING epoch"
        ))
        .bind(watch)
        .bind(&self.id)
        .bind(self.fleet.lease_ms)
        .fetch_optional(&self.fleet.pool)
        .await?;
        Ok(epoch.map(|epoch| Lease {
            on: LeaseOn::Scan(watch.to_owned()),
            epoch,
        }))
    }

    /// Whether another live instance is the scanner of any of `watches`. A fleet's `run
    /// --once` ends only when none is: until its scanner leaves (done), files it found may not
    /// be recorded yet, and the queue looks empty when the backfill has not started.
    pub async fn scanned_elsewhere(&self, watches: &[String]) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM scan_leases WHERE watch = ANY($1) AND owner <> $2
               AND expires_at > ",
            db_now!(),
            ")"
        ))
        .bind(watches)
        .bind(&self.id)
        .fetch_one(&self.fleet.pool)
        .await?)
    }

    /// Leaves the fleet on a clean shutdown: every lease is released at once (the others need
    /// not wait for expiry) and the instance is no longer listed.
    pub async fn leave(&self) -> Result<(), StoreError> {
        let mut tx = self.fleet.pool.begin().await?;
        // The instance's row first, as `renew` (the heartbeat, which may beat during the exit)
        // takes its rows: instance, batches, scan leases. Taken in another order, a beat and
        // the leave each held a row the other waited for, and PostgreSQL broke the deadlock by
        // failing the leave (seen in `fleet_run::the_daemon_runs_its_queue_on_postgresql_as_
        // on_sqlite` under load): the instance stayed listed until its lease expired.
        sqlx::query("SELECT id FROM instances WHERE id = $1 FOR UPDATE")
            .bind(&self.id)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE batches SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1",
        )
        .bind(&self.id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM scan_leases WHERE owner = $1")
            .bind(&self.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(&self.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
