//! `batchdrop retry FILE|BATCH`: requeues a failed file, or the failed files of a failed or
//! aborted batch, by moving each back from the failed folder to where it was dropped (with its
//! sidecar, if it had one) and retiring its failed record. The daemon's watcher then takes it
//! like any new file, so retry works the same whether a daemon runs now or starts later.
//!
//! This module must not upload or batch anything, and must not touch a file the daemon still
//! owns (one not yet moved to the failed folder).

use std::path::{Path, PathBuf};

use super::{CommandError, Target, find_target, not_found, open_state};
use crate::config::Config;
use crate::disk::{self, Create, Links};
use crate::store::{BatchState, FileRow, FileState};

pub async fn run(config: &Config, target: &str) -> Result<u8, CommandError> {
    let Some(store) = open_state(config).await? else {
        return Err(not_found(config, target));
    };
    let (files, of_batch) = match find_target(&store, config, target, None).await? {
        None => return Err(not_found(config, target)),
        Some(Target::Batch(b)) => {
            if ![BatchState::Failed, BatchState::Aborted].contains(&b.state()) {
                return Err(CommandError::Refused(format!(
                    "batch {} is {}: only a failed or aborted batch can be retried{}",
                    b.label(),
                    b.state(),
                    match b.state() {
                        BatchState::Success | BatchState::Reverted =>
                            "; its data was ingested (use `batchdrop revert` to take it back)",
                        BatchState::Abandoned =>
                            "; the files of an abandoned batch already went into a new batch by themselves",
                        _ => "; it is still in flight (`batchdrop abort` stops it)",
                    }
                )));
            }
            let failed: Vec<FileRow> = store
                .batch_files(b.id)
                .await?
                .into_iter()
                .filter(|f| f.state == FileState::Failed)
                .collect();
            if failed.is_empty() {
                return Err(CommandError::Refused(format!(
                    "batch {} has no failed file left to retry (already requeued?); see `batchdrop status {}`",
                    b.label(),
                    b.label()
                )));
            }
            (failed, Some(b.label()))
        }
        Some(Target::File { name, rows }) => {
            let newest = &rows[0];
            if newest.state != FileState::Failed {
                return Err(CommandError::Refused(format!(
                    "{name} is {} (its latest record, #{}), not failed: nothing to retry",
                    newest.state, newest.id
                )));
            }
            (vec![newest.clone()], None)
        }
    };
    let mut problems = Vec::new();
    let mut requeued = 0;
    for f in &files {
        let watch = config.watches.iter().find(|w| w.name == f.watch);
        let anchors = match watch {
            Some(w) => crate::archiver::anchors(w, f).to_vec(),
            None => vec![Path::new(&f.root)],
        };
        match requeue(f, &anchors) {
            Ok(to) => {
                store
                    .mark_requeued(
                        f.id,
                        &format!("moved back to {} by `batchdrop retry`", to.display()),
                    )
                    .await?;
                let line = format!(
                    "requeued {} → {}{}",
                    f.rel_path,
                    to.display(),
                    f.sidecar
                        .as_deref()
                        .map(|s| format!(" (with its sidecar {s})"))
                        .unwrap_or_default()
                );
                // The names are the producers' (see `status`).
                println!("{}", crate::telemetry::escape_controls(&line));
                requeued += 1;
            }
            // Retrying a batch whose culprit was deleted from the failed folder (what a
            // failed batch's receipts advise) sends the others: the deleted one is said, not
            // an error. A file named alone must be there.
            Err(NotRequeued::Gone(why)) if of_batch.is_some() => {
                println!("left out: {}", crate::telemetry::escape_controls(&why));
            }
            Err(NotRequeued::Gone(why) | NotRequeued::Blocked(why)) => problems.push(why),
        }
    }
    store.close().await;
    if !problems.is_empty() {
        return Err(CommandError::Refused(problems.join("\n")));
    }
    if requeued == 0
        && let Some(batch) = of_batch
    {
        return Err(CommandError::Refused(format!(
            "none of batch {batch}'s failed files is in the failed folder any more; nothing was requeued"
        )));
    }
    println!(
        "the daemon takes {} again once stable (`batchdrop status` shows it)",
        if requeued == 1 {
            "it".to_owned()
        } else {
            format!("these {requeued} files")
        }
    );
    Ok(0)
}

