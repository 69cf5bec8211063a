//! What batchdrop does to files in drop folders and in their archive and failed folders: open
//! folders and files without following symlinks, tell a file by its identity, hash what was
//! opened, write files atomically and move them. The watcher, uploader, batcher, archiver and
//! the operator's commands reach those files only through here.
//!
//! The rule: a folder named in the config (a drop folder, an `archive_dir`, a `failed_dir`) is
//! an *anchor*, opened as the operator wrote it. Everything below an anchor is resolved relative
//! to an open folder descriptor and never through a symlink (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`, or `O_NOFOLLOW` at every component where the kernel lacks `openat2`):
//! producers may plant symlinks anywhere in a drop folder, and nothing batchdrop reads, writes
//! or moves goes through one unless the watch's settings say so for a data file itself. What a
//! file is gets judged on the opened descriptor (`fstat`), never on its path. New files are
//! created `O_EXCL` under names nobody can predict, synced with their folder, and renamed into
//! place relative to the same folder descriptors; a move never replaces what is at its
//! destination.
//!
//! `mod.rs` holds what a file is (identity, kind) and the helpers every caller uses;
//! `dir.rs` open folders and what is done in them; `folders.rs` folders kept open for many
//! files; `moving.rs` moves; `content.rs` hashing and capped reads.
//!
//! This module decides nothing: which file goes where is the archiver's, when a file is stable
//! the watcher's, what is uploaded the uploader's.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use dir::relative;

/// What a file looks like on disk; a change in any of these means it is still being written
/// (or was replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        }
    }

    /// The identity of what `path` names, following symlinks. Only for the watcher's settle
    /// clock (is it still being written?): nothing is read, written or moved on its word.
    pub fn read(path: &Path) -> io::Result<Identity> {
        std::fs::metadata(path).map(|m| Identity::of(&m))
    }
}

/// What kind of thing a name in a folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Device,
    Unknown,
}

impl Kind {
    fn of_mode(mode: u32) -> Kind {
        match FileType::from_raw_mode(mode as _) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice | FileType::BlockDevice => Kind::Device,
            _ => Kind::Unknown,
        }
    }

    /// The kind of what a `std::fs` metadata describes.
    pub fn of_type(file_type: std::fs::FileType) -> Kind {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_file() {
            Kind::File
        } else if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_symlink() {
            Kind::Symlink
        } else if file_type.is_fifo() {
            Kind::Fifo
        } else if file_type.is_socket() {
            Kind::Socket
        } else if file_type.is_char_device() || file_type.is_block_device() {
            Kind::Device
        } else {
            Kind::Unknown
        }
    }

    /// "a FIFO (named pipe)", for messages that say why something was refused.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a folder",
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a FIFO (named pipe)",
            Kind::Socket => "a socket",
            Kind::Device => "a device",
            Kind::Unknown => "not a regular file",
        }
    }
}

/// What `fstat` (or `fstatat` without following) says about one file.
#[derive(Debug, Clone, Copy)]
pub struct FileStat {
    pub identity: Identity,
    pub kind: Kind,
    /// Bytes the file occupies on disk (`st_blocks * 512`): far below its size for a sparse
    /// file.
    pub allocated: u64,
    pub uid: u32,
    /// Permission bits with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
}

impl FileStat {
    #[allow(clippy::unnecessary_cast)] // the field types differ between architectures
    fn of(st: &rustix::fs::Stat) -> FileStat {
        FileStat {
            identity: Identity {
                dev: st.st_dev as u64,
                ino: st.st_ino as u64,
                size: st.st_size.max(0) as u64,
                mtime_ns: st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64,
            },
            kind: Kind::of_mode(st.st_mode as u32),
            allocated: (st.st_blocks.max(0) as u64).saturating_mul(512),
            uid: st.st_uid as u32,
            mode: st.st_mode as u32 & 0o7777,
        }
    }
}

/// A file opened for reading, with what its descriptor says it is.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub stat: FileStat,
}

