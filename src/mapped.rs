//! Per-watch mapping (`mapping = "crm.mapping.json"`, issue #24): each ready file of such a
//! watch is read once through its Data Prep mapping set (the `batchdrop-mapping` crate,
//! streaming), converted and checked against the dataset's schema where pre-flight knows it,
//! and written to a staged file under the state dir (`staged/`), which is what is uploaded;
//! the dropped file is archived as it was dropped.
//!
//! Durability: the staged file is written under a temporary name, fsynced, renamed and its
//! folder fsynced; only then is it recorded (`Store::record_staged`), in the same transaction
//! that makes its file one of the staged format. A crash before that record maps the file
//! again from the start; after it, the recorded staged file is the one uploaded, whatever the
//! mapping set says by then (its hash and the staged file's are recorded).
//!
//! This module maps and records staged files; it must not batch, upload or archive them, nor
//! talk to the platform.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use batchdrop_mapping::{InputFormat, MapError, Mapper, MappingSet, Options, Output, Rejection};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::api::RegistrySchema;
use crate::config::{MappedFormat, WatchMapping};
use crate::format::Format;
use crate::store::{FileRow, RejectedRow, StagedFile, Store, StoreError};

/// The folder of the state dir that holds staged files.
pub const FOLDER: &str = "staged";
/// Rejected rows kept per file for its receipt (all are counted).
pub const MAX_REJECTED_KEPT: usize = 1000;

/// A watch's loaded mapping set, ready to map its files.
pub struct WatchMapper {
    pub mapper: Mapper,
    /// The mapping set's file.
    pub path: PathBuf,
    /// SHA-256 of the mapping set's bytes, as loaded.
    pub sha256: String,
    pub output: MappedFormat,
}

/// The loaded mapping set of each watch that has one, by watch name; swapped on a reload.
pub type Mappers = Arc<RwLock<BTreeMap<String, Arc<WatchMapper>>>>;

/// Why a watch's mapping set cannot be used: the watch is refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "mapping set {path} cannot be read ({source}); fix the watch's `mapping` path or the file's permissions and reload"
    )]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "mapping set {path}: {message}; fix the mapping set (docs/mapping.md lists what is supported) and reload"
    )]
    Invalid { path: PathBuf, message: String },
}

/// Loads a watch's mapping set, with the dataset's schema when pre-flight has it (values are
/// then converted to the schema's types and every row is checked).
pub fn load(
    mapping: &WatchMapping,
    schema: Option<&RegistrySchema>,
) -> Result<(WatchMapper, Vec<String>), LoadError> {
    let bytes = std::fs::read(&mapping.path).map_err(|source| LoadError::Read {
        path: mapping.path.clone(),
        source,
    })?;
    let set = MappingSet::from_json(&bytes).map_err(|e| LoadError::Invalid {
        path: mapping.path.clone(),
        message: e.to_string(),
    })?;
    let mut warnings = Vec::new();
    let schema = schema.and_then(|s| {
        match batchdrop_mapping::Schema::compile(&s.document) {
            Ok(compiled) => Some(compiled),
            Err(e) => {
                warnings.push(format!(
                    "schema {} cannot be used for mapping ({e}): values stay as the mapping makes them and rows are not checked",
                    s.id
                ));
                None
            }
        }
    });
    if schema.is_none() && warnings.is_empty() {
        warnings.push(
            "the dataset's schema is not known: mapped values stay as the mapping makes them (text unless an expression converts it) and rows are not checked before upload"
                .to_owned(),
        );
    }
    let mapper = Mapper::new(set, schema);
    warnings.extend(mapper.warnings());
    Ok((
        WatchMapper {
            mapper,
            path: mapping.path.clone(),
            sha256: format!("{:x}", Sha256::digest(&bytes)),
            output: mapping.output,
        },
        warnings,
    ))
}

