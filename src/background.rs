//! Threads for work that no one waits on yet: the SHA-256 of a large file while it is sent
//! (`uploader::read`). They run at the lowest CPU priority (nice 19), so that where the cores
//! are busy, the work someone waits on (the send to the platform, an embedded platform's
//! receive, other files' uploads) takes them first and the hash takes what is left. On an idle
//! machine nothing changes: a low priority only matters where threads compete.
//!
//! The upload does not wait for its hash (the hasher reads again what it missed) and a batch
//! is completed without it, so a hash that runs late delays only what needs it: the file's
//! receipt and its dedupe record. (The early hash, which an upload waits for when it takes it
//! over, runs at the daemon's priority: see `early_hash`.)
//!
//! One thread per job, not tokio's blocking pool: a thread's nice value can be lowered but not
//! raised again without privilege, so a pool thread would keep it for every later task.
//!
//! This module only starts threads; what they compute is their callers' business.

/// Runs `work` on a thread of its own named `name`, at the lowest CPU priority. An error when
/// no thread could be started (the process's thread limit).
pub fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_priority();
            work();
        })?;
    Ok(())
}

/// The nice value of a background thread: the lowest priority there is.
pub const NICE: i32 = 19;

/// Lowers the calling thread's priority to [`NICE`]. On Linux `setpriority` with a thread's
/// id applies to that thread alone. A failure is not worth an error: the work runs at the
/// daemon's priority, as it did before.
fn lower_priority() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE);
}

#[cfg(test)]
mod tests {
    use rustix::process::getpriority_process;
    use rustix::thread::gettid;

    use super::*;

    #[test]
    fn work_runs_on_a_thread_of_its_own_at_the_lowest_priority_and_the_caller_s_stays() {
        let before = getpriority_process(Some(gettid())).unwrap();
        let (tell, told) = std::sync::mpsc::channel();
        spawn("batchdrop-test", move || {
            let name = std::thread::current().name().map(str::to_owned);
            let nice = getpriority_process(Some(gettid())).unwrap();
            tell.send((name, nice)).unwrap();
        })
        .unwrap();
        let (name, nice) = told.recv().unwrap();
        assert_eq!(name.as_deref(), Some("batchdrop-test"));
        assert_eq!(nice, NICE);
        assert_eq!(getpriority_process(Some(gettid())).unwrap(), before);
        assert!(before < NICE, "the test itself runs at nice {before}");
    }
}
