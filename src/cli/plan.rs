//! `batchdrop plan` (also `batchdrop run --once --dry-run`): what a run would do with the files
//! present now, without doing it. Per watch: whether pre-flight lets it run, which files would
//! be taken and how they would be grouped into batches, and which would be refused and why
//! (names, symlinks, empty or oversized files, unknown formats, repeated content, rows that
//! break the schema).
//!
//! It moves nothing, uploads nothing and records nothing in the state database; the only
//! write is pre-flight's copy of a fetched schema in the state dir. The listing is a preview:
//! files that change meanwhile, and content ingested by earlier runs, are the daemon's to
//! judge.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{CommandError, Connection};
use crate::config::{Config, Format, Watch};
use crate::preflight::validate::Validator;
use crate::preflight::{Verdict, check_watch};
use crate::watcher::{is_ignored_name, name_problem};

/// A file found in a watch folder.
struct Found {
    rel: String,
    path: PathBuf,
    size: u64,
    format: Format,
}

pub async fn run(config: &Config) -> Result<u8, CommandError> {
    let connection = match Connection::open(config).await {
        Ok(c) => Some(c),
        Err(e) => {
            println!("platform: not reached ({e}); datasets and rows are not checked");
            None
        }
    };
    for watch in &config.watches {
        println!(
            "watch {} -> dataset {}",
            watch.path.display(),
            watch.dataset
        );
        let mut validator = None;
        if let Some(connection) = &connection {
            let report = check_watch(&connection.api, &config.state_dir, watch).await;
            for c in report.checks.iter().filter(|c| c.verdict != Verdict::Pass) {
                println!("  {} {}: {}", c.verdict.label(), c.subject, c.message);
            }
            match report.worst() {
                Verdict::Refuse => {
                    println!("  the watch would be refused: nothing would be taken");
                    continue;
                }
                Verdict::Missing => {
                    println!("  the watch would be blocked: its files would wait");
                    continue;
                }
                _ => {}
            }
            validator = report
                .schema
                .as_ref()
                .filter(|_| watch.validate != crate::config::Validate::Off)
                .and_then(|s| Validator::new(s, report.dataset.as_ref()).ok());
        }
        let (found, mut refused) = list(watch);
        let taken = judge(watch, found, validator.as_ref(), &mut refused);
        print_batches(watch, &taken);
        for (rel, why) in &refused {
            println!(
                "  refused {}: {}",
                crate::telemetry::escape_controls(rel),
                crate::telemetry::escape_controls(why)
            );
        }
    }
    if let Some(connection) = connection
        && let Some(emulator) = connection.embedded
    {
        emulator.shutdown().await;
    }
    Ok(0)
}

/// The data files below the watch folder, and the paths refused by name or kind.
fn list(watch: &Watch) -> (Vec<Found>, Vec<(String, String)>) {
    let mut found = Vec::new();
    let mut refused = Vec::new();
    let mut folders = vec![watch.path.clone()];
    while let Some(folder) = folders.pop() {
        if folder == watch.archive_dir || folder == watch.failed_dir {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(rel) = path.strip_prefix(&watch.path) else {
                continue;
            };
            let rel = rel.to_string_lossy().into_owned();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                folders.push(path);
                continue;
            }
            if is_ignored_name(&name) || !watch.patterns.selects(&rel) {
                continue;
            }
            if let Some(why) = name_problem(&rel) {
                refused.push((rel, why));
                continue;
            }
            let size = if meta.file_type().is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(target) if target.is_file() && watch.follow_symlinks => target.len(),
                    Ok(target) if target.is_file() && symlink_stays_below(&path, &watch.path) => {
                        target.len()
                    }
                    // As the daemon's log says it (the watcher's `Untaken`).
                    Ok(target) if target.is_dir() => {
                        refused.push((
                            rel,
                            "a symbolic link to a folder: never followed, so nothing in it is taken; move the files themselves into the drop folder".to_owned(),
                        ));
                        continue;
                    }
                    Ok(target) if !target.is_file() => {
                        refused.push((rel, untaken(target.file_type(), "a symbolic link to ")));
                        continue;
                    }
                    _ => {
                        refused.push((
                            rel,
                            "a symlink that leads out of the watch folder (or to no file); set follow_symlinks = true to take such links".to_owned(),
                        ));
                        continue;
                    }
                }
            } else if meta.is_file() {
                meta.len()
            } else {
                refused.push((rel, untaken(meta.file_type(), "")));
                continue;
            };
            match watch.format_for(&rel) {
                Some(format) => found.push(Found {
                    rel,
                    path,
                    size,
                    format,
                }),
                None => refused.push((
                    rel,
                    "its format is not known from its extension (.json, .jsonl, .csv, .parquet); set the watch's format".to_owned(),
                )),
            }
        }
    }
    (found, refused)
}

