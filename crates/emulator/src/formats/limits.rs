//! How much of one record a reader may hold: the line reader of JSON Lines and CSV headers
//! ([`next_line`]), and the budget that cuts a streaming parser off one record past
//! `MAX_RECORD_BYTES` ([`RecordBudget`], [`Capped`]), and the message of a record refused so.

use std::io::{BufRead, Read};

use super::MAX_RECORD_BYTES;

/// What [`next_line`] read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// Nothing: the end of the file.
    End,
    /// A line (with its `\n`, if any), in the buffer.
    Read,
    /// A line of this many bytes (without its `\n`) beyond `MAX_RECORD_BYTES`: read to its
    /// end, not kept.
    TooLong { bytes: u64 },
}

/// Reads the next line into `line`, keeping at most `MAX_RECORD_BYTES` of it.
pub(super) fn next_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<Line> {
    line.clear();
    let mut total = 0u64;
    let mut kept = true;
    let mut ended = false;
    while !ended {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let take = match memchr::memchr(b'\n', buf) {
            Some(i) => {
                ended = true;
                i + 1
            }
            None => buf.len(),
        };
        total += take as u64;
        if kept && total - u64::from(ended) > MAX_RECORD_BYTES {
            kept = false;
            line.clear();
        }
        if kept {
            line.extend_from_slice(&buf[..take]);
        }
        r.consume(take);
    }
    Ok(match (total, kept) {
        (0, _) => Line::End,
        (_, true) => Line::Read,
        (bytes, false) => Line::TooLong {
            bytes: bytes - u64::from(ended),
        },
    })
}

/// How much one record may read: reads through [`Capped`] fail once more than `limit` bytes
/// were read since the last `mark` (set at each record's start), so a parser never holds more
/// of one record than that. A buffer above `Capped` has read ahead when the mark is set, so a
/// record of up to `limit` bytes always passes, and one longer than `limit` plus the buffer
/// never does.
pub(super) struct RecordBudget {
    limit: u64,
    read: std::cell::Cell<u64>,
    mark: std::cell::Cell<u64>,
    tripped: std::cell::Cell<bool>,
}

impl RecordBudget {
    pub(super) fn new(limit: u64) -> RecordBudget {
        RecordBudget {
            limit,
            read: 0.into(),
            mark: 0.into(),
            tripped: false.into(),
        }
    }

    /// A record starts here.
    pub(super) fn mark(&self) {
        self.mark.set(self.read.get());
    }

    /// A read failed because the record went past the limit.
    pub(super) fn tripped(&self) -> bool {
        self.tripped.get()
    }
}

/// A reader that stops one record at its [`RecordBudget`].
pub(super) struct Capped<'b, R> {
    pub(super) inner: R,
    pub(super) budget: &'b RecordBudget,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let b = self.budget;
        if b.read.get() - b.mark.get() > b.limit {
            b.tripped.set(true);
            return Err(std::io::Error::other(format!(
                "a record is longer than {MAX_RECORD_BYTES} bytes"
            )));
        }
        let n = self.inner.read(buf)?;
        b.read.set(b.read.get() + n as u64);
        Ok(n)
    }
}

/// The failure message of a record beyond `MAX_RECORD_BYTES` (`bytes`, when known).
pub(super) fn too_large(name: &str, row: &str, bytes: u64) -> String {
    let size = if bytes > MAX_RECORD_BYTES {
        format!("{bytes} bytes long")
    } else {
        "too long".to_owned()
    };
    format!(
        "file '{name}' {row}: the record is {size}, over the {MAX_RECORD_BYTES} bytes (16 MiB) one record may take; \
         split it into smaller records (the platform's own limits are far lower, e.g. 100 KB per Profile record)"
    )
}
