//! Which bytes of a large file arrived, and making the file of them: coverage of a range by
//! the recorded chunks, the received prefix (what HEAD reports), the plan of an assembly (no
//! gap, one total), and the assembly itself, which first checks that overlapping chunks agree
//! byte for byte. File I/O only; no requests, no database.

use std::path::{Path, PathBuf};

use crate::store::{ChunkRow, Store};

/// How a large file is assembled.
pub(super) struct Plan {
    pub total: u64,
}

/// Checks that the chunks cover `0..total` without gaps and agree on the total.
pub(super) fn plan_assembly(chunks: &[ChunkRow]) -> Result<Plan, String> {
    let mut declared: Option<u64> = None;
    for c in chunks {
        if let Some(t) = c.total {
            match declared {
                Some(d) if d != t as u64 => {
                    return Err(format!(
                        "chunks disagree on the total size ({d} and {t} bytes)"
                    ));
                }
                _ => declared = Some(t as u64),
            }
        }
    }
    let mut next = 0u64;
    for c in chunks {
        let (s, e) = (c.start as u64, c.end_incl as u64);
        if s > next {
            return Err(format!(
                "bytes {next}-{} are missing (a gap before the chunk {s}-{e}); PATCH them before COMPLETE",
                s - 1
            ));
        }
        next = next.max(e + 1);
    }
    if let Some(total) = declared
        && next < total
    {
        return Err(format!(
            "bytes {next}-{} of {total} are missing; PATCH them before COMPLETE",
            total - 1
        ));
    }
    Ok(Plan { total: next })
}

/// Why a large file could not be assembled.
pub(super) enum AssembleError {
    /// Overlapping chunks disagree: nothing was written.
    Conflict(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for AssembleError {
    fn from(e: std::io::Error) -> Self {
        AssembleError::Io(e)
    }
}

/// Where a chunk's bytes are: a file, and the offset in the large file of that file's first
/// byte (0 for the file's data, where chunks sit at their offsets; the chunk's start for a
/// part of its own).
#[derive(Debug, Clone)]
pub(super) struct Source {
    path: PathBuf,
    origin: u64,
}

impl Source {
    /// Opens the source positioned at `pos` (an offset in the large file).
    fn open_at(&self, pos: u64) -> std::io::Result<std::fs::File> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(pos - self.origin))?;
        Ok(f)
    }
}

pub(super) fn sources_of(
    store: &Store,
    file_id: &str,
    chunks: &[ChunkRow],
) -> Vec<(ChunkRow, Source)> {
    chunks
        .iter()
        .map(|c| {
            let source = match c.in_place {
                true => Source {
                    path: store.data_path(file_id),
                    origin: 0,
                },
                false => Source {
                    path: store.part_path(file_id, c.seq),
                    origin: c.start as u64,
                },
            };
            (c.clone(), source)
        })
        .collect()
}

/// Makes `data` the whole file: checks first that overlapping chunks agree (nothing is
/// written if they do not), then copies the chunks kept in parts to their offsets (the
/// chunks written in place are there already: the common case copies nothing).
pub(super) fn assemble(
    chunks: &[(ChunkRow, Source)],
    data: &std::path::Path,
    total: u64,
) -> Result<(), AssembleError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut next = 0u64; // first byte no earlier chunk covers (chunks are sorted by start)
    for (i, (c, source)) in chunks.iter().enumerate() {
        let (s, e) = (c.start as u64, c.end_incl as u64);
        if s < next {
            let upto = e.min(next - 1);
            if !agrees_with(&chunks[..i], source, s, upto)? {
                return Err(AssembleError::Conflict(format!(
                    "chunk {s}-{e} overlaps an earlier chunk with different bytes (a conflicting overlap)"
                )));
            }
        }
        next = next.max(e + 1);
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(data)?;
    for (c, source) in chunks.iter().filter(|(c, _)| !c.in_place) {
        let (s, e) = (c.start as u64, c.end_incl as u64);
        let mut src = source.open_at(s)?;
        out.seek(SeekFrom::Start(s))?;
        let n = std::io::copy(&mut (&mut src).take(e + 1 - s), &mut out)?;
        if n != e + 1 - s {
            return Err(AssembleError::Io(std::io::Error::other(format!(
                "chunk part {} is shorter than its range",
                source.path.display()
            ))));
        }
    }
    out.set_len(total)?;
    out.flush()?;
    Ok(())
}

