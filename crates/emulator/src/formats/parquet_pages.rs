//! What a Parquet file may make the emulator's reader hold. Pages are read one at a time, so
//! each page header is checked before its page is read (none larger than
//! `MAX_PARQUET_PAGE_BYTES`, compressed or not: a small page that inflates to gigabytes is
//! refused before it is inflated); a column chunk may not inflate beyond what its metadata
//! declares, so the declared sizes can be trusted; a row group may declare at most
//! `MAX_ROW_GROUP_BYTES`; and rows are decoded in batches sized from their declared width.
//!
//! It reads only page headers and metadata; decoding rows is `parquet`'s business.

use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{ChunkReader, Length};

use super::MAX_PARQUET_PAGE_BYTES;

/// The most a row group may declare, uncompressed, over all its columns.
pub const MAX_ROW_GROUP_BYTES: u64 = 1024 * 1024 * 1024;

/// About how much one batch of decoded rows may take (from the rows' declared width).
const BATCH_BYTES: u64 = 16 * 1024 * 1024;
const MAX_BATCH_ROWS: usize = 8192;

/// The file's column chunks, by byte range, with what their pages have inflated to so far.
#[derive(Debug, Default)]
pub struct PageCheck {
    chunks: Mutex<Vec<Chunk>>,
    /// Why the file was refused, in words for the batch's error.
    refusal: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Chunk {
    start: u64,
    end: u64,
    declared: u64,
    inflated: u64,
    /// Offset of the last page header counted (pages are read in order).
    last_page: Option<u64>,
}

impl PageCheck {
    /// Why the file was refused, if it was.
    pub fn refusal(&self) -> Option<String> {
        self.refusal.lock().expect("parquet refusal").clone()
    }

    fn refuse(&self, why: String) -> ParquetError {
        *self.refusal.lock().expect("parquet refusal") = Some(why.clone());
        ParquetError::General(why)
    }

    /// Learns the column chunks from the metadata, and refuses row groups that declare more
    /// than `MAX_ROW_GROUP_BYTES`. Returns the batch size to decode with.
    pub fn plan(&self, metadata: &ParquetMetaData) -> Result<usize, String> {
        let mut chunks = Vec::new();
        let mut widest_row = 1u64;
        for (i, group) in metadata.row_groups().iter().enumerate() {
            let declared: u64 = group
                .columns()
                .iter()
                .map(|c| u64::try_from(c.uncompressed_size()).unwrap_or(u64::MAX))
                .fold(0, u64::saturating_add);
            if declared > MAX_ROW_GROUP_BYTES {
                let why = format!(
                    "row group {i} holds {declared} bytes uncompressed, over the {MAX_ROW_GROUP_BYTES} (1 GiB) the emulator reads; write the file with smaller row groups (pyarrow: row_group_size; Spark: parquet.block.size)"
                );
                *self.refusal.lock().expect("parquet refusal") = Some(why.clone());
                return Err(why);
            }
            let rows = u64::try_from(group.num_rows()).unwrap_or(0).max(1);
            widest_row = widest_row.max(declared / rows);
            for column in group.columns() {
                let (start, len) = column.byte_range();
                chunks.push(Chunk {
                    start,
                    end: start.saturating_add(len),
                    declared: u64::try_from(column.uncompressed_size()).unwrap_or(0),
                    inflated: 0,
                    last_page: None,
                });
            }
        }
        chunks.sort_by_key(|c| c.start);
        *self.chunks.lock().expect("parquet chunks") = chunks;
        Ok(usize::try_from(BATCH_BYTES / widest_row)
            .unwrap_or(MAX_BATCH_ROWS)
            .clamp(1, MAX_BATCH_ROWS))
    }

    /// Refuses a read inside a column chunk larger than a page may be.
    fn body(&self, start: u64, length: u64) -> Result<(), ParquetError> {
        let inside = self
            .chunks
            .lock()
            .expect("parquet chunks")
            .iter()
            .any(|c| c.start <= start && start < c.end);
        if inside && length > MAX_PARQUET_PAGE_BYTES {
            return Err(self.refuse(format!(
                "the page at byte {start} holds {length} bytes, over the {MAX_PARQUET_PAGE_BYTES} (32 MiB) one page may take; write the file with smaller pages (pyarrow: data_page_size; Spark: parquet.page.size)"
            )));
        }
        Ok(())
    }