/// What mapping one file came to.
#[derive(Debug)]
pub enum Staging {
    /// Written, fsynced and renamed: ready to be recorded.
    Staged(StagedFile),
    /// What is there now is not the version queued (or descriptors ran short): later.
    NotNow,
    /// The file cannot be mapped (or no row of it could): it fails with this reason. A staged
    /// record may come with it, for the receipt's list of rejected rows.
    Refused(String, Option<StagedFile>),
}

/// Maps the queued version of `file` into `state_dir/staged/`. Blocking.
pub fn stage(watch: &WatchMapper, file: &FileRow, state_dir: &Path) -> io::Result<Staging> {
    let Some(opened) = crate::batcher::open_queued(file)? else {
        return Ok(Staging::NotNow);
    };
    let queued = file.identity();
    // The original is hashed by the read that maps it.
    let mut original = Sha256::new();
    let mut original_bytes = 0u64;
    let input = match file.format {
        Format::Csv => InputFormat::Csv(Default::default()),
        Format::Json if file.multiline_json => InputFormat::JsonMultiLine,
        Format::Json => InputFormat::JsonLines,
        Format::Parquet => InputFormat::Parquet,
    };
    let folder = state_dir.join(FOLDER);
    std::fs::create_dir_all(&folder)?;
    let output = watch.output.format();
    let final_path = folder.join(format!("{}.{}", file.id, output.as_str()));
    let partial = folder.join(format!("{}.{}.partial", file.id, output.as_str()));
    let writer = Hashing {
        inner: io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&partial)?),
        hasher: Sha256::new(),
    };
    let mut rejected_rows: Vec<RejectedRow> = Vec::new();
    let mut on_rejected = |rejection: Rejection| {
        if rejected_rows.len() < MAX_REJECTED_KEPT {
            rejected_rows.push(RejectedRow {
                row: rejection.row,
                line: rejection.line,
                reasons: rejection.reasons.into_iter().map(|r| r.message).collect(),
            });
        }
    };
    let shared = SharedWriter(Arc::new(std::sync::Mutex::new(Some(writer))));
    let mapped = batchdrop_mapping::map_seeing(
        &watch.mapper,
        opened.file.try_clone()?,
        &file.abs_path(),
        &input,
        Some(Output {
            format: match watch.output {
                MappedFormat::Parquet => batchdrop_mapping::OutputFormat::Parquet,
                MappedFormat::Json => batchdrop_mapping::OutputFormat::JsonLines,
            },
            writer: shared.clone(),
        }),
        &Options::default(),
        &mut on_rejected,
        Some(&mut |bytes: &[u8]| {
            original.update(bytes);
            original_bytes += bytes.len() as u64;
        }),
    );
    let summary = match mapped {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            match &e {
                MapError::Read { source, .. } if crate::disk::is_transient(source) => {
                    return Ok(Staging::NotNow);
                }
                // The disk, not the file: it stays queued and is mapped again.
                MapError::Write {
                    source: batchdrop_mapping::WriteError::Io(source),
                    ..
                } => return Err(io::Error::new(source.kind(), e.to_string())),
                _ => {}
            }
            return Ok(Staging::Refused(
                format!(
                    "{} cannot be mapped with mapping set {}: {e}; fix the file (or the mapping set) and drop the file again",
                    file.rel_path,
                    watch.path.display()
                ),
                None,
            ));
        }
    };
    // The file must still be the version queued: one written to while it was mapped is
    // mapped again once the watcher queues its new version.
    if crate::disk::Identity::of(&opened.file.metadata()?) != queued
        || original_bytes != queued.size
    {
        let _ = std::fs::remove_file(&partial);
        return Ok(Staging::NotNow);
    }
    // A crash here leaves a partial staged file that nothing records: mapped again at start.
    crate::crashpoint::hit("mapped-unsynced");
    let writer = shared
        .0
        .lock()
        .unwrap()
        .take()
        .expect("the writer is handed back once");
    let sha256 = format!("{:x}", writer.hasher.finalize());
    let original_sha256 = format!("{:x}", original.finalize());
    let staged_file = writer.inner.into_inner().map_err(|e| e.into_error())?;
    staged_file.sync_all()?;
    drop(staged_file);
    std::fs::rename(&partial, &final_path)?;
    crate::disk::Dir::anchor(&folder)?.sync()?;
    crate::crashpoint::hit("staged-unrecorded");
    let identity = crate::disk::Identity::read(&final_path)?;
    rejected_rows.sort_by_key(|r| r.row);
    let staged = StagedFile {
        file_id: file.id,
        path: final_path.to_string_lossy().into_owned(),
        name: format!("{}.{}", file.rel_path, output.as_str()),
        format: output,
        identity,
        sha256,
        original_sha256,
        original_format: file.format,
        mapping_path: watch.path.to_string_lossy().into_owned(),
        mapping_sha256: watch.sha256.clone(),
        records_in: summary.rows_in as i64,
        records_out: summary.rows_out as i64,
        rejected: summary.rejected as i64,
        rejected_rows,
    };
    if summary.rows_out == 0 {
        let why = if summary.rows_in == 0 {
            format!("{} has no records to map", file.rel_path)
        } else {
            format!(
                "none of the {} rows of {} could be mapped with mapping set {} (its receipt lists the rows and why: {}); fix the rows or the mapping set and drop the file again",
                summary.rows_in,
                file.rel_path,
                watch.path.display(),
                first_reasons(&staged.rejected_rows)
            )
        };
        return Ok(Staging::Refused(why, Some(staged)));
    }
    Ok(Staging::Staged(staged))
}

