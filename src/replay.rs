//! `.replay` sidecars: what one says (parsing) and which platform batches it means (resolving
//! names and ids against the state database into a [`ReplayRequest`]).
//!
//! A sidecar `NAME.replay` beside a data file `NAME` turns NAME's batch into a replay batch.
//! Empty, it replaces the batches whose data for a file of the same name is in the dataset
//! now; otherwise it is TOML: `replaces = ["BATCH_ID" or "FILE_NAME", ...]` and an optional
//! `reason`. `batchdrop push --replaces` resolves its arguments the same way.
//!
//! This module must not move files, watch folders or talk to the platform: the watcher decides
//! when a sidecar is read and what becomes of its file, and a batch id that this state database
//! does not know is passed on for the platform to check (it refuses predecessors that do not
//! exist or belong to another dataset, and the uploader puts its answer in the receipt).

use serde::Deserialize;

use crate::store::{Predecessors, ReplayRequest, Store, StoreError};

/// The suffix that makes a file a sidecar.
pub const SUFFIX: &str = ".replay";

/// The reason sent when a sidecar names none.
pub const DEFAULT_REASON: &str = "replace";

/// The data file a sidecar belongs to (`a/b.json.replay` → `a/b.json`), if `rel` is a sidecar.
pub fn data_file_of(rel: &str) -> Option<&str> {
    rel.strip_suffix(SUFFIX)
        .filter(|d| !d.is_empty() && !d.ends_with('/'))
}

/// What a sidecar asks for, before resolution.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sidecar {
    /// Batch ids or file names; empty means "the earlier ingestion of a file of this name".
    pub replaces: Vec<String>,
    pub reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSidecar {
    replaces: Vec<String>,
    reason: Option<String>,
}

/// Who asks for a replay, as messages name it and say what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A `.replay` sidecar (`the sidecar a/b.json.replay`).
    Sidecar(String),
    /// `batchdrop push --replaces`.
    PushOption,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Sidecar(name) => f.write_str(name),
            Origin::PushOption => f.write_str("--replaces"),
        }
    }
}

impl Origin {
    /// Where the predecessors are written, to be fixed.
    fn field(&self) -> &'static str {
        match self {
            Origin::Sidecar(_) => "`replaces`",
            Origin::PushOption => "--replaces",
        }
    }

    /// How `file` is sent again once that is fixed.
    fn again(&self, file: &str) -> String {
        match self {
            Origin::Sidecar(_) => format!(
                "drop {file} and its sidecar again (or fix the sidecar in the failed folder and run `batchdrop retry {file}`)"
            ),
            Origin::PushOption => "run the push again".to_owned(),
        }
    }

    /// How `file` goes to dataset `other` instead.
    fn elsewhere(&self, file: &str, other: &str) -> String {
        match self {
            Origin::Sidecar(_) => format!("drop {file} into the folder of dataset {other}"),
            Origin::PushOption => format!("push it with --dataset {other}"),
        }
    }
}

/// Why a replay cannot be asked for. Each message names the sidecar (or `--replaces`) and the
/// data file, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "{origin} is not valid: {message}. Write `replaces = [\"BATCH_ID\" or \"FILE_NAME\", ...]` and optionally `reason = \"...\"` in it, or leave it empty to replace the earlier ingestion of {file}; then drop {file} and its sidecar again (or fix the sidecar in the failed folder and run `batchdrop retry {file}`)"
    )]
    Malformed {
        origin: String,
        file: String,
        message: String,
    },
    /// The sidecar is not something batchdrop reads (a FIFO, a symlink, a device, too long).
    #[error(
        "{origin} was not read: {why}. Write the sidecar as a regular file of a few lines beside {file}, then drop {file} and its sidecar again (or drop {file} alone to ingest it as new data)"
    )]
    Refused {
        origin: String,
        file: String,
        why: String,
    },
    #[error(
        "{origin} asks to replace the earlier ingestion of {file}, but no data of a file named {file} is in dataset {dataset} now (never ingested, or already replaced or reverted). Delete the sidecar to ingest {file} as new data, or name the batch to replace in it (replaces = [\"BATCH_ID\"]); then drop {file} again (or run `batchdrop retry {file}`, which brings back the sidecar too if it is still beside the failed file)"
    )]
    NothingToReplace {
        origin: Origin,
        file: String,
        dataset: String,
    },
    #[error(
        "{origin} names the predecessor {name:?}, which is neither a batch nor a file ingested into dataset {dataset}; fix {} (use a batch id from `batchdrop status`, or the name of a file ingested earlier), then {}",
        .origin.field(),
        .origin.again(.file)
    )]
    UnknownPredecessor {
        origin: Origin,
        file: String,
        name: String,
        dataset: String,
    },
    #[error(
        "{origin} names {name:?}, whose data is not in dataset {dataset} now (it never succeeded, or it was already replaced or reverted); fix {}, then {}",
        .origin.field(),
        .origin.again(.file)
    )]
    NothingLive {
        origin: Origin,
        file: String,
        name: String,
        dataset: String,
    },
    #[error(
        "{origin} names {name:?}, which belongs to dataset {other} but {file} goes to dataset {dataset}: a replay can only replace data of its own dataset. Fix {} and {}, or {}",
        .origin.field(),
        .origin.again(.file),
        .origin.elsewhere(.file, .other)
    )]
    OtherDataset {
        origin: Origin,
        file: String,
        name: String,
        dataset: String,
        other: String,
    },
    #[error("state database error while resolving {1}: {0}")]
    Store(StoreError, String),
}

