//! `batchdrop revert BATCH`: takes a successful batch's data back out of its dataset (REVERT:
//! the platform makes it `inactive`), records it, and updates the receipts of its files, which
//! stay where they were archived. A batch of a `batchdrop push` (found by its platform id in
//! the pushes' states, `state_dir/push/*/`) is recorded as reverted in that push's state, so
//! pushes no longer count its content as ingested; its files have no receipts. A batch no
//! state here knows is reverted on the platform only.
//!
//! This module must not move files.

use std::path::Path;

use super::{CommandError, Connection, iso, known_batch, platform_only, pushed_batch};
use crate::api::BatchAction;
use crate::config::Config;
use crate::disk;
use crate::receipt;
use crate::store::{BatchState, FileState, now_ms};

pub async fn run(config: &Config, arg: &str) -> Result<u8, CommandError> {
    let (store, b, push) = match known_batch(config, arg).await? {
        Some((store, b)) => (store, b, None),
        None => match pushed_batch(config, arg).await? {
            Some((store, b, dir)) if b.state().in_flight() => {
                // Its push let go of it (`--no-wait`) or was stopped: that state cannot say
                // whether it succeeded, the platform can, and the data must be able to leave
                // now rather than after that push is run again.
                store.close().await;
                platform_only(config, arg, BatchAction::Revert).await?;
                println!(
                    "it is a push's batch (state {}) that the push did not follow to its end (--no-wait, or stopped): that state still says {} and learns nothing of this revert (running that push again records the batch as a success); to let pushes send its content again, delete that folder",
                    dir.display(),
                    b.state()
                );
                return Ok(0);
            }
            Some((store, b, dir)) => (store, b, Some(dir)),
            None => {
                platform_only(config, arg, BatchAction::Revert).await?;
                return Ok(0);
            }
        },
    };
    let label = b.label();
    if b.state() == BatchState::Reverted {
        println!("batch {label} was already reverted");
        return Ok(0);
    }
    if b.state() != BatchState::Success {
        return Err(CommandError::Refused(format!(
            "batch {label} is {}: only a successful batch can be reverted{}",
            b.state(),
            if matches!(b.state(), BatchState::Processing | BatchState::Loading) {
                format!(" (to stop it while in flight, run `batchdrop abort {label}`)")
            } else {
                String::new()
            }
        )));
    }
    if let Some(by) = &b.replaced_by {
        return Err(CommandError::Refused(format!(
            "batch {label} was replaced by batch {by}, so its data is no longer in dataset {}; to take the replacement back, run `batchdrop revert {by}`",
            b.dataset
        )));
    }
    let Some(remote) = b.remote_id().map(str::to_owned) else {
        return Err(CommandError::Refused(format!(
            "batch {label} has no platform id; there is nothing to revert"
        )));
    };
    let files = store.batch_files(b.id).await?;
    if files.iter().any(|f| !f.finalized) {
        return Err(CommandError::Refused(format!(
            "the files of batch {label} are still being archived; run the revert again once their receipts are written"
        )));
    }
    let conn = Connection::open(config).await?;
    // Asked in the sandbox the batch was created in.
    let sent = match conn.api.in_sandbox(b.sandbox.as_deref()) {
        Ok(api) => api.batch_action(&remote, BatchAction::Revert).await,
        Err(e) => Err(e),
    };
    conn.close().await;
    sent.map_err(|e| CommandError::api(&format!("revert batch {label}"), e))?;
    let at = iso(now_ms());
    store
        .mark_reverted(b.id, "reverted by the operator (`batchdrop revert`)")
        .await?;
    if let Some(dir) = push {
        store.close().await;
        println!(
            "reverted batch {remote} of a push (state {}): its data is no longer in dataset {}; its files were never moved and have no receipts, and pushes may send their content again",
            dir.display(),
            b.dataset
        );
        return Ok(0);
    }
    let mut updated = 0;
    let mut missing = Vec::new();
    for f in files
        .iter()
        .filter(|f| matches!(f.state, FileState::Done | FileState::Uploaded))
    {
        let Some(path) = f.receipt_path.clone() else {
            missing.push(f.rel_path.clone());
            continue;
        };
        let watch = config.watches.iter().find(|w| w.name == f.watch);
        let anchors = match watch {
            Some(w) => crate::archiver::anchors(w, f).to_vec(),
            None => vec![Path::new(&f.root)],
        };
        match update_receipt(Path::new(&path), &anchors, &remote, &b.dataset, &at) {
            Ok(()) => updated += 1,
            Err(e) => missing.push(format!("{} ({path}: {e})", f.rel_path)),
        }
    }
    store.close().await;
    println!(
        "reverted batch {remote}: its data is no longer in dataset {}; {updated} receipt(s) updated",
        b.dataset
    );
    if !missing.is_empty() {
        return Err(CommandError::Io(format!(
            "batch {remote} is reverted, but these receipts could not be updated: {}; their files' status says success although the data is gone",
            missing.join(", ")
        )));
    }
    Ok(0)
}

/// Rewrites one receipt in place, through `disk`: read from a regular file reached without
/// following a symlink, written back atomically (0640).
fn update_receipt(
    path: &Path,
    anchors: &[&Path],
    batch: &str,
    dataset: &str,
    at: &str,
) -> Result<(), String> {
    let (dir, name) =
        disk::folder_of(path, anchors, disk::Create::No).map_err(|e| e.to_string())?;
    let opened = dir
        .open_file(Path::new(name), disk::Links::Refuse)
        .map_err(|e| e.to_string())?;
    if opened.stat.kind != disk::Kind::File {
        return Err(format!(
            "it is {}, not a receipt",
            opened.stat.kind.describe()
        ));
    }
    let bytes = disk::read_capped(&opened.file, MAX_RECEIPT_BYTES).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_RECEIPT_BYTES {
        return Err(format!(
            "it is longer than a receipt can be ({MAX_RECEIPT_BYTES} bytes)"
        ));
    }
    let text = receipt::reverted(&bytes, batch, dataset, at)?;
    dir.write_atomically(name, &text, receipt::MODE)
        .map_err(|e| e.to_string())
}

/// Far more than any receipt batchdrop writes (a few kB, with a batch's errors).
const MAX_RECEIPT_BYTES: u64 = 16 << 20;