/// Whether the last component of a data file's path may be a symlink. Folders on the way are
/// never followed, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// A symlink is refused (`ELOOP`).
    Refuse,
    /// Followed while its target stays below the anchor (`EXDEV` when it leads out).
    Beneath,
    /// Followed wherever it leads (a watch with `follow_symlinks = true`, or a file whose
    /// opened descriptor is then compared with the identity the watcher took).
    Anywhere,
}

/// An open folder: an anchor, or a folder reached below one without following symlinks. The
/// path is for messages; every operation goes through the descriptor.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

mod content;
mod dir;
mod folders;
mod moving;

pub use content::{hash_into, hash_range, read_capped, sha256};
pub use dir::PendingSync;
pub use folders::Folders;
pub use moving::move_file;

/// `rel` → (its folder, its name).
pub fn split(rel: &Path) -> io::Result<(&Path, &OsStr)> {
    let rel = relative(rel)?;
    match (rel.parent(), rel.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", rel.display()),
        )),
    }
}

/// Where `path` is: the shortest of `anchors` it lies below (the drop folder before an archive
/// inside it, so that `_archive` itself is checked too), and the rest of it.
pub fn anchored<'p>(path: &'p Path, anchors: &[&Path]) -> Option<(PathBuf, &'p Path)> {
    anchors
        .iter()
        .filter_map(|a| path.strip_prefix(a).ok().map(|rest| (a, rest)))
        .max_by_key(|(_, rest)| rest.components().count())
        .map(|(a, rest)| (a.to_path_buf(), rest))
}

/// batchdrop's own folders inside a drop folder (`_archive/`, `_failed/` and the folders in
/// them): the group may read, only batchdrop may change them.
pub const OWN_FOLDER_MODE: u32 = 0o750;

/// Whether [`folder_of`] creates the folders that are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    No,
    /// As `mkdir` would, with the umask's permissions (a folder producers share).
    Shared,
    /// With exactly these permissions (batchdrop's own folders: 0750).
    Mode(u32),
}

/// Opens the folder that holds `path` (below one of `anchors`), creating what is missing as
/// `create` says; returns it with the file's name.
pub fn folder_of<'p>(
    path: &'p Path,
    anchors: &[&Path],
    create: Create,
) -> io::Result<(Dir, &'p OsStr)> {
    let Some((anchor, rest)) = anchored(path, anchors) else {
        return Err(not_anchored(path));
    };
    let (parent, name) = split(rest)?;
    if create != Create::No {
        std::fs::create_dir_all(&anchor)?;
    }
    let base = Dir::anchor(&anchor)?;
    if parent.as_os_str().is_empty() {
        // Right in the anchor: nothing to reach or create below it.
        return Ok((base, name));
    }
    let dir = match create {
        Create::No => base.sub(parent)?,
        Create::Shared => base.sub_created(parent, None)?,
        Create::Mode(mode) => base.sub_created(parent, Some(mode))?,
    };
    Ok((dir, name))
}

/// The error of a path below none of the folders it should be below.
fn not_anchored(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is not below a folder of the config (a drop, archive or failed folder); \
             put the config back as it was when the file was taken, or move the file by hand",
            path.display()
        ),
    )
}

/// Opens `path`, a file below the drop folder `root`, for reading (see [`Dir::open_file`]).
pub fn open_below(root: &Path, path: &Path, links: Links) -> io::Result<Opened> {
    let below = path.strip_prefix(root).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not below {}", path.display(), root.display()),
        )
    })?;
    Dir::anchor(root)?.open_file(below, links)
}

/// The process ran out of descriptors or memory: nothing is wrong with the file, so whatever
/// was being done to it is tried again later, never failed.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
    ) || e.kind() == io::ErrorKind::OutOfMemory
}

/// The path went through a symlink where none may be followed.
pub fn is_symlink_refusal(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// A symlink led out of the folder it was judged below.
pub fn is_escape(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EXDEV)
}