/// Why a pipe, socket or device (or a link to one, `through`) is left alone.
fn untaken(file_type: std::fs::FileType, through: &str) -> String {
    format!(
        "{through}{}: batchdrop takes regular files only and never opens anything else (no receipt; the log names it); write the data to a file instead",
        crate::disk::Kind::of_type(file_type).describe()
    )
}

fn symlink_stays_below(link: &Path, root: &Path) -> bool {
    match (std::fs::canonicalize(link), std::fs::canonicalize(root)) {
        (Ok(target), Ok(root)) => target.starts_with(root),
        _ => false,
    }
}

/// The files that would be taken; the others join `refused` with their reason.
fn judge(
    watch: &Watch,
    found: Vec<Found>,
    validator: Option<&Validator>,
    refused: &mut Vec<(String, String)>,
) -> Vec<Found> {
    let mut taken = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for f in found {
        if f.size == 0 {
            refused.push((
                f.rel,
                "empty (the platform fails a batch holding a 0-byte file, code 106)".to_owned(),
            ));
            continue;
        }
        if f.size > watch.max_file_bytes {
            refused.push((
                f.rel,
                format!(
                    "{} bytes, over max_file_bytes ({})",
                    f.size, watch.max_file_bytes
                ),
            ));
            continue;
        }
        if !watch.allow_duplicates
            && let Ok(file) = std::fs::File::open(&f.path)
            && let Ok(sha) = crate::disk::sha256(&file, f.size)
        {
            if let Some(first) = seen.get(&sha) {
                refused.push((
                    f.rel,
                    format!("the same content as {first}, which would be ingested instead"),
                ));
                continue;
            }
            seen.insert(sha, f.rel.clone());
        }
        if let Some(validator) = validator
            && let Ok(file) = std::fs::File::open(&f.path)
            && let Ok(check) = validator.check_file(file, f.format, watch.multiline_json)
            && !check.is_clean()
            && watch.validate == crate::config::Validate::Reject
        {
            let first = &check.problems[0];
            refused.push((
                f.rel,
                format!(
                    "{} of {} records break the schema (first: row {}: {} ({})); see `batchdrop validate`",
                    check.bad_rows, check.records, first.row, first.message, first.code
                ),
            ));
            continue;
        }
        taken.push(f);
    }
    taken
}

/// The batches the taken files would make: one format each, at most `max_files` files and
/// `max_bytes` bytes (a larger file travels alone), in name order.
fn print_batches(watch: &Watch, taken: &[Found]) {
    let mut by_format: Vec<(Format, Vec<&Found>)> = Vec::new();
    for f in taken {
        match by_format.iter_mut().find(|(format, _)| *format == f.format) {
            Some((_, files)) => files.push(f),
            None => by_format.push((f.format, vec![f])),
        }
    }
    let mut n = 0;
    for (format, files) in by_format {
        let mut batch: Vec<&Found> = Vec::new();
        let mut bytes = 0u64;
        let mut flush = |batch: &mut Vec<&Found>, bytes: &mut u64| {
            if batch.is_empty() {
                return;
            }
            n += 1;
            let names: Vec<&str> = batch.iter().map(|f| f.rel.as_str()).collect();
            println!(
                "  batch {n} ({format}, {} files, {} bytes): {}",
                batch.len(),
                bytes,
                crate::telemetry::escape_controls(&names.join(", "))
            );
            batch.clear();
            *bytes = 0;
        };
        for f in files {
            if !batch.is_empty()
                && (batch.len() as u64 >= watch.max_files || bytes + f.size > watch.max_bytes)
            {
                flush(&mut batch, &mut bytes);
            }
            bytes += f.size;
            batch.push(f);
        }
        flush(&mut batch, &mut bytes);
    }
    if n == 0 {
        println!("  nothing would be taken");
    }
}
