//! Open folders ([`Dir`]): anchors, and folders reached below them without following
//! symlinks (`openat2`, or `O_NOFOLLOW` at every component where the kernel lacks it); what
//! is done in them (stat, open, create, write atomically, remove), and the deferred syncs.
//!
//! Folders are held as `O_PATH` descriptors: they name a folder for the `*at` calls without
//! opening it, so holding one is no "open" to inotify. Every `IN_OPEN` of a watched folder
//! wakes each watcher of it (batchdrop's own, for one), and the uploader and the archiver
//! reach the drop folder several times per file. What needs the folder really open (listing
//! it, `fsync`, `syncfs`, `fchmod`) opens it for that call alone ([`Dir::opened`]).
//!
//! This module must not decide which file goes where (see the module above).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::{Dir, FileStat, Kind, Links, Opened, effective_uid, is_symlink_refusal, split};

/// Set once `openat2` turned out to be missing (Linux before 5.6, or a seccomp filter that
/// does not know it): components are then opened one by one with `O_NOFOLLOW`.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// How a [`Dir`] holds its folder: `O_PATH` (see the module's comment).
const HELD: OFlags = OFlags::PATH.union(OFlags::DIRECTORY);

/// A folder reached for one call ([`Dir::within`]): the one asked, or one below it.
enum Within<'d> {
    This(&'d Dir),
    Below(Dir),
}

impl std::ops::Deref for Within<'_> {
    type Target = Dir;

    fn deref(&self) -> &Dir {
        match self {
            Within::This(dir) => dir,
            Within::Below(dir) => dir,
        }
    }
}

