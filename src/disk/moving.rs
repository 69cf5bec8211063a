//! Moving a file between open folders without ever replacing what is at the destination,
//! across filesystems too (copied, synced, renamed into place, then the source removed).
//!
//! This module must not choose destinations (the archiver does).

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

use rustix::fs::{AtFlags, RenameFlags};
use rustix::io::Errno;

use super::dir::single;
use super::{Dir, Identity, Kind, Links};

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

pub(super) fn copy_across(
    from: &Dir,
    from_name: &OsStr,
    to: &Dir,
    to_name: &OsStr,
) -> io::Result<()> {
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