/// Why a failed file was not moved back.
enum NotRequeued {
    /// It is no longer in the failed folder (deleted, or moved away, since it failed).
    Gone(String),
    /// Something is in the way or unfinished: the operator must act first.
    Blocked(String),
}

/// Moves one failed file (and its sidecar) back to where it was dropped; returns that path.
/// Everything goes through `disk`: no folder on the way is followed if it is a symlink, and
/// nothing at the drop folder's end is ever replaced.
fn requeue(f: &FileRow, anchors: &[&Path]) -> Result<PathBuf, NotRequeued> {
    if !f.finalized {
        return Err(NotRequeued::Blocked(format!(
            "{} is still being moved to the failed folder; try again in a moment",
            f.rel_path
        )));
    }
    let Some(from) = f.final_path.as_deref().map(PathBuf::from) else {
        return Err(NotRequeued::Gone(format!(
            "{} was not in its drop folder when it failed, so nothing was kept to requeue (see its receipt); drop it again into {}",
            f.rel_path, f.root
        )));
    };
    let there = |p: &Path| {
        disk::anchored(p, anchors)
            .ok_or_else(|| std::io::Error::other("not below a folder of the config"))
            .and_then(|(anchor, rest)| disk::Dir::anchor(&anchor)?.stat_file(rest, Links::Refuse))
            .is_ok()
    };
    if !there(&from) {
        return Err(NotRequeued::Gone(format!(
            "{} is no longer at {} (moved or deleted since it failed); drop it again into {}",
            f.rel_path,
            from.display(),
            f.root
        )));
    }
    let to = Path::new(&f.root).join(&f.rel_path);
    if there(&to) {
        return Err(NotRequeued::Blocked(format!(
            "cannot requeue {}: {} already exists (a newer version?); move it away first, or leave the old one in {}",
            f.rel_path,
            to.display(),
            from.display()
        )));
    }
    let side = f.sidecar.as_deref().map(|s| {
        (
            PathBuf::from(format!("{}{}", from.display(), crate::replay::SUFFIX)),
            Path::new(&f.root).join(s),
        )
    });
    if let Some((_, side_to)) = &side
        && there(side_to)
    {
        return Err(NotRequeued::Blocked(format!(
            "cannot requeue {}: its sidecar's place {} is taken; move that file away first",
            f.rel_path,
            side_to.display()
        )));
    }
    // The sidecar first: the data file must never be back without it.
    if let Some((side_from, side_to)) = &side
        && there(side_from)
    {
        move_back(side_from, side_to, anchors).map_err(|e| {
            NotRequeued::Blocked(format!("cannot move {} back: {e}", side_from.display()))
        })?;
    }
    move_back(&from, &to, anchors).map_err(|e| {
        NotRequeued::Blocked(format!(
            "cannot move {} back to {}: {e}; check the folder's permissions",
            from.display(),
            to.display()
        ))
    })?;
    // Where the archiver wrote it (the same rule finds it for files finished before the
    // store kept the place).
    let receipt = match &f.receipt_path {
        Some(path) => PathBuf::from(path),
        None => crate::receipt::path_for(&from, f.id),
    };
    if let Ok((dir, name)) = disk::folder_of(&receipt, anchors, Create::No) {
        let _ = dir.remove(name);
    }
    Ok(to)
}

/// Moves (or copies across filesystems) without replacing anything, and gives the file a new
/// mtime: to the watcher it is a new version, whatever it remembers of the old one.
fn move_back(from: &Path, to: &Path, anchors: &[&Path]) -> std::io::Result<()> {
    let (from_dir, from_name) = disk::folder_of(from, anchors, Create::No)?;
    let (to_dir, to_name) = disk::folder_of(to, anchors, Create::Shared)?;
    disk::move_file(&from_dir, from_name, &to_dir, to_name)?;
    to_dir.touch(to_name)
}
