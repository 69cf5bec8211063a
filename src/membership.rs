//! Where this daemon's queue lives, and its place in a fleet (issue #22): SQLite in
//! `state_dir` under the one-daemon lock, or fleet mode's shared PostgreSQL database, which the
//! instance joins, renews its leases in by a heartbeat (every third of the lease), and leaves
//! on a clean exit so that the others need not wait for its leases to expire; and how many
//! batches it takes on (its fair share of the fleet's).
//!
//! This module must not hold SQL (`store::fleet` does) nor decide about files or batches (the
//! stages do).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{Config, StateBackend};
use crate::store::{Acquired, Fleet, Lease, LeaseOn, Member, Store, StoreError};

/// The daemon's queue, and its membership when the queue is a fleet's.
pub struct State {
    pub store: Store,
    pub member: Option<Member>,
}

/// Opens the queue the config names; in fleet mode, joins the fleet.
pub async fn open(config: &Config) -> Result<State, StoreError> {
    match &config.state {
        StateBackend::Sqlite => Ok(State {
            store: Store::open_exclusive(&config.state_dir, config.allow_network_state_dir).await?,
            member: None,
        }),
        StateBackend::Postgres(pg) => {
            // The state dir still holds this instance's own files (the admin address).
            std::fs::create_dir_all(&config.state_dir).map_err(|source| StoreError::CreateDir {
                path: config.state_dir.clone(),
                source,
            })?;
            let host = host_name();
            let member = Fleet::join_as_daemon(pg, &host).await?;
            let fleet = member.fleet();
            // Scrapes of several instances are told apart by this (and by `instance` in status).
            metrics::gauge!(crate::telemetry::INSTANCE_INFO, "id" => member.id().to_owned(), "host" => host)
                .set(1.0);
            tracing::info!(instance = member.id(), database = fleet.url(), lease = ?fleet.lease(), "joined the fleet");
            Ok(State {
                store: Store::on_fleet(fleet),
                member: Some(member),
            })
        }
    }
}

/// How often an instance sweeps the claims of finished files, how old a claim must be to go
/// (a listing of a shared folder taken before the file was archived may still name it for a
/// while; a claim is cheap to keep), and how many one statement deletes, in at most
/// `CLAIM_SWEEP_ROUNDS` statements per sweep: about a million an hour at most, in small
/// transactions, whatever the backlog.
const CLAIM_SWEEP_EVERY: Duration = Duration::from_secs(60);
const CLAIM_KEEP: Duration = Duration::from_secs(10 * 60);
const CLAIM_SWEEP_LIMIT: i64 = 1000;
const CLAIM_SWEEP_ROUNDS: usize = 20;

/// Renews this instance's heartbeat and leases every third of the lease until `stop`, and
/// forgets the batch leases it did not renew (see [`Leases::renew`]), and refreshes the
/// planner's statistics where the queue changed much (see [`Member::refresh_statistics`]); a failed renewal is
/// reported and tried again at the next beat (a database outage pauses the fleet's work; the
/// leases it costs are taken over like a lost instance's). Every [`CLAIM_SWEEP_EVERY`], it
/// also deletes claims of files long finished, so that `file_claims` does not grow with every
/// file the fleet ever took.
pub async fn heartbeat(leases: Leases, stop: CancellationToken) {
    let member = leases.member().clone();
    let every = member.fleet().lease() / 3;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(CLAIM_SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said once at warn (a database user that may not ANALYZE the tables says so at every
    // beat), then at debug.
    let mut statistics_failed = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = leases.renew().await {
                    tracing::warn!(instance = member.id(), "heartbeat failed: {}; trying again in {every:?}", e.explain());
                }
                match member.refresh_statistics().await {
                    Ok(true) => tracing::debug!(instance = member.id(), "the queue's table statistics gathered again"),
                    Ok(false) => {}
                    Err(e) if !statistics_failed => {
                        statistics_failed = true;
                        tracing::warn!(instance = member.id(), "cannot gather the queue's table statistics (ANALYZE): {}; queries may be slow while autovacuum has not; give the fleet's database user ownership of its tables", e.explain());
                    }
                    Err(e) => tracing::debug!(instance = member.id(), "cannot gather the queue's table statistics: {}", e.explain()),
                }
            }
            _ = sweep.tick() => sweep_claims(&member).await,
        }
    }
}

