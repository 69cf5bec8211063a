//! `.replay` sidecars in a drop folder: read (a small regular file only), parsed and resolved,
//! held until their data file settles (up to the watch's `sidecar_timeout`), attached to a
//! data file still queued, or refused with a receipt that says why.
//!
//! This module must not decide when a file is settled (`settle`) nor record data files
//! (`intake`).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{PendingSidecar, Watcher};
use crate::disk::{self, Dir, Identity, Kind, Links};
use crate::replay::{self, ReplayError};
use crate::store::{FileState, StoreError};

impl Watcher {
    /// Whether the data file `rel` must wait for a sidecar that is on disk but not settled
    /// (or not even seen yet: events can lag behind a scan).
    pub(super) fn sidecar_unsettled(&mut self, rel: &str) -> bool {
        if self.sidecars.contains_key(rel) {
            return false;
        }
        let side = format!("{rel}{}", replay::SUFFIX);
        if self.candidates.contains_key(&side) {
            return true;
        }
        let path = self.watch.path.join(&side);
        match Identity::read(&path) {
            Ok(id) if self.recorded.get(&side) != Some(&id) => {
                self.consider(&path, id, false);
                true
            }
            _ => false,
        }
    }

    /// A sidecar settled: attach it to its file if that is queued, else keep it until the file
    /// comes (or until `sidecar_timeout`).
    pub(super) async fn take_sidecar(
        &mut self,
        rel: String,
        id: Identity,
        path: &Path,
    ) -> Result<(), StoreError> {
        let data = replay::data_file_of(&rel).expect("a sidecar").to_owned();
        self.recorded.insert(rel.clone(), id);
        if self.store.sidecar_claimed(&self.watch.name, &rel).await? {
            return Ok(()); // attached before a restart: nothing new
        }
        let origin = format!("the sidecar {rel}");
        let parsed = match read_sidecar(&self.watch.path, path) {
            Ok(text) => replay::parse(&origin, &data, &text),
            Err(SidecarRead::Refused(why)) => {
                tracing::warn!(sidecar = %rel, file = %data, dataset = %self.watch.dataset, "sidecar refused: {why}");
                Err(ReplayError::Refused {
                    origin,
                    file: data.clone(),
                    why,
                })
            }
            Err(SidecarRead::Later) => {
                self.recorded.remove(&rel); // gone or unreadable for now: the next scan sees
                return Ok(());
            }
        };
        tracing::info!(sidecar = %rel, file = %data, dataset = %self.watch.dataset, "replay sidecar found");
        let queued = self.store.unfinished_file(&self.watch.name, &data).await?;
        match queued {
            Some(f) if f.sidecar.is_none() && f.state == FileState::Ready => {
                // The file came first and is still queued: it takes the sidecar now.
                let pending = PendingSidecar {
                    rel: rel.clone(),
                    identity: id,
                    since: Instant::now(),
                    parsed,
                };
                let resolved = self.resolve(&data, pending).await;
                if !self.attach_to_queued(&data, &rel, resolved).await? {
                    self.reject_late_sidecar(&data, &rel).await?;
                }
            }
            Some(f) if f.sidecar.is_none() && f.state.in_batch() => {
                self.reject_late_sidecar(&data, &rel).await?;
            }
            _ => {
                self.sidecars.insert(
                    data,
                    PendingSidecar {
                        rel,
                        identity: id,
                        since: Instant::now(),
                        parsed,
                    },
                );
            }
        }
        Ok(())
    }

    /// Attaches a resolved sidecar (or its error) to the queued record of `data`. False when
    /// the file had left the queue (sealed into a batch) in the meantime.
    pub(super) async fn attach_to_queued(
        &mut self,
        data: &str,
        side: &str,
        resolved: Result<crate::store::ReplayRequest, String>,
    ) -> Result<bool, StoreError> {
        let Some(f) = self.store.unfinished_file(&self.watch.name, data).await? else {
            return Ok(false);
        };
        match resolved {
            Ok(req) => {
                let done = self.store.attach_replay(f.id, &req).await?;
                if done {
                    tracing::info!(file = %data, sidecar = %side, replaces = %req.predecessors, "replay attached to the queued file");
                }
                Ok(done)
            }
            Err(reason) => {
                let done = self
                    .store
                    .reject_ready_with_sidecar(f.id, &reason, side)
                    .await?;
                if done {
                    tracing::warn!(file = %data, sidecar = %side, "rejected: {reason}");
                }
                Ok(done)
            }
        }
    }

    /// A sidecar that came after its file was sealed into a batch: the file goes on as new
    /// data; the sidecar goes to the failed folder saying so.
    pub(super) async fn reject_late_sidecar(
        &mut self,
        data: &str,
        side: &str,
    ) -> Result<(), StoreError> {
        let batch = match self.store.unfinished_file(&self.watch.name, data).await? {
            Some(f) => match f.batch_id {
                Some(b) => format!(" (batch {})", self.store.batch(b).await?.label()),
                None => String::new(),
            },
            None => String::new(),
        };
        let reason = format!(
            "the sidecar {side} arrived after {data} had been taken into a batch{batch}, so {data} is ingested as new data, not as a replay. Write the sidecar first (or within `settle` of its data file); to replace now, drop {data} again together with this sidecar"
        );
        self.reject_sidecar_file(side, &reason).await
    }

