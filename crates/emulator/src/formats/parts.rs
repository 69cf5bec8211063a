//! Reading one big file in parts, each part on its own thread, such that the parts' results
//! put together in order are those of reading the file whole: which formats may be cut
//! ([`splits`]), where ([`line_parts`]: at line starts), reading one part
//! ([`Reader::read_part`]), and numbering a part's failures as in the whole file
//! ([`RowFailure::renumber`]). How many parts, on which threads, and the merge of their
//! results are the caller's.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use super::{Cancelled, FileOutcome, InputFormat, ReadStop, Reader, RowFailure, unreadable};

/// Whether files of this format can be cut into parts read on their own: JSON Lines only.
/// Its reader takes a file line by line, whatever the lines hold (a newline cannot occur
/// inside a JSON value, and a bad line is one failed row), so a cut right after a newline is
/// where the reader of the whole file starts a record too. Not the others: a CSV row may hold
/// newlines inside quotes and a multi-line JSON element spans lines, so where a record starts
/// is only known by reading from the file's start; a Parquet file is not cut by bytes.
pub fn splits(fmt: &InputFormat) -> bool {
    !fmt.multi_line_json && !matches!(fmt.format.as_str(), "csv" | "parquet")
}

/// The file at `path` (`size` bytes) cut into at most `parts` ranges of about equal size, in
/// order; each but the first starts right after a newline. Fewer when the lines are too long
/// to cut it so (one range when the file has no newline before its end).
pub fn line_parts(path: &Path, size: u64, parts: usize) -> std::io::Result<Vec<Range<u64>>> {
    let mut file = File::open(path)?;
    let mut starts = vec![0u64];
    let mut buf = vec![0u8; 64 * 1024];
    for k in 1..parts as u64 {
        let last = *starts.last().unwrap_or(&0);
        // A newline right before the even cut keeps it there.
        let from = (size * k / parts as u64).max(last + 1) - 1;
        match next_line_start(&mut file, from, &mut buf)? {
            Some(start) if start < size && start > last => starts.push(start),
            Some(_) => {}
            None => break,
        }
    }
    let ends = starts.iter().skip(1).copied().chain([size]);
    Ok(starts.iter().zip(ends).map(|(&a, b)| a..b).collect())
}

/// The offset right after the first newline at or after `at`, if any.
fn next_line_start(file: &mut File, mut at: u64, buf: &mut [u8]) -> std::io::Result<Option<u64>> {
    file.seek(SeekFrom::Start(at))?;
    loop {
        let n = file.read(buf)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(Some(at + i as u64 + 1));
        }
        at += n as u64;
    }
}

/// What reading one part of a file gave.
#[derive(Debug, Default)]
pub struct PartOutcome {
    /// Its records, numbered from the part's start.
    pub outcome: FileOutcome,
    /// How many lines it holds: what the next part's rows are numbered after.
    pub lines: u64,
}

impl Reader<'_> {
    /// Reads `range` of a file whose format [`splits`], a range of [`line_parts`], as the
    /// reader of the whole file reads those bytes, but with rows numbered from the range's
    /// start (see [`RowFailure::renumber`]). `Err(Cancelled)` when the emulator is shutting
    /// down.
    pub fn read_part(
        &mut self,
        path: &Path,
        display_name: &str,
        range: Range<u64>,
    ) -> Result<PartOutcome, Cancelled> {
        let mut outcome = FileOutcome::default();
        let mut read = || -> Result<u64, ReadStop> {
            let mut file = File::open(path)?;
            file.seek(SeekFrom::Start(range.start))?;
            let part = BufReader::with_capacity(1 << 20, file.take(range.end - range.start));
            self.json_lines(part, range.start == 0, display_name, &mut outcome)
        };
        match read() {
            Ok(lines) => Ok(PartOutcome { outcome, lines }),
            Err(ReadStop::Cancelled) => Err(Cancelled),
            Err(ReadStop::Io(e)) => {
                outcome.file_error = Some(unreadable(display_name, &e));
                Ok(PartOutcome { outcome, lines: 0 })
            }
        }
    }
}

impl RowFailure {
    /// This failure of a part read by [`Reader::read_part`] (of file `name`), numbered as in
    /// the whole file, where `lines_before` lines precede the part.
    pub fn renumber(&mut self, name: &str, lines_before: u64) {
        if let Some(row) = &mut self.row {
            *row += lines_before;
        }
        for issue in &mut self.issues {
            renumber(&mut issue.message, name, lines_before);
        }
    }
}

/// A message about a row of a part of file `name`, numbered as in the whole file: every
/// message about a JSON Lines row starts with the row's label, `file '{name}' row {row}`
/// (see `Reader::checked` and the JSON Lines reader), and only that number changes.
pub fn renumber(message: &mut String, name: &str, lines_before: u64) {
    let label = format!("file '{name}' row ");
    let Some(rest) = message.strip_prefix(&label) else {
        return;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Ok(row) = rest[..digits].parse::<u64>() else {
        return;
    };
    *message = format!("{label}{}{}", row + lines_before, &rest[digits..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(content: &[u8], parts: usize) -> Vec<Range<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, content).unwrap();
        line_parts(&path, content.len() as u64, parts).unwrap()
    }

    #[test]
    fn a_file_is_cut_right_after_newlines_into_ranges_that_cover_it() {
        let content = b"aaaa\nbbbb\ncccc\ndddd\n";
        assert_eq!(cut(content, 2), vec![0..10, 10..20]);
        assert_eq!(cut(content, 4), vec![0..5, 5..10, 10..15, 15..20]);
        assert_eq!(cut(content, 3), vec![0..10, 10..15, 15..20]);
        // No newline but the last: one range.
        assert_eq!(cut(b"xxxxxxxxxxxxxxxx\n", 3), vec![0..17]);
        // No newline at the end: the last part ends with the file.
        assert_eq!(cut(b"ab\ncd\nef", 3), vec![0..3, 3..6, 6..8]);
        // A long line swallows the cuts that fall inside it.
        let mut long = vec![b'x'; 100];
        long.extend_from_slice(b"\ny\nz\n");
        assert_eq!(cut(&long, 4), vec![0..101, 101..103, 103..105]);
    }

    #[test]
    fn only_the_row_label_of_a_message_is_renumbered() {
        let mut m = "file 'a b' row 12: row 12 is bad".to_owned();
        renumber(&mut m, "a b", 100);
        assert_eq!(m, "file 'a b' row 112: row 12 is bad");
        let mut other = "file 'c' row 3: x".to_owned();
        renumber(&mut other, "a b", 100);
        assert_eq!(other, "file 'c' row 3: x");
    }
}