/// One sweep of the claims of finished files (see [`CLAIM_SWEEP_EVERY`]).
async fn sweep_claims(member: &Member) {
    let mut forgotten = 0;
    for _ in 0..CLAIM_SWEEP_ROUNDS {
        match member
            .forget_finished_claims(CLAIM_KEEP, CLAIM_SWEEP_LIMIT)
            .await
        {
            Ok(n) => {
                forgotten += n;
                if n < CLAIM_SWEEP_LIMIT.unsigned_abs() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(
                    instance = member.id(),
                    "cannot delete the claims of finished files: {}; trying again in {CLAIM_SWEEP_EVERY:?}",
                    e.explain()
                );
                break;
            }
        }
    }
    if forgotten > 0 {
        tracing::debug!(
            instance = member.id(),
            forgotten,
            "deleted the claims of files finished over {CLAIM_KEEP:?} ago"
        );
    }
}

/// Leaves the fleet on a clean exit (its leases free at once). The pool stays open: the
/// store shares it, reads from it after this (`run --once` counts the failures), and closes it.
pub async fn leave(member: &Member) {
    if let Err(e) = member.leave().await {
        tracing::warn!(
            instance = member.id(),
            "cannot leave the fleet cleanly: {}; its leases free when they expire",
            e.explain()
        );
    }
}

/// The machine's name, as `status` lists the instances by (Linux: the kernel's hostname).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The leases this instance holds, as its stages ask for them: the uploader drives a batch
/// (taking only its fair share of them, see [`Leases::drive`]), and the archiver finishes its
/// files, only under the batch's lease; the watcher scans, the
/// batcher seals, and the archiver finishes the files that never had a batch, only under the
/// watch's scan lease. What the database refuses to a lost lease (migration 0090) makes the
/// rest safe; these checks keep the instances from stepping on each other's work at all.
#[derive(Clone)]
pub struct Leases {
    member: Member,
    held: Arc<Mutex<HashMap<LeaseOn, Held>>>,
    /// Batches nobody held that this instance left to the others (it drove its share), and
    /// since when: see [`Leases::drive`].
    left: Arc<Mutex<HashMap<i64, Instant>>>,
}

/// A lease this instance took, and when: a heartbeat that began before it was taken cannot
/// have renewed it, so it does not forget it (see [`Leases::renew`]).
#[derive(Clone)]
struct Held {
    lease: Lease,
    taken: Instant,
}

/// What became of a lease this instance took (see [`Leases::known`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// It took none on this.
    None,
    /// It still holds it.
    Held,
    /// Another instance holds it now.
    Lost,
}

/// Whether the uploader drives a batch now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// This instance holds its lease.
    Mine,
    /// Another instance drives it.
    Elsewhere,
    /// Nobody drives it, but this instance drives its share of the fleet's batches: another
    /// instance takes it, or this one after [`LEFT_FOR`].
    LeftToOthers,
}

/// How long a batch that this instance left to the others (see [`Drive::LeftToOthers`]) may
/// stay undriven before this instance takes it anyway: longer than an idle uploader waits
/// between two looks at the queue (at most 1 s), so that the others see it first, and short
/// enough that a busy or stalled peer costs little.
pub const LEFT_FOR: Duration = Duration::from_secs(3);

impl Leases {
    pub fn new(member: Member) -> Leases {
        Leases {
            member,
            held: Default::default(),
            left: Default::default(),
        }
    }

    pub fn member(&self) -> &Member {
        &self.member
    }

    /// Renews this instance's heartbeat and leases ([`Member::renew`]), and forgets the batch
    /// leases the renewal passed over, taken before it began: their batches ended and their
    /// files are finished, or another instance took them over. Were they kept, this map would
    /// grow with every batch the instance ever drove. A batch asked about again is leased
    /// anew. Batches left to the others that no stage asked about again for a lease past
    /// [`LEFT_FOR`] are forgotten too (an uploader still after one takes it at its next look).
    /// Returns how many leases it renewed.
    pub async fn renew(&self) -> Result<u64, StoreError> {
        let began = Instant::now();
        let renewed = self.member.renew().await?;
        let kept: HashSet<i64> = renewed.batches.iter().copied().collect();
        self.held.lock().unwrap().retain(|on, held| match on {
            LeaseOn::Batch(batch_id) => kept.contains(batch_id) || held.taken >= began,
            LeaseOn::Scan(_) => true,
        });
        let stale = LEFT_FOR + self.member.fleet().lease();
        self.left
            .lock()
            .unwrap()
            .retain(|_, since| since.elapsed() < stale);
        Ok(renewed.batches.len() as u64 + renewed.scans)
    }