/// Whether `mine` (a source of bytes `from..=to`) has the same bytes there as the chunks
/// `earlier`, which cover that range.
fn agrees_with(
    earlier: &[(ChunkRow, Source)],
    mine: &Source,
    from: u64,
    to: u64,
) -> std::io::Result<bool> {
    let mut pos = from;
    while pos <= to {
        let Some((c, theirs)) = earlier
            .iter()
            .filter(|(c, _)| c.start as u64 <= pos && c.end_incl as u64 >= pos)
            .max_by_key(|(c, _)| c.end_incl)
        else {
            return Ok(false);
        };
        let upto = (c.end_incl as u64).min(to);
        if !same_bytes(
            &mut mine.open_at(pos)?,
            &mut theirs.open_at(pos)?,
            upto - pos + 1,
        )? {
            return Ok(false);
        }
        pos = upto + 1;
    }
    Ok(true)
}

fn same_bytes(
    a: &mut impl std::io::Read,
    b: &mut impl std::io::Read,
    mut n: u64,
) -> std::io::Result<bool> {
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    while n > 0 {
        let k = n.min(ba.len() as u64) as usize;
        a.read_exact(&mut ba[..k])?;
        b.read_exact(&mut bb[..k])?;
        if ba[..k] != bb[..k] {
            return Ok(false);
        }
        n -= k as u64;
    }
    Ok(true)
}

/// Whether `start..=end` lies wholly inside what the chunks cover.
pub(super) fn covered(chunks: &[ChunkRow], start: u64, end: u64) -> bool {
    let mut pos = start;
    // chunks are sorted by start
    loop {
        let next = chunks
            .iter()
            .filter(|c| c.start as u64 <= pos && c.end_incl as u64 >= pos)
            .map(|c| c.end_incl as u64)
            .max();
        match next {
            Some(e) if e >= end => return true,
            Some(e) => pos = e + 1,
            None => return false,
        }
    }
}

/// Whether the new chunk in `tmp` (covering start..=end) has the same bytes as the stored
/// chunks there.
pub(super) fn range_matches(
    tmp: &Path,
    start: u64,
    end: u64,
    chunks: &[(ChunkRow, Source)],
) -> std::io::Result<bool> {
    let mine = Source {
        path: tmp.to_owned(),
        origin: start,
    };
    agrees_with(chunks, &mine, start, end)
}

/// Length of the received prefix `0..n` (chunks sorted by start).
pub fn contiguous_prefix(chunks: &[ChunkRow]) -> u64 {
    let mut next = 0u64;
    for c in chunks {
        if c.start as u64 > next {
            break;
        }
        next = next.max(c.end_incl as u64 + 1);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(start: i64, end_incl: i64, total: Option<i64>) -> ChunkRow {
        ChunkRow {
            seq: 0,
            start,
            end_incl,
            total,
            in_place: true,
            acked: true,
        }
    }

    #[test]
    fn prefix_and_coverage() {
        let chunks = vec![chunk(0, 9, None), chunk(5, 14, None), chunk(20, 29, None)];
        assert_eq!(contiguous_prefix(&chunks), 15);
        assert_eq!(contiguous_prefix(&[chunk(1, 9, None)]), 0);
        assert_eq!(contiguous_prefix(&[]), 0);
        assert!(covered(&chunks, 3, 12));
        assert!(covered(&chunks, 20, 29));
        assert!(!covered(&chunks, 10, 20));
        assert!(!covered(&chunks, 0, 30));
    }

    #[test]
    fn assembly_plan_finds_gaps_and_totals() {
        assert_eq!(
            plan_assembly(&[chunk(0, 9, Some(20)), chunk(10, 19, Some(20))])
                .unwrap()
                .total,
            20
        );
        assert_eq!(
            plan_assembly(&[chunk(0, 9, None), chunk(5, 19, None)])
                .unwrap()
                .total,
            20
        );
        let gap = plan_assembly(&[chunk(0, 9, None), chunk(12, 19, None)])
            .err()
            .unwrap();
        assert!(gap.contains("bytes 10-11"), "{gap}");
        let tail = plan_assembly(&[chunk(0, 9, Some(30))]).err().unwrap();
        assert!(tail.contains("bytes 10-29 of 30"), "{tail}");
        let head = plan_assembly(&[chunk(5, 9, None)]).err().unwrap();
        assert!(head.contains("bytes 0-4"), "{head}");
        let totals = plan_assembly(&[chunk(0, 9, Some(10)), chunk(0, 9, Some(11))])
            .err()
            .unwrap();
        assert!(totals.contains("disagree"), "{totals}");
    }
}