/// The user batchdrop runs as.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// What about `root` (a drop folder) and the folders above it lets producers replace what
/// batchdrop relies on, one message each: a folder above it that others may write to without
/// the sticky bit (the drop folder could be renamed and replaced by a symlink), and a drop
/// folder that its group may write to without the sticky bit (`_archive`, `_failed` and other
/// producers' files could be renamed or replaced).
pub fn loose_folders(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mode_of = |p: &Path| std::fs::metadata(p).ok().map(|m| m.mode() & 0o7777);
    if let Some(mode) = mode_of(root)
        && mode & 0o022 != 0
        && mode & 0o1000 == 0
    {
        out.push(format!(
            "the drop folder {} (mode {mode:o}) is writable by its group or others without the \
             sticky bit: a producer can rename or replace other producers' files and batchdrop's \
             _archive/ and _failed/ folders (batchdrop never writes through what they plant, but \
             archiving stalls): run `chmod +t {}` (mode 3770 with the setgid bit)",
            root.display(),
            root.display()
        ));
    }
    for parent in root.ancestors().skip(1) {
        if let Some(mode) = mode_of(parent)
            && mode & 0o022 != 0
            && mode & 0o1000 == 0
        {
            out.push(format!(
                "{} (mode {mode:o}), above the drop folder {}, is writable by its group or others \
                 without the sticky bit: whoever can write there can replace the drop folder with \
                 a symlink to any folder batchdrop can read; run `chmod +t {}` or `chmod go-w {}`",
                parent.display(),
                root.display(),
                parent.display(),
                parent.display()
            ));
        }
    }
    out
}

