//! What the emulator sets up at start, before it serves: its data dir (private, and locked
//! while it runs) and the datasets its config names.

use std::path::{Path, PathBuf};

use crate::config::EmulatorConfig;
use crate::error::EmulatorError;
use crate::schemas::{Registry, schema_ref_json};
use crate::store::{NewDataset, Store};

/// Creates the data dir readable by its owner only (0700, whatever the umask: it holds the
/// uploaded data and the IMS signing key); parents that are missing get the usual mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}

/// Creates the config's datasets, and gives them the schema, tags and identity field the
/// config names.
pub async fn setup_datasets(
    store: &Store,
    registry: &Registry,
    config: &EmulatorConfig,
) -> Result<(), EmulatorError> {
    for d in &config.datasets {
        let name = if d.name.is_empty() { &d.id } else { &d.name };
        let schema_ref = if d.schema.is_empty() {
            None
        } else {
            let s = registry.get(&d.schema).ok_or_else(|| {
                EmulatorError::Config(format!(
                    "datasets: id {:?}: schema {:?} is not registered; add it under [[schemas]] (registered: {})",
                    d.id,
                    d.schema,
                    registry.ids().join(", ")
                ))
            })?;
            Some(schema_ref_json(&s.id))
        };
        let tags = (!d.tags.is_empty()).then(|| serde_json::json!(d.tags).to_string());
        let identity = (!d.identity_field.is_empty())
            .then(|| batchdrop_xdm::normalize_pointer(&d.identity_field));
        store
            .insert_dataset_if_missing(NewDataset {
                sandbox: &d.sandbox,
                ..NewDataset::bare(&d.id, name)
            })
            .await?;
        if schema_ref.is_none() && tags.is_none() && identity.is_none() {
            continue;
        }
        store
            .update_dataset_setup(
                &d.id,
                schema_ref.as_deref(),
                tags.as_deref(),
                identity.as_deref(),
            )
            .await?;
    }
    Ok(())
}

/// An exclusive lock on the data dir (flock on `emulator.lock`), held while the emulator runs.
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    pub async fn acquire(dir: &Path) -> Result<DirLock, EmulatorError> {
        use std::os::fd::AsRawFd;
        let path: PathBuf = dir.join("emulator.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| EmulatorError::DataDir {
                path: path.clone(),
                source,
            })?;
        // A lock released a moment ago can still be held by a process forked meanwhile (the
        // descriptor is close-on-exec, but lives until the exec), and an emulator restarted
        // by a supervisor may come up while the old one exits: wait a little before refusing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(DirLock { _file: file });
            }
            if std::time::Instant::now() >= deadline {
                return Err(EmulatorError::DataDirLocked {
                    path: dir.to_path_buf(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
