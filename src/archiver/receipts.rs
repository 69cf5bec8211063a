//! Writing a file's receipt so that no other receipt of that file is ever replaced: the file
//! system is the fence where the database cannot be one. In a fleet, an archiver paused after
//! checking its batch's lease may wake up after a successor finished the same files; the
//! receipt is put in place without replacing anything (`RENAME_NOREPLACE`, or `link(2)` on
//! NFS), and finding this file's receipt already there means someone finished it (the
//! successor, or this instance before a restart): it is left as it is. What else is at the
//! name (an old receipt of another file, a planted symlink) is replaced, as before, but only
//! if it is still what was looked at.
//!
//! This module must not choose where a receipt goes (`archiver.rs` does) nor read the store.

use std::ffi::OsStr;
use std::io;
use std::path::Path;

use crate::disk::{self, Dir, Kind, Links, PendingSync};
use crate::receipt::{self, Receipt};

/// What writing a receipt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    /// The receipt is the one just written.
    New,
    /// A receipt of the same file was there already, and stays.
    AlreadyThere,
}

/// The receipt's keys that tell which file version it is about.
const SAME_FILE: [&str; 6] = [
    "dataset",
    "discovered_at",
    "file",
    "folder",
    "sha256",
    "size",
];

/// Receipts are small; what is larger than this is not one of batchdrop's.
const RECEIPT_CAP: u64 = 4 << 20;

/// Writes `receipt` as `name` in `dir` (durable once `unsynced` is synced).
pub(super) fn write(
    dir: &Dir,
    name: &OsStr,
    receipt: &Receipt,
    unsynced: &mut PendingSync,
) -> io::Result<Written> {
    let bytes = receipt.to_json();
    // Each round either writes it, finds this file's receipt, or removes one thing in the way;
    // a name that keeps being taken by something else is given up on (tried again later).
    for _ in 0..3 {
        match dir.write_new_deferred(name, &bytes, receipt::MODE, unsynced) {
            Ok(()) => return Ok(Written::New),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let there = match dir.stat(name) {
            Ok(there) => there,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if there.kind == Kind::File && is_receipt_of(dir, name, receipt)? {
            return Ok(Written::AlreadyThere);
        }
        dir.remove_if_still(name, &there.identity)?;
    }
    Err(io::Error::other(
        "something else keeps taking the receipt's name; tried again later",
    ))
}

/// Whether `name` in `dir` is a receipt of the same file version as `ours`.
fn is_receipt_of(dir: &Dir, name: &OsStr, ours: &Receipt) -> io::Result<bool> {
    let opened = match dir.open_file(Path::new(name), Links::Refuse) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound || disk::is_symlink_refusal(&e) => {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let bytes = disk::read_capped(&opened.file, RECEIPT_CAP)?;
    let Ok(theirs) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(false); // torn by a power loss, or not a receipt at all
    };
    let ours = serde_json::to_value(ours).map_err(io::Error::other)?;
    Ok(SAME_FILE.iter().all(|key| theirs.get(key) == ours.get(key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BatchRow, FileRow};

    fn receipt_of(file: &FileRow, note: Option<&str>) -> Receipt {
        let mut r = Receipt::new(file, None::<&BatchRow>, receipt::Status::Success, 1_000);
        r.note = note.map(str::to_owned);
        r
    }

    fn file(rel_path: &str, discovered_at: i64) -> FileRow {
        FileRow {
            rel_path: rel_path.into(),
            ..crate::schedule::tests::file(1, "json", 10, discovered_at)
        }
    }

    #[test]
    fn a_second_receipt_of_the_same_file_never_replaces_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::anchor(tmp.path()).unwrap();
        let name = OsStr::new("a.json.receipt.json");
        let mut unsynced = PendingSync::default();
        let first = receipt_of(&file("a.json", 7), None);
        let late = receipt_of(&file("a.json", 7), Some("written late"));
        assert_eq!(
            write(&dir, name, &first, &mut unsynced).unwrap(),
            Written::New
        );
        assert_eq!(
            write(&dir, name, &late, &mut unsynced).unwrap(),
            Written::AlreadyThere
        );
        let kept = std::fs::read(tmp.path().join(name)).unwrap();
        assert_eq!(kept, first.to_json(), "the first receipt is intact");
        // Another version of the file (discovered later) replaces what is at the name, and
        // no temp file is left behind.
        let next = receipt_of(&file("a.json", 8), None);
        assert_eq!(
            write(&dir, name, &next, &mut unsynced).unwrap(),
            Written::New
        );
        assert_eq!(
            std::fs::read(tmp.path().join(name)).unwrap(),
            next.to_json()
        );
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [name]);
    }

    #[test]
    fn a_symlink_at_the_receipts_name_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        std::fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join("a.json.receipt.json")).unwrap();
        let dir = Dir::anchor(tmp.path()).unwrap();
        let mine = receipt_of(&file("a.json", 7), None);
        let mut unsynced = PendingSync::default();
        assert_eq!(
            write(
                &dir,
                OsStr::new("a.json.receipt.json"),
                &mine,
                &mut unsynced
            )
            .unwrap(),
            Written::New
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        let meta = std::fs::symlink_metadata(tmp.path().join("a.json.receipt.json")).unwrap();
        assert!(meta.is_file());
    }
}