impl Dir {
    /// A folder named in the config, reached as written (the operator may route it through a
    /// symlink).
    pub fn anchor(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(path, HELD | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// The folder's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder `rel` below this one for the length of one call: this one itself when
    /// `rel` is empty (a file right in it, the common case: no descriptor is opened and
    /// closed again for it), else [`Dir::sub`].
    fn within(&self, rel: &Path) -> io::Result<Within<'_>> {
        if relative(rel)?.as_os_str().is_empty() {
            Ok(Within::This(self))
        } else {
            self.sub(rel).map(Within::Below)
        }
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
            HELD,
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
                rustix::fs::fchmod(next.opened()?, Mode::from_raw_mode(mode as _))?;
            }
            dir = next;
        }
        Ok(dir)
    }

    pub(super) fn reopen(&self) -> io::Result<Dir> {
        let fd = rustix::fs::openat(&self.fd, ".", HELD | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }

    /// This folder really opened (read-only), for what an `O_PATH` descriptor cannot do:
    /// list it, `fsync` or `syncfs` it, `fchmod` it.
    pub(super) fn opened(&self) -> io::Result<OwnedFd> {
        opened(self.fd.as_fd())
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
        let folder = self.within(parent)?;
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
        let folder = self.within(parent)?;
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
    pub(super) fn open_link(
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
        self.each_entry(|name, st| {
            out.push((name.to_owned(), st));
            std::ops::ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// [`Dir::entries`] one at a time, as they are read, until `each` breaks: a folder of a
    /// million files is never held in memory at once.
    pub fn each_entry(
        &self,
        mut each: impl FnMut(&OsStr, FileStat) -> std::ops::ControlFlow<()>,
    ) -> io::Result<()> {
        // Not `read_from`: it reopens the folder with the descriptor's own flags (`O_PATH`).
        let listing = rustix::fs::Dir::new(self.opened()?)?;
        for entry in listing {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            match self.stat(name) {
                Ok(st) => {
                    if each(name, st).is_break() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes `bytes` as `name` in this folder, all or nothing: into a new temp file (`O_EXCL`,
    /// an unpredictable name, mode `mode` whatever the umask), synced, renamed over `name`
    /// (a symlink there is replaced, never followed), and the folder synced.
    pub fn write_atomically(&self, name: &OsStr, bytes: &[u8], mode: u32) -> io::Result<()> {
        self.write_through_temp(name, bytes, mode, None, Put::Replacing)
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
        self.write_through_temp(name, bytes, mode, Some(later), Put::Replacing)
    }

    /// Writes `bytes` as `name` in this folder only if nothing has that name: like
    /// [`Dir::write_atomically_deferred`], but the temp file is put in place with
    /// `renameat2(RENAME_NOREPLACE)` (or `link(2)`, which fails just as atomically on NFS too),
    /// so what another process put there is never replaced: `AlreadyExists` then.
    pub fn write_new_deferred(
        &self,
        name: &OsStr,
        bytes: &[u8],
        mode: u32,
        later: &mut PendingSync,
    ) -> io::Result<()> {
        self.write_through_temp(name, bytes, mode, Some(later), Put::New)
    }

    pub(super) fn write_through_temp(
        &self,
        name: &OsStr,
        bytes: &[u8],
        mode: u32,
        later: Option<&mut PendingSync>,
        put: Put,
    ) -> io::Result<()> {
        let name = single(name)?;
        let (tmp, mut file) = self.create_temp(mode)?;
        let now = later.is_none();
        let written = (|| {
            file.write_all(bytes)?;
            if now {
                file.sync_all()?;
            }
            match put {
                Put::Replacing => rustix::fs::renameat(&self.fd, &tmp, &self.fd, name)?,
                Put::New => super::move_file(self, &tmp, self, name)?,
            }
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

    /// Removes `name` if it is still the file `seen` (its identity): it is first renamed to a
    /// hidden temp name, which only one process can do, and put back (never over anything)
    /// when it turns out to be something else that took the name since. Whether it was removed.
    pub fn remove_if_still(&self, name: &OsStr, seen: &super::Identity) -> io::Result<bool> {
        let name = single(name)?;
        let aside = OsString::from(format!(".batchdrop-{:016x}.tmp", rand::random::<u64>()));
        super::move_file(self, name, self, &aside)?;
        if self.stat(&aside)?.identity == *seen {
            rustix::fs::unlinkat(&self.fd, &aside, AtFlags::empty())?;
            return Ok(true);
        }
        super::move_file(self, &aside, self, name)?;
        Ok(false)
    }

    /// Creates a new file under a name nobody can predict (hidden: the watcher ignores it).
    pub(super) fn create_temp(&self, mode: u32) -> io::Result<(OsString, File)> {
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
        Ok(rustix::fs::fsync(self.opened()?)?)
    }

    /// Narrows this folder to `mode` at most (keeping its setgid bit), if batchdrop owns it;
    /// returns what it is then.
    pub fn narrow_to(&self, mode: u32) -> io::Result<FileStat> {
        let st = self.stat_self()?;
        let narrowed = st.mode & (mode | 0o2000);
        if st.uid == effective_uid() && narrowed != st.mode {
            rustix::fs::fchmod(self.opened()?, Mode::from_raw_mode(narrowed as _))?;
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

/// How a file written through a temp file takes its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Put {
    /// Over whatever has the name (a symlink is replaced, never followed).
    Replacing,
    /// Only where nothing has the name.
    New,
}

/// Files written with [`Dir::write_atomically_deferred`] (and moves made meanwhile) that are
/// not durable yet: [`PendingSync::sync`] makes them so with one `syncfs` per filesystem.
#[derive(Debug, Default)]
pub struct PendingSync {
    /// One folder per filesystem (by device), held `O_PATH` until the sync.
    filesystems: std::collections::HashMap<u64, OwnedFd>,
}

impl PendingSync {
    pub(super) fn note(&mut self, dir: &Dir) -> io::Result<()> {
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
            rustix::fs::syncfs(opened(fd.as_fd())?)?;
        }
        Ok(())
    }
}

/// The folder `dir` (held `O_PATH`) really opened, read-only.
fn opened(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the folder `rel` below `dir` with nothing on the way followed.
pub(super) fn open_beneath(
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
        let want = if last { flags } else { HELD };
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
pub(super) fn openat2_retrying(
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
pub(super) fn relative(rel: &Path) -> io::Result<&Path> {
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
pub(super) fn single(name: &OsStr) -> io::Result<&OsStr> {
    if name.is_empty() || name == "." || name == ".." || name.as_bytes().contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(name)
}
