//! Where a finished file goes and what is there now: the names the archiver chooses (the
//! file's own, or one with its id when that is taken, rebuilt in the name's own bytes from a
//! lossy record), and what it finds at a file's place, all reached through the page's open
//! folders (`disk::Folders`).
//!
//! This module must not move, write or remove anything (`archiver.rs` does).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::disk::{Create, FileStat, Folders, Identity, Kind, Links};
use crate::store::FileRow;

/// What is at the file's place in its drop folder now (a symlink's target: that is what the
/// watcher recorded), reached without following any folder symlink.
pub(super) fn stat_now(f: &FileRow, folders: &mut Folders) -> std::io::Result<FileStat> {
    folders.stat_file(&f.abs_path(), &[Path::new(&f.root)], Links::Anywhere)
}

/// Whether `st` is the recorded file: the same inode, or (copied across filesystems, which
/// keeps both) the same size and mtime.
pub(super) fn is_the_file(st: &FileStat, recorded: &Identity) -> bool {
    st.identity == *recorded
        || (st.kind == Kind::File
            && st.identity.size == recorded.size
            && st.identity.mtime_ns == recorded.mtime_ns)
}

/// The file's path below its drop folder, in its name's own bytes (`rel_path` is a lossy
/// rendering of a name that is not UTF-8).
pub(super) fn rel_below_root(f: &FileRow) -> PathBuf {
    let abs = f.abs_path();
    abs.strip_prefix(&f.root)
        .map(Path::to_owned)
        .unwrap_or_else(|_| PathBuf::from(&f.rel_path))
}

/// The real path of a recorded destination of the file at `rel` (its real path below its
/// drop folder). `final_path` is text: for a name that is not UTF-8 it holds a lossy
/// rendering, and the real name is rebuilt from the file's own bytes (a destination differs
/// from the file's name only by what `id_name` and `move_to` insert after its stem, which is
/// ASCII).
pub(super) fn real_destination(recorded: &str, rel: &Path) -> PathBuf {
    let recorded_path = PathBuf::from(recorded);
    if rel.to_str().is_some() {
        return recorded_path;
    }
    let depth = rel.components().count();
    let parts: Vec<_> = recorded_path.components().collect();
    let (Some(name), Some(recorded_name)) = (rel.file_name(), recorded_path.file_name()) else {
        return recorded_path;
    };
    if parts.len() < depth {
        return recorded_path;
    }
    let base: PathBuf = parts[..parts.len() - depth].iter().collect();
    let raw = name.as_bytes();
    let stem_len = raw.iter().position(|&b| b == b'.').unwrap_or(raw.len());
    let (stem, ext) = raw.split_at(stem_len);
    let (stem_text, ext_text) = (String::from_utf8_lossy(stem), String::from_utf8_lossy(ext));
    let recorded_name = recorded_name.to_string_lossy();
    let Some(inserted) = recorded_name
        .strip_prefix(stem_text.as_ref())
        .and_then(|rest| rest.strip_suffix(ext_text.as_ref()))
    else {
        return recorded_path;
    };
    let mut real = stem.to_vec();
    real.extend_from_slice(inserted.as_bytes());
    real.extend_from_slice(ext);
    let parent = rel.parent().unwrap_or(Path::new(""));
    let real = base.join(parent).join(OsString::from_vec(real));
    if real.to_string_lossy() == recorded {
        real
    } else {
        recorded_path
    }
}

/// `dir/rel`, or `dir/stem.ID.ext` when that name is taken: an archive never overwrites an
/// earlier file of the same name.
pub(super) fn free_name(
    dir: &Path,
    rel: &Path,
    id: i64,
    anchors: &[&Path],
    folders: &mut Folders,
) -> PathBuf {
    let p = dir.join(rel);
    if !name_taken(&p, anchors, folders) {
        return p;
    }
    id_name(&p, id)
}

/// Whether something (of any kind, a symlink too) has the name `path`; its folder is reached
/// without following symlinks. A folder that cannot be reached (not made yet, or a symlink in
/// its place) holds nothing: the move there says what is wrong.
pub(super) fn name_taken(path: &Path, anchors: &[&Path], folders: &mut Folders) -> bool {
    folders
        .folder_of(path, anchors, Create::No)
        .is_ok_and(|(dir, name)| dir.stat(name).is_ok())
}

/// `dir/name.ext` → `dir/name.ID.ext`: a name no other file of the store can want.
pub(super) fn id_name(p: &Path, id: i64) -> PathBuf {
    insert_after_stem(p, &format!(".{id}"))
}

/// `dir/name.ext` → `dir/name{insert}.ext`, in the name's own bytes.
pub(super) fn insert_after_stem(p: &Path, insert: &str) -> PathBuf {
    let name = p.file_name().map(OsStr::as_bytes).unwrap_or_default();
    let stem_len = name.iter().position(|&b| b == b'.').unwrap_or(name.len());
    let mut renamed = name[..stem_len].to_vec();
    renamed.extend_from_slice(insert.as_bytes());
    renamed.extend_from_slice(&name[stem_len..]);
    p.with_file_name(OsString::from_vec(renamed))
}

/// `path` with `suffix` appended to its name.
pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_is_not_utf8_keeps_its_bytes_in_the_failed_folder() {
        let rel = Path::new(OsStr::from_bytes(b"sub/latin1-\xe9t\xe9.json"));
        let failed = Path::new("/d/_failed");
        let real = |name: &[u8]| failed.join("sub").join(OsStr::from_bytes(name));
        for (chosen, expected) in [
            (failed.join(rel), real(b"latin1-\xe9t\xe9.json")),
            (
                id_name(&failed.join(rel), 7),
                real(b"latin1-\xe9t\xe9.7.json"),
            ),
            (
                insert_after_stem(&failed.join(rel), ".7.0000abcd"),
                real(b"latin1-\xe9t\xe9.7.0000abcd.json"),
            ),
        ] {
            assert_eq!(chosen, expected);
            let recorded = chosen.to_string_lossy().into_owned();
            assert!(
                recorded.contains('\u{FFFD}'),
                "what the store holds is lossy"
            );
            assert_eq!(real_destination(&recorded, rel), expected);
        }
        assert_eq!(
            real_destination("/d/_archive/a.7.json", Path::new("a.json")),
            Path::new("/d/_archive/a.7.json")
        );
    }
}
