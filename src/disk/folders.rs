//! Folders opened once for many files: an archiver page moves up to 200 files and writes their
//! receipts into the same few folders, and reaching each folder again from its anchor's path
//! for every file (an `open` of the absolute path, a walk below it, a `mkdir` that finds the
//! folder there) was most of the page's system calls.
//!
//! A folder stays open as long as its [`Folders`] does (one page): one removed meanwhile makes
//! what is done in it fail until the next page opens it again; one renamed and replaced
//! meanwhile is still the folder first reached, never through a symlink. Folders are kept by
//! (anchor, path below it), so a folder reached from an anchor that may be a symlink is never
//! handed to a caller that reaches it from one that may not.
//!
//! This module must not decide which file goes where (see the module above).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Create, Dir, FileStat, Kind, Links, anchored, not_anchored, split};

/// The folders opened so far, by (anchor, folder below it).
#[derive(Debug, Default)]
pub struct Folders {
    open: HashMap<(PathBuf, PathBuf), Arc<Dir>>,
}

impl Folders {
    /// [`super::folder_of`], opening each folder once (shared: a move needs two at a time).
    pub fn folder_of<'p>(
        &mut self,
        path: &'p Path,
        anchors: &[&Path],
        create: Create,
    ) -> io::Result<(Arc<Dir>, &'p OsStr)> {
        let (anchor, rest) = anchored(path, anchors).ok_or_else(|| not_anchored(path))?;
        let (parent, name) = split(rest)?;
        let dir = match self.open.entry((anchor, parent.to_owned())) {
            // A folder opened without creating it exists, so it serves a `create` as well.
            Entry::Occupied(open) => open.get().clone(),
            Entry::Vacant(slot) => slot
                .insert(Arc::new(super::folder_of(path, anchors, create)?.0))
                .clone(),
        };
        Ok((dir, name))
    }

    /// What is at `path` (below one of `anchors`), folders on the way never followed; a
    /// symlink's target as `links` says (see [`Dir::stat_file`]).
    pub fn stat_file(
        &mut self,
        path: &Path,
        anchors: &[&Path],
        links: Links,
    ) -> io::Result<FileStat> {
        let (dir, name) = self.folder_of(path, anchors, Create::No)?;
        let st = dir.stat(name)?;
        if st.kind != Kind::Symlink {
            return Ok(st);
        }
        // A symlink's target is judged from its anchor, where it must stay (`Beneath`).
        let (anchor, rest) = anchored(path, anchors).ok_or_else(|| not_anchored(path))?;
        Dir::anchor(&anchor)?.stat_file(rest, links)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::disk::is_symlink_refusal;

    #[test]
    fn a_folder_is_opened_once_and_never_reached_through_a_symlink_planted_since() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("_archive")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        let anchors = [root.as_path()];
        let mut folders = Folders::default();
        let (a, b) = (root.join("_archive/a.json"), root.join("_archive/b.json"));
        let (first, name) = folders
            .folder_of(&a, &anchors, Create::Mode(0o750))
            .unwrap();
        assert_eq!(name, "a.json");
        // A producer renames the folder away and plants a symlink in its place.
        std::fs::rename(root.join("_archive"), root.join("moved")).unwrap();
        symlink(tmp.path().join("outside"), root.join("_archive")).unwrap();

        let (again, name) = folders.folder_of(&b, &anchors, Create::No).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "opened once");
        again.write_atomically(name, b"receipt", 0o640).unwrap();
        assert_eq!(
            std::fs::read(root.join("moved/b.json")).unwrap(),
            b"receipt"
        );
        assert!(!tmp.path().join("outside/b.json").exists());
        // Opened afresh, the planted symlink is refused.
        let err = Folders::default()
            .folder_of(&root.join("_archive/c.json"), &anchors, Create::No)
            .unwrap_err();
        assert!(is_symlink_refusal(&err), "{err}");
        assert!(
            folders
                .folder_of(Path::new("/etc/passwd"), &anchors, Create::No)
                .is_err()
        );
    }

    #[test]
    fn a_folder_opened_from_one_anchor_is_not_handed_out_for_another() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(tmp.path().join("elsewhere")).unwrap();
        // The operator routes the archive through a symlink: as an anchor it is followed.
        symlink(tmp.path().join("elsewhere"), root.join("_archive")).unwrap();
        std::fs::write(tmp.path().join("elsewhere/a.json"), "a").unwrap();
        let archive = root.join("_archive");
        let path = archive.join("a.json");
        let mut folders = Folders::default();
        let through_archive = folders
            .stat_file(&path, &[archive.as_path()], Links::Refuse)
            .unwrap();
        assert_eq!(through_archive.identity.size, 1);
        // Below the drop folder, the same path goes through a symlink: refused, every time.
        for _ in 0..2 {
            let err = folders
                .stat_file(&path, &[root.as_path()], Links::Refuse)
                .unwrap_err();
            assert!(is_symlink_refusal(&err), "{err}");
        }
    }
}