fn first_reasons(rows: &[RejectedRow]) -> String {
    rows.iter()
        .take(3)
        .map(|r| format!("row {}: {}", r.row, r.reasons.join("; ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Maps the ready files of a mapped watch that have no staged file yet, and records them;
/// returns the page with those files now of the staged format, without the files that
/// failed or must wait. None if shutdown came first (nothing unmapped may be sealed).
pub async fn stage_ready(
    store: &Store,
    watch: Arc<WatchMapper>,
    state_dir: &Path,
    ready: Vec<FileRow>,
    shutdown: &CancellationToken,
) -> Result<Option<Vec<FileRow>>, StoreError> {
    let ids: Vec<i64> = ready.iter().map(|f| f.id).collect();
    let done = store.staged_among(&ids).await?;
    let to_map: Vec<(usize, FileRow)> = ready
        .iter()
        .enumerate()
        .filter(|(_, f)| !done.contains(&f.id))
        .map(|(i, f)| (i, f.clone()))
        .collect();
    if to_map.is_empty() {
        return Ok(Some(ready));
    }
    let dir = state_dir.to_path_buf();
    let mapper = watch.clone();
    let map = move |f: FileRow| stage(&mapper, &f, &dir);
    let Some(results) = crate::batcher::each_blocking(to_map, shutdown, map).await else {
        return Ok(None);
    };
    let mut ready = ready;
    let mut dropped = std::collections::HashSet::new();
    let mut clean = Vec::new();
    for (i, result) in results {
        let f = &mut ready[i];
        match result {
            Ok(Staging::Staged(staged)) => {
                if !store.record_staged(&staged).await? {
                    // No longer ready (or staged by an earlier pass): not this pass's to seal,
                    // and its staged bytes are nobody's.
                    forget_unrecorded(store, &staged).await?;
                    dropped.insert(f.id);
                    continue;
                }
                tracing::info!(
                    file = %f.rel_path, staged = %staged.path, rows_in = staged.records_in,
                    rows_out = staged.records_out, rejected = staged.rejected, "mapped"
                );
                if staged.rejected > 0 {
                    tracing::warn!(file = %f.rel_path, "{} of {} rows of {} were rejected by the mapping or the schema and are not uploaded (its receipt lists them: {})", staged.rejected, staged.records_in, f.rel_path, first_reasons(&staged.rejected_rows));
                } else if watch.mapper.schema().is_some() {
                    clean.push(f.id);
                }
                f.format = staged.format;
                f.multiline_json = false;
                f.sha256 = Some(staged.original_sha256.clone());
            }
            Ok(Staging::NotNow) => {
                dropped.insert(f.id);
            }
            Ok(Staging::Refused(why, staged)) => {
                tracing::warn!(file = %f.rel_path, "{why}");
                if let Some(staged) = staged
                    && !store.record_staged(&staged).await?
                {
                    forget_unrecorded(store, &staged).await?;
                }
                store.fail_file(f.id, &why).await?;
                dropped.insert(f.id);
            }
            Err(e) => {
                tracing::error!(file = %f.rel_path, "cannot map {} into the state dir ({e}); it stays queued and is mapped again shortly", f.rel_path);
                dropped.insert(f.id);
            }
        }
    }
    store.mark_validated(&clean).await?;
    ready.retain(|f| !dropped.contains(&f.id));
    Ok(Some(ready))
}

/// Removes a staged file that could not be recorded, unless the record its file already has
/// names the same path (the bytes that record describes).
async fn forget_unrecorded(store: &Store, staged: &StagedFile) -> Result<(), StoreError> {
    let recorded = store.staged_file(staged.file_id).await?;
    if recorded.is_some_and(|r| r.path == staged.path) {
        return Ok(());
    }
    if let Err(e) = remove(staged) {
        tracing::warn!(staged = %staged.path, "cannot remove an unrecorded staged file ({e}); remove it by hand");
    }
    Ok(())
}

/// Removes what the staged folder holds that no unfinished file needs: partial files and
/// unrecorded staged files of a crash, and the staged files of files superseded or finished
/// while their removal failed. Called at start, before the batcher runs: while it runs, a
/// staged file is briefly on disk before its record, and must not be taken for litter.
pub async fn sweep(store: &Store, state_dir: &Path) -> Result<usize, StoreError> {
    let folder = state_dir.join(FOLDER);
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Ok(0);
    };
    // By name: every staged file lives in this one folder, and the state dir may be spelled
    // differently (relative, through a symlink) than when a path was recorded.
    let in_use: std::collections::HashSet<std::ffi::OsString> = store
        .staged_paths_in_use()
        .await?
        .iter()
        .filter_map(|path| Path::new(path).file_name().map(|name| name.to_owned()))
        .collect();
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if in_use.contains(&entry.file_name()) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(staged = %path.display(), "cannot remove a staged file no file needs ({e}); remove it by hand")
            }
        }
    }
    if removed > 0 {
        tracing::info!(folder = %folder.display(), removed, "removed staged files no file needs");
    }
    Ok(removed)
}