    /// How many batch leases this instance remembers holding (see [`Leases::renew`]).
    pub fn batches_held(&self) -> usize {
        self.held
            .lock()
            .unwrap()
            .keys()
            .filter(|on| matches!(on, LeaseOn::Batch(_)))
            .count()
    }

    /// How long a stage leaves work another instance holds before asking again.
    pub fn retry_after(&self) -> Duration {
        self.member.fleet().lease() / 2
    }

    /// Whether this instance may drive batch `batch_id` now: it still holds its lease, or it
    /// took it (never leased, released, or expired: its owner was lost). Taking it over is all
    /// a resumption needs: the batch's record says where it was, and the platform the rest.
    pub async fn batch(&self, batch_id: i64) -> Result<bool, StoreError> {
        self.hold(LeaseOn::Batch(batch_id)).await
    }

    /// Whether the uploader drives batch `batch_id` now: as [`Leases::batch`], but a batch
    /// nobody holds is taken only while this instance drives less than its fair share of the
    /// fleet's batches in flight, so that batches spread evenly over the instances (the
    /// scanner's, which seals them, would otherwise drive most). A batch left to the others
    /// that none took within [`LEFT_FOR`] is taken anyway: the share never leaves a batch
    /// undriven.
    pub async fn drive(&self, batch_id: i64) -> Result<Drive, StoreError> {
        let on = LeaseOn::Batch(batch_id);
        if self.known(&on).await? == Known::Held {
            return Ok(Drive::Mine);
        }
        let anyway = self
            .left
            .lock()
            .unwrap()
            .get(&batch_id)
            .is_some_and(|since| since.elapsed() >= LEFT_FOR);
        let acquired = self.member.acquire_batch_fairly(batch_id, anyway).await?;
        let mut left = self.left.lock().unwrap();
        Ok(match acquired {
            Acquired::Took(lease) => {
                left.remove(&batch_id);
                tracing::debug!(
                    instance = self.member.id(),
                    epoch = lease.epoch(),
                    anyway,
                    "took the lease on {on:?}"
                );
                self.held.lock().unwrap().insert(
                    on,
                    Held {
                        lease,
                        taken: Instant::now(),
                    },
                );
                Drive::Mine
            }
            Acquired::HeldElsewhere => {
                left.remove(&batch_id);
                Drive::Elsewhere
            }
            Acquired::OverShare => {
                left.entry(batch_id).or_insert_with(Instant::now);
                Drive::LeftToOthers
            }
        })
    }

    /// Whether this instance is the scanner of `watch` now (it kept or took the role).
    pub async fn scan(&self, watch: &str) -> Result<bool, StoreError> {
        self.hold(LeaseOn::Scan(watch.to_owned())).await
    }

    /// Whether the lease this instance took on `on` is still its own. One it lost (this
    /// instance was paused or cut off past it, and another took it) is forgotten, and said.
    async fn known(&self, on: &LeaseOn) -> Result<Known, StoreError> {
        let lease = self
            .held
            .lock()
            .unwrap()
            .get(on)
            .map(|held| held.lease.clone());
        let Some(lease) = lease else {
            return Ok(Known::None);
        };
        if self.member.holds(&lease).await? {
            return Ok(Known::Held);
        }
        self.held.lock().unwrap().remove(on);
        tracing::warn!(
            instance = self.member.id(),
            "lost the lease on {on:?} (this instance was paused or cut off past it); its new owner carries on"
        );
        Ok(Known::Lost)
    }

    async fn hold(&self, on: LeaseOn) -> Result<bool, StoreError> {
        let known = self.known(&on).await?;
        if known == Known::Held {
            return Ok(true);
        }
        let taken = match &on {
            LeaseOn::Batch(batch_id) => self.member.acquire_batch(*batch_id).await?,
            LeaseOn::Scan(watch) => self.member.acquire_scan(watch).await?,
        };
        match taken {
            Some(lease) => {
                if known == Known::Lost || matches!(on, LeaseOn::Batch(_)) {
                    tracing::debug!(
                        instance = self.member.id(),
                        epoch = lease.epoch(),
                        "took the lease on {on:?}"
                    );
                }
                self.held.lock().unwrap().insert(
                    on,
                    Held {
                        lease,
                        taken: Instant::now(),
                    },
                );
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