/// Parses a sidecar's text (`origin` names it in errors; `file` is its data file).
pub fn parse(origin: &str, file: &str, text: &str) -> Result<Sidecar, ReplayError> {
    if text.trim().is_empty() {
        return Ok(Sidecar::default());
    }
    let malformed = |message: String| ReplayError::Malformed {
        origin: origin.to_owned(),
        file: file.to_owned(),
        message,
    };
    let raw: RawSidecar = toml::from_str(text)
        .map_err(|e| malformed(e.message().trim().trim_end_matches('.').to_owned()))?;
    let replaces: Vec<String> = raw
        .replaces
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if replaces.is_empty() {
        return Err(malformed(
            "`replaces` is empty (leave the whole file empty to replace the earlier ingestion of the same file name)".into(),
        ));
    }
    let reason = raw.reason.map(|r| r.trim().to_owned());
    if reason.as_deref() == Some("") {
        return Err(malformed("`reason` is empty".into()));
    }
    Ok(Sidecar { replaces, reason })
}

/// Resolves a sidecar of `file` (a data file going to `dataset`) into the platform's batch ids.
/// `sidecar` is the sidecar's path below the watch root, recorded with the file (`None` for
/// `push --replaces`, whose `origin` then names the option).
pub async fn resolve(
    store: &Store,
    dataset: &str,
    file: &str,
    origin: &Origin,
    sidecar: Option<&str>,
    sc: &Sidecar,
) -> Result<ReplayRequest, ReplayError> {
    let db = |e: StoreError| ReplayError::Store(e, origin.to_string());
    let mut preds: Vec<String> = Vec::new();
    if sc.replaces.is_empty() {
        preds = store
            .live_batches_that_ingested(dataset, file)
            .await
            .map_err(db)?;
        if preds.is_empty() {
            return Err(ReplayError::NothingToReplace {
                origin: origin.clone(),
                file: file.to_owned(),
                dataset: dataset.to_owned(),
            });
        }
    }
    let folder = file.rsplit_once('/').map(|(dir, _)| dir);
    for entry in &sc.replaces {
        let name = entry.trim_start_matches('$');
        if let Some(b) = store.batch_by_remote(name).await.map_err(db)? {
            if b.dataset != dataset {
                return Err(ReplayError::OtherDataset {
                    origin: origin.clone(),
                    file: file.to_owned(),
                    name: name.to_owned(),
                    dataset: dataset.to_owned(),
                    other: b.dataset,
                });
            }
            preds.push(name.to_owned());
            continue;
        }
        // A file name: as written (relative to the watch root), or beside the data file.
        let mut candidates = vec![name.to_owned()];
        if let Some(dir) = folder {
            candidates.push(format!("{dir}/{name}"));
        }
        let mut found = false;
        for cand in &candidates {
            if store.name_known(dataset, cand).await.map_err(db)? {
                let live = store
                    .live_batches_that_ingested(dataset, cand)
                    .await
                    .map_err(db)?;
                if live.is_empty() {
                    return Err(ReplayError::NothingLive {
                        origin: origin.clone(),
                        file: file.to_owned(),
                        name: name.to_owned(),
                        dataset: dataset.to_owned(),
                    });
                }
                preds.extend(live);
                found = true;
                break;
            }
        }
        if found {
            continue;
        }
        for cand in &candidates {
            if let Some(other) = store
                .files_by_path(cand)
                .await
                .map_err(db)?
                .into_iter()
                .find(|f| f.dataset != dataset)
            {
                return Err(ReplayError::OtherDataset {
                    origin: origin.clone(),
                    file: file.to_owned(),
                    name: name.to_owned(),
                    dataset: dataset.to_owned(),
                    other: other.dataset,
                });
            }
        }
        if looks_like_file_name(name) {
            return Err(ReplayError::UnknownPredecessor {
                origin: origin.clone(),
                file: file.to_owned(),
                name: name.to_owned(),
                dataset: dataset.to_owned(),
            });
        }
        // A batch this state database never saw (ingested by other means): the platform
        // checks that it exists and belongs to the dataset when the replay batch is created.
        preds.push(name.to_owned());
    }
    let mut unique = Vec::new();
    for p in preds {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    Ok(ReplayRequest {
        predecessors: Predecessors(unique),
        reason: sc
            .reason
            .clone()
            .unwrap_or_else(|| DEFAULT_REASON.to_owned()),
        sidecar: sidecar.map(str::to_owned),
    })
}

/// Platform batch ids are opaque but never contain a dot, a slash or blanks; file names do.
fn looks_like_file_name(name: &str) -> bool {
    name.contains(['.', '/', ' ']) || name.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names_map_to_their_data_file() {
        assert_eq!(data_file_of("a.json.replay"), Some("a.json"));
        assert_eq!(data_file_of("d/a.csv.replay"), Some("d/a.csv"));
        assert_eq!(data_file_of("a.json"), None);
        assert_eq!(data_file_of("d/.replay"), None);
    }

    #[test]
    fn empty_and_explicit_sidecars_parse() {
        assert_eq!(parse("s", "f", " \n").unwrap(), Sidecar::default());
        let sc = parse(
            "s",
            "f",
            "replaces = [\"01ABC\", \" old.json \"]\nreason = \"fix prices\"\n",
        )
        .unwrap();
        assert_eq!(sc.replaces, vec!["01ABC", "old.json"]);
        assert_eq!(sc.reason.as_deref(), Some("fix prices"));
    }

    #[test]
    fn malformed_sidecars_say_what_to_write() {
        for text in [
            "replaces = 3",
            "replace = [\"x\"]",
            "replaces = []",
            "not toml at all",
            "replaces = [\"a\"]\nreason = \"\"",
        ] {
            let e = parse("orders.json.replay", "orders.json", text).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, ReplayError::Malformed { .. }), "{text}: {msg}");
            assert!(msg.contains("orders.json.replay") && msg.contains("replaces = ["));
        }
    }
}
