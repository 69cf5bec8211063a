//! The local check of a queued file before it is batched: one read of the version queued
//! (opened as the batcher opens it for hashing, checked against the queued identity, bounded
//! by the queued size) feeds both the SHA-256 and the record check, streaming, so memory stays
//! flat and the file is read once (a Parquet file twice: its footer comes first).
//!
//! It reads; deciding what happens to a file with bad rows is the batcher's (`validate` of
//! the watch), recording it the store's.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use super::validate::{FileCheck, Validator};
use crate::format::Format;
use crate::store::FileRow;

/// What one read of a queued file gave.
#[derive(Debug)]
pub struct Checked {
    pub sha256: String,
    pub check: FileCheck,
}

/// Reads the queued version of `file` once: its hash and its records' check. `Ok(None)` when
/// what is there now is not the version queued (or the system is short of descriptors): try
/// again later.
pub fn check_queued(validator: &Validator, file: &FileRow) -> io::Result<Option<Checked>> {
    let Some(opened) = crate::batcher::open_queued(file)? else {
        return Ok(None);
    };
    let queued = file.identity();
    let mut reader = Hashing {
        inner: (&opened.file).take(queued.size),
        hasher: Sha256::new(),
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
    Ok(Some(Checked {
        sha256: format!("{:x}", reader.hasher.finalize()),
        check,
    }))
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
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
