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
//! This module decides nothing: which file goes where is the archiver's, when a file is stable
//! the watcher's, what is uploaded the uploader's.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

/// What a file looks like on disk; a change in any of these means it is still being written
/// (or was replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Set once `openat2` turned out to be missing (Linux before 5.6, or a seccomp filter that
/// does not know it): components are then opened one by one with `O_NOFOLLOW`.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl Dir {
    /// A folder named in the config, opened as written (the operator may route it through a
    /// symlink).
    pub fn anchor(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// The folder's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder `rel` below this one, reached without following any symlink.
    pub fn sub(&self, rel: &Path) -> io::Result<Dir> {
        let rel = relative(rel)?;
        if rel.as_os_str().is_empty() {
            return self.reopen();
        }
        let fd = open_beneath(
            self.fd.as_fd(),
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
            !NO_OPENAT2.load(Ordering::Relaxed),
        )?;
        Ok(Dir {
            fd,
            path: self.path.join(rel),
        })
    }

    /// The folder `rel` below this one, creating what is missing of it. New folders get
    /// exactly `mode` when one is given (whatever the umask), the umask's say otherwise.
    pub fn sub_created(&self, rel: &Path, mode: Option<u32>) -> io::Result<Dir> {
        let rel = relative(rel)?;
        let mut dir = self.reopen()?;
        for part in rel.components() {
            let name = part.as_os_str();
            let created = match rustix::fs::mkdirat(
                &dir.fd,
                name,
                Mode::from_raw_mode(mode.unwrap_or(0o777) as _),
            ) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(e.into()),
            };
            let next = dir.sub(Path::new(name))?;
            if created && let Some(mode) = mode {
                rustix::fs::fchmod(&next.fd, Mode::from_raw_mode(mode as _))?;
            }
            dir = next;
        }
        Ok(dir)
    }

    fn reopen(&self) -> io::Result<Dir> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }

    /// What this folder itself is.
    pub fn stat_self(&self) -> io::Result<FileStat> {
        Ok(FileStat::of(&rustix::fs::fstat(&self.fd)?))
    }

    /// What the name `name` in this folder is, not following a symlink.
    pub fn stat(&self, name: &OsStr) -> io::Result<FileStat> {
        let name = single(name)?;
        Ok(FileStat::of(&rustix::fs::statat(
            &self.fd,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?))
    }

    /// What `name` in this folder leads to: a symlink's target, which must stay below this
    /// folder when `links` is `Beneath` (and may not be followed at all when `Refuse`).
    pub fn stat_file(&self, rel: &Path, links: Links) -> io::Result<FileStat> {
        let (parent, name) = split(rel)?;
        let folder = self.sub(parent)?;
        let st = folder.stat(name)?;
        if st.kind != Kind::Symlink {
            return Ok(st);
        }
        // A symlink's target is judged by opening it without reading (O_PATH: no device is
        // woken, no FIFO blocks).
        let fd = self.open_link(&folder, rel, name, links, OFlags::PATH)?;
        Ok(FileStat::of(&rustix::fs::fstat(&fd)?))
    }

    /// Opens `rel` (below this folder) for reading, `O_NONBLOCK` so that a FIFO cannot hang
    /// the caller: folders on the way are never followed, the last component per `links`.
    /// Any kind of file is returned; the caller judges `stat.kind`.
    pub fn open_file(&self, rel: &Path, links: Links) -> io::Result<Opened> {
        let (parent, name) = split(rel)?;
        let folder = self.sub(parent)?;
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(
            &folder.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Err(Errno::LOOP) => self.open_link(&folder, rel, name, links, flags)?,
            r => r?,
        };
        let stat = FileStat::of(&rustix::fs::fstat(&fd)?);
        Ok(Opened {
            file: File::from(fd),
            stat,
        })
    }

    /// Opens the target of the symlink `name` in `folder` (= `rel` below `self`) per `links`.
    fn open_link(
        &self,
        folder: &Dir,
        rel: &Path,
        name: &OsStr,
        links: Links,
        flags: OFlags,
    ) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC;
        match links {
            Links::Refuse => Err(Errno::LOOP.into()),
            Links::Anywhere => Ok(rustix::fs::openat(&folder.fd, name, flags, Mode::empty())?),
            Links::Beneath if !NO_OPENAT2.load(Ordering::Relaxed) => {
                match openat2_retrying(
                    self.fd.as_fd(),
                    rel,
                    flags,
                    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
                ) {
                    Err(Errno::NOSYS | Errno::PERM) => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        self.open_link(folder, rel, name, links, flags)
                    }
                    // RESOLVE_BENEATH refuses every absolute symlink: one that names a place
                    // inside this folder by its absolute path is resolved again from here.
                    Err(Errno::XDEV) => {
                        let target = rustix::fs::readlinkat(&folder.fd, name, Vec::new())?;
                        let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                        let real = std::fs::canonicalize(&self.path)?;
                        match target.strip_prefix(&real) {
                            Ok(inside) if target.is_absolute() => Ok(openat2_retrying(
                                self.fd.as_fd(),
                                inside,
                                flags,
                                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
                            )?),
                            _ => Err(Errno::XDEV.into()),
                        }
                    }
                    r => Ok(r?),
                }
            }
            Links::Beneath => {
                // Without openat2: follow, then judge where the descriptor really is.
                let fd = rustix::fs::openat(&folder.fd, name, flags, Mode::empty())?;
                let target = std::fs::read_link(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&fd)
                ))?;
                let root = std::fs::read_link(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&self.fd)
                ))?;
                if target.starts_with(&root) {
                    Ok(fd)
                } else {
                    Err(Errno::XDEV.into())
                }
            }
        }
    }

    /// The names in this folder (not `.` and `..`), each with what it is (not following a
    /// symlink). A name that vanished while listed is left out.
    pub fn entries(&self) -> io::Result<Vec<(OsString, FileStat)>> {
        let mut out = Vec::new();
        let listing = rustix::fs::Dir::read_from(&self.fd)?;
        for entry in listing {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            match self.stat(name) {
                Ok(st) => out.push((name.to_owned(), st)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Writes `bytes` as `name` in this folder, all or nothing: into a new temp file (`O_EXCL`,
    /// an unpredictable name, mode `mode` whatever the umask), synced, renamed over `name`
    /// (a symlink there is replaced, never followed), and the folder synced.
    pub fn write_atomically(&self, name: &OsStr, bytes: &[u8], mode: u32) -> io::Result<()> {
        self.write_replacing(name, bytes, mode, None)
    }

    /// The same, but durable only once `later` is synced: for many files at a time, where a
    /// sync per file and folder (about 12 ms each here) would cost more than the rest.
    pub fn write_atomically_deferred(
        &self,
        name: &OsStr,
        bytes: &[u8],
        mode: u32,
        later: &mut PendingSync,
    ) -> io::Result<()> {
        self.write_replacing(name, bytes, mode, Some(later))
    }

    fn write_replacing(
        &self,
        name: &OsStr,
        bytes: &[u8],
        mode: u32,
        later: Option<&mut PendingSync>,
    ) -> io::Result<()> {
        let name = single(name)?;
        let (tmp, mut file) = self.create_temp(mode)?;
        let now = later.is_none();
        let written = (|| {
            file.write_all(bytes)?;
            if now {
                file.sync_all()?;
            }
            rustix::fs::renameat(&self.fd, &tmp, &self.fd, name)?;
            if now { self.sync() } else { Ok(()) }
        })();
        match written {
            Ok(()) => {
                if let Some(later) = later {
                    later.note(self)?;
                }
                Ok(())
            }
            Err(e) => {
                let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
                Err(e)
            }
        }
    }

    /// Creates a new file under a name nobody can predict (hidden: the watcher ignores it).
    fn create_temp(&self, mode: u32) -> io::Result<(OsString, File)> {
        let mut tries = 0;
        loop {
            let name = OsString::from(format!(".batchdrop-{:016x}.tmp", rand::random::<u64>()));
            match rustix::fs::openat(
                &self.fd,
                &name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode as _),
            ) {
                Ok(fd) => {
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode as _))?;
                    return Ok((name, File::from(fd)));
                }
                Err(Errno::EXIST) if tries < 8 => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Removes the name `name` (a file or a symlink, never what a symlink points to).
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &self.fd,
            single(name)?,
            AtFlags::empty(),
        )?)
    }

    /// Makes the folder's entries durable.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }

    /// Narrows this folder to `mode` at most (keeping its setgid bit), if batchdrop owns it;
    /// returns what it is then.
    pub fn narrow_to(&self, mode: u32) -> io::Result<FileStat> {
        let st = self.stat_self()?;
        let narrowed = st.mode & (mode | 0o2000);
        if st.uid == effective_uid() && narrowed != st.mode {
            rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(narrowed as _))?;
        }
        self.stat_self()
    }

    /// Sets the mtime of `name` in this folder to now; a symlink is left as it is (what it
    /// points to is never touched).
    pub fn touch(&self, name: &OsStr) -> io::Result<()> {
        match self.open_file(Path::new(single(name)?), Links::Refuse) {
            Ok(opened) => opened.file.set_modified(std::time::SystemTime::now()),
            Err(e) if is_symlink_refusal(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Files written with [`Dir::write_atomically_deferred`] (and moves made meanwhile) that are
/// not durable yet: [`PendingSync::sync`] makes them so with one `syncfs` per filesystem.
#[derive(Debug, Default)]
pub struct PendingSync {
    /// One open folder per filesystem (by device).
    filesystems: std::collections::HashMap<u64, OwnedFd>,
}

impl PendingSync {
    fn note(&mut self, dir: &Dir) -> io::Result<()> {
        let dev = dir.stat_self()?.identity.dev;
        if let std::collections::hash_map::Entry::Vacant(e) = self.filesystems.entry(dev) {
            e.insert(rustix::io::fcntl_dupfd_cloexec(&dir.fd, 0)?);
        }
        Ok(())
    }

    /// Whether anything waits to be synced.
    pub fn is_empty(&self) -> bool {
        self.filesystems.is_empty()
    }

    /// Makes everything written so far durable (the file systems' data and folders).
    pub fn sync(&mut self) -> io::Result<()> {
        for (_, fd) in self.filesystems.drain() {
            rustix::fs::syncfs(&fd)?;
        }
        Ok(())
    }
}

/// Moves `from_name` in `from` to `to_name` in `to`, never replacing what is at the
/// destination at the moment of the move (`EEXIST` then). Across filesystems the file is
/// copied to a temp name in `to`, synced, renamed into place, and only then is the source
/// removed (if it is still the file that was copied): a crash leaves two copies, never none.
pub fn move_file(from: &Dir, from_name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
    let (from_name, to_name) = (single(from_name)?, single(to_name)?);
    match rustix::fs::renameat_with(&from.fd, from_name, &to.fd, to_name, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::XDEV) => copy_across(from, from_name, to, to_name),
        // A filesystem without renameat2 flags: a hard link is just as exclusive.
        Err(Errno::INVAL | Errno::NOSYS) => {
            match rustix::fs::linkat(&from.fd, from_name, &to.fd, to_name, AtFlags::empty()) {
                Ok(()) => Ok(rustix::fs::unlinkat(&from.fd, from_name, AtFlags::empty())?),
                Err(Errno::XDEV) => copy_across(from, from_name, to, to_name),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn copy_across(from: &Dir, from_name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
    let source = from.stat(from_name)?;
    let tmp = match source.kind {
        Kind::File => {
            let mut src = from.open_file(Path::new(from_name), Links::Refuse)?;
            if src.stat.identity != source.identity {
                return Err(io::Error::other(
                    "the file changed while it was being moved; tried again later",
                ));
            }
            let (tmp, mut copy) = to.create_temp(src.stat.mode & 0o777)?;
            let copied = (|| {
                let n = io::copy(&mut src.file, &mut copy)?;
                if n != src.stat.identity.size {
                    return Err(io::Error::other(
                        "the file changed size while it was being copied; tried again later",
                    ));
                }
                copy.set_modified(mtime_of(&src.stat.identity))?;
                copy.sync_all()
            })();
            if let Err(e) = copied {
                let _ = rustix::fs::unlinkat(&to.fd, &tmp, AtFlags::empty());
                return Err(e);
            }
            tmp
        }
        Kind::Symlink => {
            let target = rustix::fs::readlinkat(&from.fd, from_name, Vec::new())?;
            let tmp = OsString::from(format!(".batchdrop-{:016x}.tmp", rand::random::<u64>()));
            rustix::fs::symlinkat(target.as_c_str(), &to.fd, &tmp)?;
            tmp
        }
        other => {
            return Err(io::Error::other(format!(
                "it is {}, which batchdrop does not copy across filesystems",
                other.describe()
            )));
        }
    };
    if let Err(e) = rustix::fs::renameat_with(&to.fd, &tmp, &to.fd, to_name, RenameFlags::NOREPLACE)
    {
        let _ = rustix::fs::unlinkat(&to.fd, &tmp, AtFlags::empty());
        return Err(e.into());
    }
    to.sync()?;
    if from.stat(from_name)?.identity == source.identity {
        rustix::fs::unlinkat(&from.fd, from_name, AtFlags::empty())?;
    }
    Ok(())
}

fn mtime_of(identity: &Identity) -> std::time::SystemTime {
    let ns = identity.mtime_ns;
    let at = std::time::Duration::new(
        ns.div_euclid(1_000_000_000) as u64,
        ns.rem_euclid(1_000_000_000) as u32,
    );
    if ns >= 0 {
        std::time::UNIX_EPOCH + at
    } else {
        std::time::UNIX_EPOCH
    }
}

/// Opens the folder `rel` below `dir` with nothing on the way followed.
fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    try_openat2: bool,
) -> io::Result<OwnedFd> {
    if try_openat2 {
        match openat2_retrying(
            dir,
            rel,
            flags,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::NOSYS | Errno::PERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            r => return Ok(r?),
        }
    }
    let mut parts = rel.components().peekable();
    let mut current: Option<OwnedFd> = None;
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        let at = current.as_ref().map(|fd| fd.as_fd()).unwrap_or(dir);
        let want = if last {
            flags
        } else {
            OFlags::RDONLY | OFlags::DIRECTORY
        };
        let opened = rustix::fs::openat(
            at,
            part.as_os_str(),
            want | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        );
        current = Some(match opened {
            // O_DIRECTORY wins over O_NOFOLLOW: a symlink says "not a folder". Say what
            // openat2 would have said.
            Err(Errno::NOTDIR)
                if rustix::fs::statat(at, part.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| Kind::of_mode(st.st_mode as _) == Kind::Symlink) =>
            {
                return Err(Errno::LOOP.into());
            }
            r => r?,
        });
    }
    current.ok_or_else(|| io::Error::other("empty path"))
}

/// openat2, tried again when the kernel saw a rename race (`EAGAIN`) during resolution.
fn openat2_retrying(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, rel, flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

/// `rel` if it only goes down (no root, no `..`); `.` components dropped.
fn relative(rel: &Path) -> io::Result<&Path> {
    for part in rel.components() {
        match part {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} does not stay below its folder", rel.display()),
                ));
            }
        }
    }
    Ok(rel.strip_prefix(".").unwrap_or(rel))
}

/// `name` if it is one plain name.
fn single(name: &OsStr) -> io::Result<&OsStr> {
    if name.is_empty() || name == "." || name == ".." || name.as_bytes().contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(name)
}

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
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not below a folder of the config (a drop, archive or failed folder); \
                 put the config back as it was when the file was taken, or move the file by hand",
                path.display()
            ),
        ));
    };
    let (parent, name) = split(rest)?;
    if create != Create::No {
        std::fs::create_dir_all(&anchor)?;
    }
    let base = Dir::anchor(&anchor)?;
    let dir = match create {
        Create::No => base.sub(parent)?,
        Create::Shared => base.sub_created(parent, None)?,
        Create::Mode(mode) => base.sub_created(parent, Some(mode))?,
    };
    Ok((dir, name))
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

/// SHA-256 of the first `len` bytes of an opened file (an error if it has fewer).
pub fn sha256(file: &File, len: u64) -> io::Result<String> {
    let mut hasher = Sha256::new();
    hash_into(file, len, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Feeds the first `len` bytes of an opened file to `hasher` (an error if it has fewer). Reads
/// by position: the file's offset is left where it was.
pub fn hash_into(file: &File, len: u64, hasher: &mut Sha256) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    while at < len {
        let want = (len - at).min(buf.len() as u64) as usize;
        let n = match file.read_at(&mut buf[..want], at) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ends after {at} of the {len} bytes recorded"),
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

#[cfg(test)]
mod tests {
    use super::*;
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
