//! Reading what was opened: its SHA-256, and small files read whole up to a cap.
//!
//! This module must not open files by path: it reads descriptors `Dir` opened.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

/// SHA-256 of the first `len` bytes of an opened file (an error if it has fewer).
pub fn sha256(file: &File, len: u64) -> io::Result<String> {
    let mut hasher = Sha256::new();
    hash_into(file, len, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Feeds the first `len` bytes of an opened file to `hasher` (an error if it has fewer). Reads
/// by position: the file's offset is left where it was.
pub fn hash_into(file: &File, len: u64, hasher: &mut Sha256) -> io::Result<()> {
    hash_range(file, 0, len, hasher)
}

/// Feeds bytes `from..to` of an opened file to `hasher` (an error if it ends before `to`), as
/// [`hash_into`] does from its start.
pub fn hash_range(file: &File, from: u64, to: u64, hasher: &mut Sha256) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = from;
    while at < to {
        let want = (to - at).min(buf.len() as u64) as usize;
        let n = match file.read_at(&mut buf[..want], at) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ends after {at} of the {to} bytes recorded"),
            ));
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

/// Up to `cap + 1` bytes of an opened file, from its start: more than `cap` means too long,
/// whatever its size said.
pub fn read_capped(file: &File, cap: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while (out.len() as u64) <= cap {
        let want = (cap + 1 - out.len() as u64).min(buf.len() as u64) as usize;
        match file.read_at(&mut buf[..want], out.len() as u64) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
