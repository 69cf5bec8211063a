//! What a push must not send because it is held elsewhere (docs/duplicates.md): content the
//! daemon ingested or has in flight, and content another push ingested. The daemon's state and
//! the other pushes' (`state_dir/push/*/`) are read here, never written; only this push's own
//! files are hashed and marked as duplicates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CommandError;
use super::push::WATCH;
use crate::store::{Carried, FileRow, Store};

/// Keeps content held elsewhere out of this push; the other states are read, never written.
/// The daemon's: a file whose content it ingested becomes a duplicate here (with the daemon's
/// batch in its line); one whose content is in a batch of the daemon's in flight waits for
/// that batch's outcome. Another push's (`pushes`): a file whose content it ingested becomes a
/// duplicate; what it has in flight is not waited for (see the module's note). Files are hashed
/// first where a file of the same size exists (another file of this push, or one of the
/// daemon's or of another push), as the daemon does.
pub(super) async fn hold_back_repeats(
    store: &Store,
    beside: Option<&Store>,
    pushes: &[PathBuf],
    dataset: &str,
) -> Result<(), CommandError> {
    let mut ready = store.ready_files(WATCH, i64::MAX).await?;
    let mut picked = Vec::new();
    for (at, f) in ready.iter().enumerate() {
        if f.sha256.is_some() {
            continue;
        }
        let twin = ready.iter().any(|g| g.id != f.id && g.size == f.size);
        let seen = match beside {
            Some(daemon) => daemon.size_seen(dataset, f.size, 0).await?,
            None => false,
        };
        if twin || seen {
            picked.push(at);
        }
    }
    hash(store, &mut ready, &picked).await?;
    for dir in pushes {
        held_by_another_push(store, &mut ready, dir, dataset).await?;
    }
    let Some(daemon) = beside else {
        return Ok(());
    };
    let mut said = std::collections::HashSet::new();
    loop {
        let ready = store.ready_files(WATCH, i64::MAX).await?;
        let carried = daemon.carried(dataset, &contents(&ready)).await?;
        let mut waiting = false;
        for f in &ready {
            let Some(c) = f.sha256.as_ref().and_then(|sha| carried.get(sha)) else {
                continue;
            };
            if c.ingested {
                let reason = ingested_elsewhere(dataset, c, "the daemon");
                store.mark_duplicate_elsewhere(f.id, &reason).await?;
            } else {
                waiting = true;
                if said.insert(f.id) {
                    eprintln!(
                        "{}: waits for the daemon's batch of {} (it may carry the same content) to end",
                        f.abs_path().display(),
                        c.file
                    );
                }
            }
        }
        if !waiting {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The (SHA-256, size) of the files of `ready` whose content is known.
fn contents(ready: &[FileRow]) -> Vec<(String, i64)> {
    ready
        .iter()
        .filter_map(|f| f.sha256.clone().map(|sha| (sha, f.size)))
        .collect()
}

/// Hashes the files of `ready` at the positions `picked`, records their SHA-256 in this
/// push's state and fills it into `ready`.
async fn hash(store: &Store, ready: &mut [FileRow], picked: &[usize]) -> Result<(), CommandError> {
    if picked.is_empty() {
        return Ok(());
    }
    let files: Vec<FileRow> = picked.iter().map(|&at| ready[at].clone()).collect();
    let hashed = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|f| match crate::batcher::sha256_queued(&f, None) {
                Ok(Some(sha)) => Ok((f.id, sha)),
                Ok(None) => Err(CommandError::Io(format!(
                    "{} changed while the push read it (or the system is short of descriptors); run the push again once it is complete",
                    f.abs_path().display()
                ))),
                Err(e) => Err(CommandError::Io(format!(
                    "cannot read {}: {e}; check the file",
                    f.abs_path().display()
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .expect("hashing task panicked")?;
    store.set_shas(&hashed).await?;
    for (&at, (_, sha)) in picked.iter().zip(hashed) {
        ready[at].sha256 = Some(sha);
    }
    Ok(())
}

/// Marks the files of this push (`ready`) whose content the push kept in `dir` ingested as
/// duplicates and takes them out of `ready`, hashing first those of a size that push has too.
/// That push's state is opened once.
async fn held_by_another_push(
    store: &Store,
    ready: &mut Vec<FileRow>,
    dir: &Path,
    dataset: &str,
) -> Result<(), CommandError> {
    let Some(other) = open_push(dir).await else {
        return Ok(());
    };
    let held = async {
        let mut picked = Vec::new();
        for (at, f) in ready.iter().enumerate() {
            if f.sha256.is_none() && other.size_seen(dataset, f.size, 0).await? {
                picked.push(at);
            }
        }
        hash(store, ready, &picked).await?;
        let contents = contents(ready);
        if contents.is_empty() {
            return Ok(());
        }
        let carried = other.carried(dataset, &contents).await?;
        let mut marked = std::collections::HashSet::new();
        for f in ready.iter() {
            let Some(c) = f.sha256.as_ref().and_then(|sha| carried.get(sha)) else {
                continue;
            };
            if c.ingested {
                let by = format!("another push (state {})", dir.display());
                let reason = ingested_elsewhere(dataset, c, &by);
                store.mark_duplicate_elsewhere(f.id, &reason).await?;
                marked.insert(f.id);
            }
        }
        ready.retain(|f| !marked.contains(&f.id));
        Ok(())
    }
    .await;
    other.close().await;
    held
}

/// Why a file of this push is a duplicate of content `by` (the daemon, another push) ingested.
fn ingested_elsewhere(dataset: &str, carried: &Carried, by: &str) -> String {
    format!(
        "the same content was already ingested into dataset {dataset} from {} by {by}{}; not pushed again",
        carried.file,
        carried
            .batch
            .as_deref()
            .map(|b| format!(" in batch {b}"))
            .unwrap_or_default()
    )
}

/// The folders of the other pushes' states beside this one's (`own`), in name order. They are
/// opened one at a time, once each: a host may keep many, and holding them all open would
/// spend descriptors for nothing.
pub(super) fn other_pushes(folder: &Path, own: &Path) -> Vec<PathBuf> {
    let mut dirs = push_states(folder);
    dirs.retain(|p| p != own);
    dirs
}

/// The folders of the pushes' states in `folder` (`state_dir/push`), in name order.
pub(super) fn push_states(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Another push's state, read only; `None` (with a warning when it cannot be read) leaves it
/// out of the check.
async fn open_push(dir: &Path) -> Option<Store> {
    match Store::open_for_command(dir).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "warning: cannot read the push state in {} ({e}); this push is not checked against the content that push ingested",
                dir.display()
            );
            None
        }
    }
}
