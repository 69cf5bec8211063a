//! `run --watch-config`: reload when the config file changes, without a SIGHUP (Kubernetes
//! updates a mounted ConfigMap in place, and nothing signals the process).
//!
//! The folder holding the file is watched, not the file: editors and Kubernetes replace it
//! (a rename, or the swap of the `..data` symlink), which a watch on the file itself would not
//! survive. A burst of events is debounced, and the daemon is only asked to reload when the
//! file's content differs from the last content seen, so unrelated files in the folder cost
//! nothing. This module only notices changes; the reload itself (a bad file keeps the running
//! config and says so) is the daemon's, the same as for SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// How long the folder must stay quiet before the file is looked at.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// The longest a change waits for the folder to go quiet.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Why the config file cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot watch the config file's folder {folder} for --watch-config: {source}; reload with SIGHUP instead, or raise fs.inotify.max_user_watches"
)]
pub struct WatchConfigError {
    folder: PathBuf,
    source: notify::Error,
}

/// Starts watching `config`; each change of its content wakes `reload` once, until `shutdown`.
pub fn spawn(
    config: &Path,
    reload: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<(), WatchConfigError> {
    let file = std::path::absolute(config).unwrap_or_else(|_| config.to_owned());
    let folder = file
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("/"));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let watched = file.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| may_change(&e, &watched)) {
            let _ = events_tx.send(());
        }
    })
    .and_then(|mut watcher| {
        watcher.watch(&folder, notify::RecursiveMode::NonRecursive)?;
        Ok(watcher)
    })
    .map_err(|source| WatchConfigError {
        folder: folder.clone(),
        source,
    })?;
    tracing::info!(file = %file.display(), "watching the config file: a change reloads it");
    tokio::spawn(async move {
        let mut last = digest(&file);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = events.recv() => if event.is_none() { break },
            }
            // Debounce: wait until the folder stayed quiet for DEBOUNCE (at most MAX_DELAY,
            // so that a busy folder cannot put a change off for ever).
            let deadline = tokio::time::Instant::now() + MAX_DELAY;
            while tokio::time::Instant::now() < deadline {
                match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                    Ok(Some(())) => continue,
                    _ => break,
                }
            }
            let now = digest(&file);
            if now != last {
                tracing::info!(file = %file.display(), "the config file changed: reloading");
                last = now;
                reload.notify_one();
            }
        }
        let _ = watcher.unwatch(&folder);
    });
    Ok(())
}

/// Whether `event` may have changed what `file` reads: anything done to `file` itself, and
/// files or links appearing, going or renamed in its folder (an editor's or Kubernetes'
/// replacement), but not reads, nor writes to other files (a log file beside the config).
fn may_change(event: &notify::Event, file: &Path) -> bool {
    use notify::EventKind;
    match event.kind {
        // Reading the file (this module does, to compare it) must not count as a change.
        EventKind::Access(notify::event::AccessKind::Close(notify::event::AccessMode::Write)) => {
            event.paths.iter().any(|p| p == file)
        }
        EventKind::Access(_) => false,
        EventKind::Modify(notify::event::ModifyKind::Data(_))
        | EventKind::Modify(notify::event::ModifyKind::Metadata(_)) => {
            event.paths.iter().any(|p| p == file)
        }
        _ => true,
    }
}

/// The file's content digest; `None` while it cannot be read (mid-replacement): a file that
/// comes back changed is then seen as a change.
fn digest(file: &Path) -> Option<[u8; 32]> {
    std::fs::read(file)
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into())
}
