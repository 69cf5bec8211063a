//! A JSON Lines file checked in blocks on several threads: the stream is read in order on the
//! calling thread (so a reader that hashes what passes through it sees every byte once, in
//! order), cut into blocks at line ends, and each block is checked by a worker as
//! `Validator::json_lines` checks the stream, from the row it starts at. The findings are
//! merged in row order, so the result is the one a single pass gives: the same records, bad
//! rows, and first problems with their rows.
//!
//! Memory stays bounded: a few blocks in flight. A line longer than a block grows its block up
//! to the longest record read (`MAX_RECORD_BYTES`); past that, the rest of the file is checked
//! in one pass on the calling thread, as a single pass would.
//!
//! It checks; it must not open files or decide what happens to a file with bad rows.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::sync::mpsc;

use super::validate::{FileCheck, MAX_PROBLEMS_KEPT, MAX_RECORD_BYTES, Validator};

/// The size a block is cut at (at the last line end in it).
const BLOCK_BYTES: usize = 1 << 20;
/// Workers at most; a machine with fewer cores gets one per core.
const MAX_WORKERS: usize = 4;

/// One block of whole lines and the rows before it.
struct Block {
    index: usize,
    rows_before: u64,
    bytes: Vec<u8>,
}

impl Validator {
    /// Checks the JSON Lines records `reader` holds, in blocks on worker threads when there is
    /// more than one block; the result is the one of `json_lines` over the whole stream.
    pub(super) fn json_lines_in_blocks(&self, mut reader: impl Read) -> io::Result<FileCheck> {
        let mut first = Vec::with_capacity(BLOCK_BYTES);
        let ended = fill(&mut reader, &mut first, BLOCK_BYTES)?;
        if ended {
            // One block: no thread is worth starting.
            let mut out = FileCheck::default();
            self.json_lines(first.as_slice(), 0, &mut out)?;
            return Ok(out);
        }
        let workers = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_WORKERS);
        // Bounded: the reader waits while the workers are behind (memory stays flat).
        let (to_check, blocks) = mpsc::sync_channel::<Block>(workers);
        let blocks = std::sync::Mutex::new(blocks);
        let (report, checked) = mpsc::channel::<(usize, io::Result<FileCheck>)>();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let blocks = &blocks;
                let report = report.clone();
                scope.spawn(move || {
                    loop {
                        let next = blocks.lock().unwrap().recv();
                        let Ok(block) = next else { return };
                        let mut out = FileCheck::default();
                        let result = self
                            .json_lines(block.bytes.as_slice(), block.rows_before, &mut out)
                            .map(|()| out);
                        if report.send((block.index, result)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(report);
            let cut = self.cut_blocks(&mut reader, first, &to_check);
            drop(to_check);
            let mut found: BTreeMap<usize, FileCheck> = BTreeMap::new();
            for (index, result) in checked {
                found.insert(index, result?);
            }
            let (blocks, tail) = cut?;
            let mut out = FileCheck::default();
            for index in 0..blocks {
                let block = found.remove(&index).ok_or_else(|| {
                    io::Error::other("a block of the file was not checked (a worker stopped)")
                })?;
                merge(&mut out, block);
            }
            if let Some(tail) = tail {
                merge(&mut out, tail);
            }
            Ok(out)
        })
    }

    /// Reads the stream on in blocks of whole lines, starting with `pending` (a full block
    /// read already), and sends them to the workers. Returns how many blocks it sent, and the
    /// findings of the rest of the file when a line was too long for a block (checked here).
    fn cut_blocks(
        &self,
        reader: &mut impl Read,
        mut pending: Vec<u8>,
        to_check: &mpsc::SyncSender<Block>,
    ) -> io::Result<(usize, Option<FileCheck>)> {
        let mut index = 0;
        let mut rows_before = 0u64;
        loop {
            let mut ended = fill(reader, &mut pending, BLOCK_BYTES)?;
            // A block ends at a line end: grow it until one comes, up to the longest record.
            let mut end = pending.iter().rposition(|b| *b == b'\n');
            while end.is_none() && !ended && pending.len() <= MAX_RECORD_BYTES + 1 {
                let from = pending.len();
                ended = fill(reader, &mut pending, from + BLOCK_BYTES)?;
                end = pending[from..]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map(|i| from + i);
            }
            let cut = match end {
                _ if ended => pending.len(),
                Some(end) => end + 1,
                None => {
                    // A line longer than any record: the rest is checked in one pass.
                    let mut tail = FileCheck::default();
                    let rest = BufReader::new(pending.as_slice().chain(reader));
                    self.json_lines(rest, rows_before, &mut tail)?;
                    return Ok((index, Some(tail)));
                }
            };
            let next = pending.split_off(cut);
            let rows = count_lines(&pending);
            if !pending.is_empty() {
                let block = Block {
                    index,
                    rows_before,
                    bytes: std::mem::replace(&mut pending, Vec::with_capacity(BLOCK_BYTES)),
                };
                if to_check.send(block).is_err() {
                    return Err(io::Error::other("the checking workers stopped"));
                }
                index += 1;
            }
            rows_before += rows;
            pending.extend_from_slice(&next);
            if ended && pending.is_empty() {
                return Ok((index, None));
            }
        }
    }
}

/// Reads into `buf` until it holds `upto` bytes or the stream ends; returns whether it ended.
fn fill(reader: &mut impl Read, buf: &mut Vec<u8>, upto: usize) -> io::Result<bool> {
    while buf.len() < upto {
        let want = (upto - buf.len()) as u64;
        match Read::take(&mut *reader, want).read_to_end(buf) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// The line ends in `bytes`. The reading thread counts every byte of the file (it numbers the
/// blocks' rows before they are checked), so this must keep up with the read: the bytes are
/// compared in runs of 255, whose matches a `u8` can add up, which the compiler turns into
/// wide vector compares.
fn count_lines(bytes: &[u8]) -> u64 {
    bytes
        .chunks(255)
        .map(|run| {
            let ends: u8 = run.iter().map(|b| u8::from(*b == b'\n')).sum();
            u64::from(ends)
        })
        .sum()
}

/// Adds the findings of the next rows to `out`, keeping the first problems in row order.
fn merge(out: &mut FileCheck, next: FileCheck) {
    out.records += next.records;
    out.bad_rows += next.bad_rows;
    let room = MAX_PROBLEMS_KEPT.saturating_sub(out.problems.len());
    out.problems.extend(next.problems.into_iter().take(room));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::validate::tests::validator;

    /// One pass over the whole stream, on this thread: what the blocks must add up to.
    fn one_pass(text: &[u8]) -> FileCheck {
        let mut out = FileCheck::default();
        validator().json_lines(text, 0, &mut out).unwrap();
        out
    }

    /// A file of several blocks: good rows, with bad ones (of every kind) here and there,
    /// lines crossing block boundaries, blank lines, a BOM, and no line end at the end.
    fn many_blocks() -> Vec<u8> {
        let mut text = b"\xEF\xBB\xBF".to_vec();
        let mut row = 0u64;
        while text.len() < 3 * BLOCK_BYTES + 12345 {
            row += 1;
            let line = match row % 9973 {
                17 => "{\"id\": \"seven\"}".to_owned(),
                2000 => "{oops".to_owned(),
                4000 => String::new(),
                6000 => format!("{{\"id\": {row}, \"name\": \"far too long\"}}"),
                8000 => "[1]".to_owned(),
                _ => format!("{{\"id\": {row}, \"name\": \"n{}\"}}", row % 1000),
            };
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
        text.extend_from_slice(b"{\"name\": \"last\"}");
        text
    }

    #[test]
    fn line_ends_are_counted_across_runs() {
        for len in [0, 1, 254, 255, 256, 510, 511, 4096 + 7] {
            for every in [1, 2, 3, 255, 1000] {
                let bytes: Vec<u8> = (0..len)
                    .map(|i| if i % every == 0 { b'\n' } else { b'x' })
                    .collect();
                let naive = bytes.iter().filter(|b| **b == b'\n').count() as u64;
                assert_eq!(count_lines(&bytes), naive, "len {len}, every {every}");
            }
        }
    }

    #[test]
    fn blocks_add_up_to_one_pass_rows_and_all() {
        let text = many_blocks();
        let blocks = validator().json_lines_in_blocks(text.as_slice()).unwrap();
        let whole = one_pass(&text);
        assert_eq!(blocks, whole);
        // And the rows are the file's lines (not counted per block).
        let rows: Vec<(u64, &str)> = blocks
            .problems
            .iter()
            .take(5)
            .map(|p| (p.row, p.code.as_str()))
            .collect();
        assert_eq!(
            rows,
            vec![
                (17, "INGEST-1542-400"),
                (2000, super::super::validate::UNPARSABLE),
                (6000, "INGEST-1543-400"),
                (8000, super::super::validate::UNPARSABLE),
                (9973 + 17, "INGEST-1542-400"),
            ]
        );
        let last = blocks.problems.last().unwrap();
        assert_eq!(
            last.field.as_deref(),
            Some("/id"),
            "the last row lacks its id"
        );
        assert!(blocks.records > 40_000, "{}", blocks.records);
    }

    #[test]
    fn a_line_longer_than_any_record_sends_the_rest_through_one_pass() {
        let mut text = Vec::new();
        for row in 1..=40_000u64 {
            text.extend_from_slice(format!("{{\"id\": {row}}}\n").as_bytes());
        }
        // Row 40,001: longer than a record may be (and longer than a block).
        text.extend_from_slice(b"{\"id\": 1, \"pad\": \"");
        text.resize(text.len() + MAX_RECORD_BYTES + 10, b'x');
        text.extend_from_slice(b"\"}\n{\"id\": \"x\"}\n{\"id\": 3}\n");
        let blocks = validator().json_lines_in_blocks(text.as_slice()).unwrap();
        assert_eq!(blocks, one_pass(&text));
        let rows: Vec<u64> = blocks.problems.iter().map(|p| p.row).collect();
        assert_eq!(rows, vec![40_001, 40_002]);
        assert_eq!(blocks.records, 40_003);
    }

    #[test]
    fn problems_kept_are_the_first_ones_across_blocks() {
        let mut text = Vec::new();
        for row in 1..=200_000u64 {
            let line = if row % 1000 == 0 {
                "{\"id\": \"x\"}\n".to_owned()
            } else {
                format!("{{\"id\": {row}}}\n")
            };
            text.extend_from_slice(line.as_bytes());
        }
        let blocks = validator().json_lines_in_blocks(text.as_slice()).unwrap();
        assert_eq!(blocks.bad_rows, 200);
        assert_eq!(blocks.problems.len(), MAX_PROBLEMS_KEPT);
        assert_eq!(blocks.problems.last().unwrap().row, 100_000);
        assert_eq!(blocks, one_pass(&text));
    }
}
