//! The local check of a queued file before it is batched: one read of the version queued
//! (opened as the batcher opens it for hashing, checked against the queued identity, bounded
//! by the queued size) feeds both the SHA-256 and the record check, streaming, so memory stays
//! flat and the file is read once (a Parquet file twice: its footer comes first). When the
//! file's early hash (`early_hash`) got somewhere, the read goes on from it: no byte is
//! hashed twice.
//!
//! It reads; deciding what happens to a file with bad rows is the batcher's (`validate` of
//! the watch), recording it the store's.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use super::validate::{FileCheck, Validator};
use crate::early_hash::Outcome;
use crate::format::Format;
use crate::store::FileRow;

/// What one read of a queued file gave.
#[derive(Debug)]
pub struct Checked {
    pub sha256: String,
    pub check: FileCheck,
}

/// Reads the queued version of `file` once: its hash and its records' check. `early` is what
/// its early hash gave, of exactly this version (taken and handed over): a whole hash, or the
/// hash of its first bytes to go on from. `Ok(None)` when what is there now is not the
/// version queued, or it changed while it was read (or the system is short of descriptors):
/// try again later.
pub fn check_queued(
    validator: &Validator,
    file: &FileRow,
    early: Option<Outcome>,
) -> io::Result<Option<Checked>> {
    let Some(opened) = crate::batcher::open_queued(file)? else {
        return Ok(None);
    };
    let queued = file.identity();
    let (hasher, hash_from, known) = match early {
        Some(Outcome::Done(sha256)) => (Sha256::new(), queued.size, Some(sha256)),
        Some(Outcome::HandedOver { at, state }) => (state, at, None),
        Some(Outcome::Failed | Outcome::Cancelled) | None => (Sha256::new(), 0, None),
    };
    let mut reader = Hashing {
        inner: (&opened.file).take(queued.size),
        hasher,
        hash_from,
        read: 0,
    };
    let check = if file.format == Format::Parquet {
        // Its footer comes first: hashed in a pass of its own, then read from the file.
        io::copy(&mut reader, &mut io::sink())?;
        validator.check_parquet(opened.file.try_clone()?)?
    } else {
        validator.check(&mut reader, file.format, file.multiline_json)?
    };
    // A check that stopped early (a syntax error) leaves bytes to hash.
    io::copy(&mut reader, &mut io::sink())?;
    if reader.read != queued.size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the file ends after {} of the {} bytes recorded",
                reader.read, queued.size
            ),
        ));
    }
    // A write while it was read changed its mtime: the bytes read may mix versions, so
    // neither the hash nor the verdict is this version's.
    if !crate::batcher::still_queued(&opened.file, file) {
        return Ok(None);
    }
    let sha256 = known.unwrap_or_else(|| format!("{:x}", reader.hasher.finalize()));
    Ok(Some(Checked { sha256, check }))
}

/// A reader that hashes what passes through it from byte `hash_from` on (the bytes before
/// are in `hasher` already).
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    hash_from: u64,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let end = self.read + n as u64;
        if end > self.hash_from {
            let skip = self.hash_from.saturating_sub(self.read) as usize;
            self.hasher.update(&buf[skip..n]);
        }
        self.read = end;
        Ok(n)
    }
}

/// The reason a file with bad rows carries (its receipt's `reason`): the platform's codes,
/// rows and fields, the first few of them, and what to do.
pub fn refusal(file: &FileRow, check: &FileCheck) -> String {
    const SHOWN: usize = 5;
    let listed: Vec<String> = check
        .problems
        .iter()
        .take(SHOWN)
        .map(|p| match p.row {
            // The file as a whole (a Parquet file the platform would refuse).
            0 => format!("file '{}': {} ({})", file.rel_path, p.message, p.code),
            row => format!(
                "file '{}' row {row}: {} ({})",
                file.rel_path, p.message, p.code
            ),
        })
        .collect();
    let more = check.problems.len().saturating_sub(SHOWN);
    if check.problems.first().is_some_and(|p| p.row == 0) {
        return format!(
            "{} would be refused by the platform as a whole, so it was not uploaded: {}; \
             fix the file and drop it again (check it with `batchdrop validate`), or set validate = \"warn\" or \"off\" on the watch",
            file.rel_path,
            listed.join("; ")
        );
    }
    format!(
        "{} of {} records of {} break the dataset's schema and would be refused by the platform, so it was not uploaded: {}{}; \
         fix those rows and drop the file again (see them all with `batchdrop validate`), or set validate = \"warn\" or \"off\" on the watch",
        check.bad_rows,
        check.records,
        file.rel_path,
        listed.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::Identity;

    /// `body` written to `name` in `dir`, as queued.
    fn queued(dir: &std::path::Path, name: &str, body: &[u8]) -> FileRow {
        std::fs::write(dir.join(name), body).unwrap();
        let identity = Identity::read(&dir.join(name)).unwrap();
        let mut f = crate::schedule::tests::file(1, "json", identity.size as i64, 0);
        f.root = dir.to_string_lossy().into_owned();
        f.rel_path = name.into();
        (f.dev, f.ino, f.mtime_ns) = (identity.dev as i64, identity.ino as i64, identity.mtime_ns);
        f
    }

    #[test]
    fn the_check_hashes_only_the_bytes_its_early_hash_had_not() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"{\"id\":1}\n{\"id\":2,\"name\":\"Ann\"}\n{\"id\":3}\n";
        let file = queued(dir.path(), "people.json", body);
        let validator = crate::preflight::validate::tests::validator();
        let check = |early| check_queued(&validator, &file, early).unwrap().unwrap();
        let whole = format!("{:x}", Sha256::digest(body));

        let fresh = check(None);
        assert_eq!(fresh.sha256, whole);
        assert_eq!((fresh.check.records, fresh.check.bad_rows), (3, 0));
        for at in [0, 1, 9, 20, body.len() as u64] {
            // The early hash's state after the first `at` bytes: the whole hash in the end.
            let mut state = Sha256::new();
            state.update(&body[..at as usize]);
            let on = check(Some(Outcome::HandedOver { at, state }));
            assert_eq!(on.sha256, whole, "handed over at {at}");
            assert_eq!(on.check, fresh.check, "handed over at {at}");
        }
        // A state of other bytes shows that the first ones were not hashed again.
        let mut other = Sha256::new();
        other.update(b"XXXXXXXXX");
        let mut expected = other.clone();
        expected.update(&body[9..]);
        let on = check(Some(Outcome::HandedOver {
            at: 9,
            state: other,
        }));
        assert_eq!(on.sha256, format!("{:x}", expected.finalize()));
        // A whole hash: the check reads only to check.
        let planted = "e".repeat(64);
        let known = check(Some(Outcome::Done(planted.clone())));
        assert_eq!(known.sha256, planted);
        assert_eq!(known.check, fresh.check);
        // One that failed says nothing.
        assert_eq!(check(Some(Outcome::Failed)).sha256, whole);
    }
}