    /// Sends a sidecar alone to the failed folder with `reason`.
    pub(super) async fn reject_sidecar_file(
        &mut self,
        side: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let Ok(id) = Identity::read(&self.watch.path.join(side)) else {
            return Ok(());
        };
        let file = self.new_file(side, id, &self.watch.path.join(side));
        if let Some(fid) = self.store.record_rejected(&file, reason).await? {
            tracing::warn!(sidecar = %side, dataset = %self.watch.dataset, file_id = fid, "rejected: {reason}");
        }
        self.recorded.insert(side.to_owned(), id);
        self.wake_batcher.notify_one();
        Ok(())
    }

    /// Forgets sidecars that were removed or changed, and fails those whose data file did not
    /// come within `sidecar_timeout`.
    pub(super) async fn check_sidecars(&mut self) -> Result<(), StoreError> {
        if self.sidecars.is_empty() {
            return Ok(());
        }
        let timeout = self.watch.sidecar_timeout;
        let mut expired = Vec::new();
        let mut gone = Vec::new();
        for (data, sc) in &self.sidecars {
            match Identity::read(&self.watch.path.join(&sc.rel)) {
                Ok(now) if now == sc.identity => {}
                // Changed (it is a candidate again) or removed: forget this version.
                _ => gone.push(data.clone()),
            }
            if sc.since.elapsed() >= timeout && !self.candidates.contains_key(data) {
                expired.push(data.clone());
            }
        }
        for data in gone {
            if let Some(sc) = self.sidecars.remove(&data) {
                self.recorded.remove(&sc.rel);
            }
        }
        for data in expired {
            let Some(sc) = self.sidecars.remove(&data) else {
                continue;
            };
            let reason = format!(
                "the sidecar {} waited {} for its data file {data}, which did not come. Drop {data} together with its sidecar (the sidecar first, or within `settle` of it), or delete the sidecar; `sidecar_timeout` in the [[watch]] sets this wait",
                sc.rel,
                human(timeout)
            );
            self.reject_sidecar_file(&sc.rel, &reason).await?;
        }
        Ok(())
    }

    /// A pending sidecar → the replay to record with its file, or the reason it cannot be.
    pub(super) async fn resolve(
        &self,
        data: &str,
        sc: PendingSidecar,
    ) -> Result<crate::store::ReplayRequest, String> {
        let sidecar = match sc.parsed {
            Ok(s) => s,
            Err(e) => return Err(e.to_string()),
        };
        replay::resolve(
            &self.store,
            &self.watch.dataset,
            data,
            &replay::Origin::Sidecar(format!("the sidecar {}", sc.rel)),
            Some(&sc.rel),
            &sidecar,
        )
        .await
        .map_err(|e| e.to_string())
    }
}

pub(super) fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 && s % 60.0 == 0.0 {
        format!("{}m", s / 60.0)
    } else {
        format!("{s}s")
    }
}

/// A sidecar is a few lines of TOML: anything longer is refused unread.
pub const MAX_SIDECAR_BYTES: u64 = 64 * 1024;

/// Why a sidecar's text could not be had.
enum SidecarRead {
    /// Gone, unreadable for now, or the process is out of descriptors: the next scan sees.
    Later,
    /// Never to be read: the receipt says why.
    Refused(String),
}

/// The text of the sidecar at `path` (below `root`): a regular file, judged on its descriptor
/// (opened `O_NOFOLLOW | O_NONBLOCK`, so that neither a symlink to `/dev/zero` nor a FIFO is
/// read), of at most [`MAX_SIDECAR_BYTES`] (a sparse 3 GiB sidecar is never read).
fn read_sidecar(root: &Path, path: &Path) -> Result<String, SidecarRead> {
    let below = path.strip_prefix(root).map_err(|_| SidecarRead::Later)?;
    let opened = match Dir::anchor(root).and_then(|r| r.open_file(below, Links::Refuse)) {
        Ok(opened) => opened,
        Err(e) if disk::is_symlink_refusal(&e) => {
            return Err(SidecarRead::Refused(
                "it is a symbolic link (or reached through one), and a sidecar is read only from a regular file in the drop folder itself".into(),
            ));
        }
        Err(_) => return Err(SidecarRead::Later),
    };
    if opened.stat.kind != Kind::File {
        return Err(SidecarRead::Refused(format!(
            "it is {}, and a sidecar is read only from a regular file",
            opened.stat.kind.describe()
        )));
    }
    let too_long = || {
        SidecarRead::Refused(format!(
            "it is {} bytes long, and a sidecar is at most {MAX_SIDECAR_BYTES} bytes",
            opened.stat.identity.size
        ))
    };
    if opened.stat.identity.size > MAX_SIDECAR_BYTES {
        return Err(too_long());
    }
    match disk::read_capped(&opened.file, MAX_SIDECAR_BYTES) {
        Ok(bytes) if bytes.len() as u64 > MAX_SIDECAR_BYTES => Err(too_long()),
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(_) => Err(SidecarRead::Later),
    }
}