    /// Checks the page whose header starts at `offset`, before the reader reads it.
    fn page(&self, file: &File, offset: u64) -> Result<(), ParquetError> {
        let mut chunks = self.chunks.lock().expect("parquet chunks");
        // Before `plan` (reading the footer) there is nothing to check.
        let Some(chunk) = chunks
            .iter_mut()
            .find(|c| c.start <= offset && offset < c.end)
        else {
            return Ok(());
        };
        if chunk.last_page.is_some_and(|last| offset <= last) {
            return Ok(());
        }
        let mut head = [0u8; 64];
        let n = file.read_at(&mut head, offset)?;
        let sizes = page_sizes(&head[..n]).ok_or_else(|| {
            self.refuse(format!(
                "the page header at byte {offset} does not start with its sizes (type, uncompressed and compressed size, as every writer puts them)"
            ))
        })?;
        let (uncompressed, compressed) = sizes;
        let largest = uncompressed.max(compressed);
        if largest > MAX_PARQUET_PAGE_BYTES {
            return Err(self.refuse(format!(
                "the page at byte {offset} holds {largest} bytes, over the {MAX_PARQUET_PAGE_BYTES} (32 MiB) one page may take; write the file with smaller pages (pyarrow: data_page_size; Spark: parquet.page.size)"
            )));
        }
        chunk.last_page = Some(offset);
        chunk.inflated = chunk.inflated.saturating_add(uncompressed);
        // Page headers count in the declared size too; allow for them.
        if chunk.inflated > chunk.declared.saturating_add(1024 * 1024) {
            return Err(self.refuse(format!(
                "the column chunk at byte {} inflates to more than the {} bytes its metadata declares",
                chunk.start, chunk.declared
            )));
        }
        Ok(())
    }
}

/// Every column chunk the metadata describes lies within the file's `size` bytes. Checked
/// before anything else reads the metadata's offsets: the Parquet crate asserts on a negative
/// offset or length (`byte_range`), and would seek past the end.
pub fn column_chunks_within(metadata: &ParquetMetaData, size: u64) -> Result<(), String> {
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for (c, chunk) in group.columns().iter().enumerate() {
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or(chunk.data_page_offset());
            let len = chunk.compressed_size();
            let within = u64::try_from(start)
                .ok()
                .zip(u64::try_from(len).ok())
                .and_then(|(start, len)| start.checked_add(len))
                .is_some_and(|end| end <= size);
            if !within {
                return Err(format!(
                    "column {c} of row group {g} claims bytes {start}+{len}, outside the file's {size} bytes"
                ));
            }
        }
    }
    Ok(())
}

/// (uncompressed, compressed) page sizes from the start of a Thrift compact `PageHeader`:
/// fields 1 (type), 2 and 3, all i32, which writers put first and in order. `None` for any
/// other layout.
fn page_sizes(bytes: &[u8]) -> Option<(u64, u64)> {
    let mut at = 0usize;
    let mut field = 0i16;
    let mut sizes = (None, None);
    while sizes.0.is_none() || sizes.1.is_none() {
        let header = *bytes.get(at)?;
        at += 1;
        let delta = i16::from(header >> 4);
        // Field type 5 is i32; a long-form header (delta 0) or any other type: not the usual.
        if delta == 0 || header & 0x0f != 5 {
            return None;
        }
        field += delta;
        let value = zigzag(varint(bytes, &mut at)?);
        let size = u64::try_from(value).ok();
        match field {
            1 => {}
            2 => sizes.0 = Some(size?),
            3 => sizes.1 = Some(size?),
            _ => return None,
        }
    }
    Some((sizes.0?, sizes.1?))
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn zigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// A Parquet file read through its [`PageCheck`].
pub struct CheckedFile {
    file: File,
    len: u64,
    pub check: Arc<PageCheck>,
}

impl CheckedFile {
    pub fn new(file: File, len: u64) -> CheckedFile {
        CheckedFile {
            file,
            len,
            check: Arc::new(PageCheck::default()),
        }
    }
}

impl Length for CheckedFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for CheckedFile {
    type T = BufReader<File>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        self.check.page(&self.file, start)?;
        self.file.get_read(start)
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        // Page bodies, after their header was checked through `get_read` (the reader reads
        // no page index, so headers always come that way); and the footer, before `plan`.
        self.check.body(start, length as u64)?;
        self.file.get_bytes(start, length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_bytes(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn header(fields: &[(u8, i64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (delta, value) in fields {
            out.push(delta << 4 | 5);
            varint_bytes(((value << 1) ^ (value >> 63)) as u64, &mut out);
        }
        out.push(0x2c); // field 5, a struct: where the sizes end
        out
    }

    #[test]
    fn page_sizes_come_from_the_first_three_fields() {
        assert_eq!(
            page_sizes(&header(&[(1, 0), (1, 1 << 20), (1, 4096)])),
            Some((1 << 20, 4096))
        );
        assert_eq!(
            page_sizes(&header(&[(1, 2), (1, i64::from(i32::MAX)), (1, 7)])),
            Some((i32::MAX as u64, 7))
        );
        // Negative sizes, other orders and truncated headers are not read as sizes.
        assert_eq!(page_sizes(&header(&[(1, 0), (1, -5), (1, 10)])), None);
        assert_eq!(page_sizes(&header(&[(2, 10), (1, 10)])), Some((10, 10)));
        assert_eq!(page_sizes(&header(&[(3, 10), (1, 10)])), None);
        assert_eq!(page_sizes(&[0x15, 0x00, 0x15]), None);
        assert_eq!(page_sizes(&[]), None);
    }
}
