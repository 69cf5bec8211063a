//! The SHA-256 of a large file whose every byte is on the platform, taken after them: the
//! hasher behind the upload's read finishing (see `transfer::Hash::Behind`), or, after a stop
//! that cut it off, the file read again. It checks that the hash is of the bytes sent (the
//! descriptor's identity is still the one uploaded); it must not record anything (the batch's
//! state machine in `mod.rs` does).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::read::{Hashing, open_for_upload};
use crate::disk::{self, Identity, Kind};
use crate::store::FileRow;

/// The SHA-256 of a file whose bytes are on the platform, still being computed from its
/// descriptor (see `transfer::Hash::Behind`).
pub(super) struct Behind {
    pub(super) file_id: i64,
    pub(super) rel_path: String,
    recorded: Identity,
    /// The descriptor the bytes were read from, to tell that they did not change since.
    file: std::fs::File,
    hashing: Hashing,
}

impl Behind {
    /// The hash `hashing` computes of `f`, read from `file`, a descriptor of `f` as queued.
    pub(super) fn new(f: &FileRow, file: std::fs::File, hashing: Hashing) -> Behind {
        Behind {
            file_id: f.id,
            rel_path: f.rel_path.clone(),
            recorded: f.identity(),
            file,
            hashing,
        }
    }

    /// The hex SHA-256, or why it is not the hash of the bytes sent: a read error, or the file
    /// was written in place after its upload (its descriptor's size or mtime moved).
    pub(super) async fn hash(self) -> Result<String, String> {
        let sha = self.hashing.finish().await.map_err(|e| e.to_string())?;
        unchanged(&self.file, self.recorded, "after its upload")?;
        Ok(sha)
    }
}

/// The SHA-256 of a file sent before a stop that came before its hash was recorded, read
/// again from the disk, if it is still the version sent (blocking).
pub(super) fn hash_again(f: &FileRow) -> Result<String, String> {
    let recorded = f.identity();
    let opened = open_for_upload(Path::new(&f.root), &f.abs_path(), recorded, false)
        .map_err(|e| e.to_string())?
        .opened;
    if opened.stat.kind != Kind::File || opened.stat.identity != recorded {
        return Err("it changed on disk since its upload".to_owned());
    }
    let mut state = Sha256::new();
    disk::hash_range(&opened.file, 0, recorded.size, &mut state).map_err(|e| e.to_string())?;
    unchanged(&opened.file, recorded, "while it was hashed")?;
    Ok(format!("{:x}", state.finalize()))
}

/// That the descriptor is still the version `recorded` (its size and mtime did not move), so
/// that a hash read from it is of the bytes sent; or why not.
fn unchanged(file: &std::fs::File, recorded: Identity, when: &str) -> Result<(), String> {
    match file.metadata() {
        Ok(m) if Identity::of(&m) == recorded => Ok(()),
        Ok(_) => Err(format!("it was written to {when}")),
        Err(e) => Err(e.to_string()),
    }
}