/// The file a staged file is uploaded as: the staged bytes under the staged name, with the
/// staged file's identity (checked when it is opened, as a dropped file's is).
pub fn upload_view(file: &FileRow, staged: &StagedFile) -> FileRow {
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(&staged.path);
    FileRow {
        root: path
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        rel_path: staged.name.clone(),
        raw_path: Some(path.as_os_str().as_bytes().to_vec()),
        dev: staged.identity.dev as i64,
        ino: staged.identity.ino as i64,
        size: staged.identity.size as i64,
        mtime_ns: staged.identity.mtime_ns,
        format: staged.format,
        multiline_json: false,
        ..file.clone()
    }
}

/// Removes a staged file once its file is finished (its bytes are no longer needed). A file
/// already gone is fine.
pub fn remove(staged: &StagedFile) -> io::Result<()> {
    match std::fs::remove_file(&staged.path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The staged file's writer, handed to the mapping engine and taken back once it is done
/// (the engine takes its writer by value).
#[derive(Clone)]
struct SharedWriter(Arc<std::sync::Mutex<Option<Hashing<io::BufWriter<std::fs::File>>>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.lock().unwrap().as_mut() {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("the staged file is closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0.lock().unwrap().as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "ID,F_NAME,YOB\n1,Anna,1980\n2,Bo,x\n";

    fn mapper(mappings: serde_json::Value) -> WatchMapper {
        let set = MappingSet::from_json(mappings.to_string().as_bytes()).unwrap();
        WatchMapper {
            mapper: Mapper::new(set, None),
            path: "m.json".into(),
            sha256: "m".into(),
            output: MappedFormat::Json,
        }
    }

    /// `name` with `content` dropped into `dir/drop` and queued; its ready row.
    async fn queued(dir: &Path, name: &str, content: &str) -> (Store, FileRow) {
        let root = dir.join("drop");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(name), content).unwrap();
        let id = crate::disk::Identity::read(&root.join(name)).unwrap();
        let store = Store::open_exclusive(&dir.join("state"), false)
            .await
            .unwrap();
        store
            .record_ready_many(&[crate::store::NewFile {
                watch: "w".into(),
                dataset: "d".into(),
                format: Format::Csv,
                multiline_json: false,
                root: root.to_string_lossy().into_owned(),
                rel_path: name.into(),
                dev: id.dev as i64,
                ino: id.ino as i64,
                size: id.size as i64,
                mtime_ns: id.mtime_ns,
                raw_path: None,
            }])
            .await
            .unwrap();
        let file = store.ready_files("w", 10).await.unwrap().remove(0);
        (store, file)
    }

    #[tokio::test]
    async fn a_file_is_staged_whole_with_its_hashes_and_rejected_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (store, file) = queued(dir.path(), "people.csv", CSV).await;
        let watch = mapper(serde_json::json!({"mappings": [
            {"sourceType": "ATTRIBUTE", "source": "F_NAME", "destination": "name"},
            {"sourceType": "EXPRESSION", "source": "to_integer(YOB)", "destination": "year"}
        ]}));
        let Staging::Staged(staged) = stage(&watch, &file, &dir.path().join("state")).unwrap()
        else {
            panic!("staged");
        };
        let bytes = std::fs::read(&staged.path).unwrap();
        assert_eq!(bytes, b"{\"name\":\"Anna\",\"year\":1980}\n");
        assert_eq!(staged.sha256, format!("{:x}", Sha256::digest(&bytes)));
        assert_eq!(
            staged.original_sha256,
            format!("{:x}", Sha256::digest(CSV.as_bytes()))
        );
        assert_eq!(
            (staged.records_in, staged.records_out, staged.rejected),
            (2, 1, 1)
        );
        assert_eq!(staged.rejected_rows[0].row, 2);
        assert!(
            staged.rejected_rows[0].reasons[0].contains("to_integer"),
            "{:?}",
            staged.rejected_rows
        );
        let left: Vec<_> = std::fs::read_dir(dir.path().join("state").join(FOLDER))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from(format!("{}.json", file.id))]
        );
        // Recorded once; a second record of the same file is refused.
        assert!(store.record_staged(&staged).await.unwrap());
        assert!(!store.record_staged(&staged).await.unwrap());
        assert_eq!(store.staged_file(file.id).await.unwrap(), Some(staged));
        let row = store.file(file.id).await.unwrap().unwrap();
        assert_eq!(row.format, Format::Json, "batched as the staged format");
    }

    #[tokio::test]
    async fn a_missing_column_refuses_the_file_and_a_changed_one_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, file) = queued(dir.path(), "people.csv", CSV).await;
        let state = dir.path().join("state");
        let watch = mapper(serde_json::json!({"mappings": [
            {"sourceType": "ATTRIBUTE", "source": "EMAIL", "destination": "mail"}
        ]}));
        match stage(&watch, &file, &state).unwrap() {
            Staging::Refused(why, None) => {
                assert!(why.contains("EMAIL") && why.contains("people.csv"), "{why}")
            }
            other => panic!("refused: {other:?}"),
        }
        // Written to since it was queued: not the version queued, mapped later.
        std::fs::write(
            dir.path().join("drop/people.csv"),
            format!("{CSV}3,Cleo,1990\n"),
        )
        .unwrap();
        let watch = mapper(serde_json::json!({"mappings": [
            {"sourceType": "ATTRIBUTE", "source": "F_NAME", "destination": "name"}
        ]}));
        assert!(matches!(
            stage(&watch, &file, &state).unwrap(),
            Staging::NotNow
        ));
    }
}