/// Tells the kernel that bytes `from..to` of `file` will not be read again, so their pages in
/// the page cache can go now (advice: an error changes nothing and is ignored).
///
/// batchdrop reads a file from a drop folder once: only a retried upload, one resumed after a
/// restart, or the archiver's check of a file that grew read it again, then from the disk.
/// Caching it would push pages other programs use out of the host's cache, and in a container
/// it counts against the memory limit. On a VM that gives memory the guest has not
/// used for a while back to the host (this bench machine does), the pages freed here are also
/// the ones the next writes on the host get, without a round trip to the hypervisor: with the
/// local emulator, B2's 2 GiB upload went from 525–540 to 700–770 MB/s (interleaved runs).
pub fn drop_cached(file: &std::fs::File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
            return;
        };
        // SAFETY: advice about a range of a file we hold open; no memory is involved.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), from, len, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    use rustix::fs::OFlags;
    use sha2::{Digest, Sha256};

    use super::dir::{open_beneath, single};
    use super::moving::copy_across;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn tree() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("root/sub")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/secret.json"), "secret").unwrap();
        std::fs::write(tmp.path().join("root/sub/a.json"), "{}\n").unwrap();
        symlink(tmp.path().join("outside"), tmp.path().join("root/link")).unwrap();
        symlink("sub/a.json", tmp.path().join("root/alias.json")).unwrap();
        symlink(
            tmp.path().join("root/sub/a.json"),
            tmp.path().join("root/absolute.json"),
        )
        .unwrap();
        symlink(
            tmp.path().join("outside/secret.json"),
            tmp.path().join("root/escape.json"),
        )
        .unwrap();
        let root = Dir::anchor(&tmp.path().join("root")).unwrap();
        (tmp, root)
    }

    #[test]
    fn folders_are_never_reached_through_a_symlink_with_or_without_openat2() {
        let (_tmp, root) = tree();
        for openat2 in [true, false] {
            let err = open_beneath(
                root.fd.as_fd(),
                Path::new("link"),
                OFlags::RDONLY | OFlags::DIRECTORY,
                openat2,
            )
            .unwrap_err();
            assert!(is_symlink_refusal(&err), "openat2 {openat2}");
            assert!(
                open_beneath(
                    root.fd.as_fd(),
                    Path::new("sub"),
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    openat2
                )
                .is_ok()
            );
        }
        let err = root
            .open_file(Path::new("link/secret.json"), Links::Anywhere)
            .unwrap_err();
        assert!(is_symlink_refusal(&err), "{err}");
        assert!(root.sub(Path::new("../outside")).is_err());
    }

    #[test]
    fn a_file_symlink_is_followed_only_as_asked() {
        let (_tmp, root) = tree();
        let err = root
            .open_file(Path::new("alias.json"), Links::Refuse)
            .unwrap_err();
        assert!(is_symlink_refusal(&err), "{err}");
        let inside = root
            .open_file(Path::new("alias.json"), Links::Beneath)
            .unwrap();
        assert_eq!(inside.stat.kind, Kind::File);
        assert_eq!(inside.stat.identity.size, 3);
        let absolute = root
            .open_file(Path::new("absolute.json"), Links::Beneath)
            .unwrap();
        assert_eq!(absolute.stat.identity, inside.stat.identity);
        let err = root
            .open_file(Path::new("escape.json"), Links::Beneath)
            .unwrap_err();
        assert!(is_escape(&err), "{err}");
        let anywhere = root
            .open_file(Path::new("escape.json"), Links::Anywhere)
            .unwrap();
        assert_eq!(anywhere.stat.identity.size, 6);
        assert_eq!(
            root.stat_file(Path::new("alias.json"), Links::Beneath)
                .unwrap()
                .identity,
            inside.stat.identity
        );
    }

    #[test]
    fn an_atomic_write_replaces_a_planted_symlink_and_leaves_its_target_alone() {
        let (tmp, root) = tree();
        let target = tmp.path().join("outside/secret.json");
        symlink(&target, tmp.path().join("root/r.receipt.json")).unwrap();
        root.write_atomically(OsStr::new("r.receipt.json"), b"receipt", 0o640)
            .unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "secret");
        let meta = std::fs::symlink_metadata(tmp.path().join("root/r.receipt.json")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(
            std::fs::read(tmp.path().join("root/r.receipt.json")).unwrap(),
            b"receipt"
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("root"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "no temp file left: {left:?}");
    }

    /// Collects the watch's events up to the creation of `marker` (written here), and says
    /// whether any of them was an open of `folders`.
    fn opened_before(
        events: &std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
        marker: &Path,
        folders: &[&Path],
    ) -> bool {
        use notify::event::{AccessKind, EventKind};
        std::fs::write(marker, "").unwrap();
        let mut opened = false;
        loop {
            let event = events
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the marker's event (inotify)")
                .unwrap();
            if matches!(event.kind, EventKind::Access(AccessKind::Open(_)))
                && event.paths.iter().any(|p| folders.contains(&p.as_path()))
            {
                opened = true;
            }
            if event.paths.iter().any(|p| p == marker) {
                return opened;
            }
        }
    }

    #[test]
    fn reaching_a_folder_is_no_open_to_inotify_and_what_needs_it_open_still_works() {
        use notify::Watcher as _;
        let tmp = tempfile::tempdir().unwrap();
        let root_path = tmp.path().join("root");
        let sub_path = root_path.join("sub");
        std::fs::create_dir_all(&sub_path).unwrap();
        std::fs::write(sub_path.join("a.json"), "{}\n").unwrap();
        let (tx, events) = std::sync::mpsc::channel();
        let mut watch = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .unwrap();
        watch
            .watch(&root_path, notify::RecursiveMode::Recursive)
            .unwrap();
        let folders = [root_path.as_path(), sub_path.as_path()];
        // Setting the watch up lists the folders (opens): those events are not the test's.
        opened_before(&events, &root_path.join("marker-0"), &folders);

        // What the uploader and the archiver do per file: reach the folders, look, read a
        // file, write one through a temp file, move it.
        let root = Dir::anchor(&root_path).unwrap();
        let sub = root.sub(Path::new("sub")).unwrap();
        let again = sub.reopen().unwrap();
        assert_eq!(again.stat_self().unwrap().kind, Kind::Dir);
        root.stat_file(Path::new("sub/a.json"), Links::Refuse)
            .unwrap();
        let mut read = String::new();
        std::io::Read::read_to_string(
            &mut root
                .open_file(Path::new("sub/a.json"), Links::Refuse)
                .unwrap()
                .file,
            &mut read,
        )
        .unwrap();
        assert_eq!(read, "{}\n");
        let mut later = PendingSync::default();
        sub.write_new_deferred(OsStr::new("b.json"), b"[]", 0o640, &mut later)
            .unwrap();
        move_file(&sub, OsStr::new("b.json"), &root, OsStr::new("b.json")).unwrap();
        assert!(
            !opened_before(&events, &root_path.join("marker-1"), &folders),
            "a folder was opened"
        );

        // What needs a folder really open still works (and the watch does see such opens).
        let mut names: Vec<_> = root
            .entries()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        assert_eq!(names, ["b.json", "marker-0", "marker-1", "sub"]);
        assert!(opened_before(
            &events,
            &root_path.join("marker-2"),
            &folders
        ));
        later.sync().unwrap();
        sub.sync().unwrap();
        std::fs::set_permissions(&sub_path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(sub.narrow_to(0o750).unwrap().mode & 0o777, 0o750);
        let made = root
            .sub_created(Path::new("new/deeper"), Some(0o700))
            .unwrap();
        assert_eq!(made.stat_self().unwrap().mode & 0o777, 0o700);
    }

    #[test]
    fn a_move_never_replaces_what_is_at_its_destination() {
        let (tmp, root) = tree();
        let archive = root
            .sub_created(Path::new("_archive/deep"), Some(0o750))
            .unwrap();
        assert_eq!(
            std::fs::metadata(tmp.path().join("root/_archive"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o750
        );
        let sub = root.sub(Path::new("sub")).unwrap();
        std::fs::write(tmp.path().join("root/_archive/deep/a.json"), "earlier").unwrap();
        let err =
            move_file(&sub, OsStr::new("a.json"), &archive, OsStr::new("a.json")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        move_file(&sub, OsStr::new("a.json"), &archive, OsStr::new("a.1.json")).unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("root/_archive/deep/a.json")).unwrap(),
            "earlier"
        );
        assert!(!tmp.path().join("root/sub/a.json").exists());
    }

    #[test]
    fn a_copy_across_filesystems_keeps_content_and_removes_the_source() {
        let (tmp, root) = tree();
        let sub = root.sub(Path::new("sub")).unwrap();
        let to = root.sub_created(Path::new("other"), Some(0o750)).unwrap();
        copy_across(&sub, OsStr::new("a.json"), &to, OsStr::new("a.json")).unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("root/other/a.json")).unwrap(),
            "{}\n"
        );
        assert!(!tmp.path().join("root/sub/a.json").exists());
        std::fs::write(tmp.path().join("root/sub/b.json"), "b").unwrap();
        std::fs::write(tmp.path().join("root/other/b.json"), "taken").unwrap();
        assert!(copy_across(&sub, OsStr::new("b.json"), &to, OsStr::new("b.json")).is_err());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("root/sub/b.json")).unwrap(),
            "b",
            "the source stays when the destination is taken"
        );
    }

    #[test]
    fn hashing_is_bounded_by_the_recorded_length() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(
            sha256(&file, 5).unwrap(),
            format!("{:x}", Sha256::digest(b"hello"))
        );
        let err = sha256(&file, 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(read_capped(&file, 4).unwrap(), b"hello");
        assert_eq!(read_capped(&file, 64).unwrap(), b"hello world");
    }

    #[test]
    fn paths_are_split_at_the_outermost_anchor() {
        let root = Path::new("/srv/drop/orders");
        let archive = Path::new("/srv/drop/orders/_archive");
        let (anchor, rest) = anchored(
            Path::new("/srv/drop/orders/_archive/a.json"),
            &[archive, root],
        )
        .unwrap();
        assert_eq!(anchor, root);
        assert_eq!(rest, Path::new("_archive/a.json"));
        assert!(anchored(Path::new("/etc/passwd"), &[root, archive]).is_none());
        assert!(split(Path::new("../x")).is_err());
        assert!(single(OsStr::new("a/b")).is_err());
    }

    #[test]
    fn transient_errors_are_told_apart() {
        assert!(is_transient(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_transient(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(is_transient(&io::Error::from_raw_os_error(libc::ENOMEM)));
        assert!(!is_transient(&io::Error::from_raw_os_error(libc::EACCES)));
        assert!(!is_transient(&io::Error::from_raw_os_error(libc::ENOENT)));
    }

    #[test]
    fn folders_producers_could_replace_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("srv");
        let root = parent.join("drop");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o2770)).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o2770)).unwrap();
        let loose = loose_folders(&root);
        assert_eq!(loose.len(), 2, "{loose:?}");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o3770)).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o3770)).unwrap();
        assert!(loose_folders(&root).is_empty());
    }
}
