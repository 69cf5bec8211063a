//! `batchdrop map FILE --mapping M [--schema S] [--out OUT] [--format parquet|json]`: maps a
//! file with a Data Prep mapping set, as a watch with `mapping = ...` will, and prints a
//! preview (the first mapped rows as JSON), the rejected rows with their row numbers and
//! reasons, and the counts. Exit 0 when every row was mapped (and validated), 4 when some were
//! rejected, 3 when the mapping set or schema cannot be used (naming the unsupported function or
//! construct), 2 for usage, 1 when the file cannot be read or the output written.
//!
//! The output is written beside its final name and renamed once complete, so an interrupted
//! run leaves no half file under that name. Without `--out` nothing is written (a dry run).
//! `--dataset D` takes the dataset's schema as `validate --dataset` does (the Schema Registry
//! of the config's platform, or the copy the daemon keeps). This module must not map anything
//! itself (the `batchdrop-mapping` crate does) nor call the platform other than that way.

use std::path::{Path, PathBuf};

use batchdrop_mapping::{
    InputFormat, MapError, Mapper, MappingSet, Options, Output, OutputFormat, Rejection, Schema,
};

use super::{CommandError, exit};
use crate::config::Config;

/// At most this many rejected rows are printed (all are counted).
const MAX_PRINTED_REJECTIONS: usize = 1000;

pub struct MapArgs {
    pub file: PathBuf,
    pub mapping: PathBuf,
    pub dataset: Option<String>,
    pub schema: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub format: OutputFormat,
    pub preview: usize,
}

/// `config` is needed only for `--dataset` (without `--schema`).
pub async fn run(config: Option<&Config>, args: &MapArgs) -> Result<u8, CommandError> {
    let set_bytes = std::fs::read(&args.mapping).map_err(|e| {
        CommandError::ConfigProblems(format!(
            "mapping set {}: cannot be read ({e})",
            args.mapping.display()
        ))
    })?;
    // A mapping set or schema that cannot be used is configuration (exit 3), like a bad config.
    let set = MappingSet::from_json(&set_bytes).map_err(|e| {
        CommandError::ConfigProblems(format!("mapping set {}: {e}", args.mapping.display()))
    })?;
    let schema = match (&args.schema, &args.dataset, config) {
        (Some(path), _, _) => Some(load_schema(path)?),
        (None, Some(dataset), Some(config)) => {
            let (schema, _) = super::validate::dataset_schema(config, dataset).await?;
            Some(Schema::compile(&schema.document).map_err(|e| {
                CommandError::ConfigProblems(format!(
                    "schema {} of dataset {dataset}: {e}",
                    schema.id
                ))
            })?)
        }
        (None, Some(dataset), None) => {
            return Err(CommandError::Usage(format!(
                "--dataset {dataset} needs a config (--config FILE) to reach the platform; or give the schema with --schema FILE"
            )));
        }
        (None, None, _) => None,
    };
    // The file is read from its start more than once (its first line tells JSON Lines from a
    // JSON document; Parquet is read from its end): a pipe would lose what the first read took.
    if let Ok(meta) = std::fs::metadata(&args.file)
        && !meta.is_file()
    {
        return Err(CommandError::Usage(format!(
            "{} is {}: map reads its input more than once, so it takes a regular file (a pipe would lose what the first read took); write the data to a file first",
            args.file.display(),
            crate::disk::Kind::of_type(meta.file_type()).describe()
        )));
    }
    let format = InputFormat::detect(&args.file).map_err(CommandError::Usage)?;
    let mapper = Mapper::new(set, schema);
    for warning in mapper.warnings() {
        eprintln!("warning: {warning}");
    }
    if args.schema.is_none() && args.dataset.is_none() {
        eprintln!(
            "note: no --schema: values stay as the mapping makes them (text unless an expression converts it), and rows are not validated"
        );
    }

    let mut printed: Vec<Rejection> = Vec::new();
    let mut on_rejected = |rejection: Rejection| {
        if printed.len() < MAX_PRINTED_REJECTIONS {
            printed.push(rejection);
        }
    };
    let options = Options {
        preview_rows: args.preview,
    };
    let partial = args.out.as_deref().map(partial_path);
    let output = match (&args.out, &partial) {
        (Some(out), Some(partial)) => Some(Output {
            format: args.format,
            writer: std::fs::File::create(partial).map_err(|e| {
                CommandError::Io(format!(
                    "cannot create {} (for {}): {e}",
                    partial.display(),
                    out.display()
                ))
            })?,
        }),
        _ => None,
    };
    let result = batchdrop_mapping::map_file(
        &mapper,
        &args.file,
        &format,
        output,
        &options,
        &mut on_rejected,
    );
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            if let Some(partial) = &partial {
                let _ = std::fs::remove_file(partial);
            }
            return Err(match e {
                MapError::Mapping { .. } => CommandError::ConfigProblems(format!(
                    "mapping set {} does not fit {}: {e}",
                    args.mapping.display(),
                    args.file.display()
                )),
                MapError::Input { .. } | MapError::Read { .. } | MapError::Write { .. } => {
                    CommandError::Io(e.to_string())
                }
            });
        }
    };
    if let (Some(out), Some(partial)) = (&args.out, &partial) {
        std::fs::rename(partial, out).map_err(|e| {
            CommandError::Io(format!(
                "cannot rename {} to {}: {e}",
                partial.display(),
                out.display()
            ))
        })?;
    }

    if !summary.preview.is_empty() {
        println!("preview (first {} mapped rows):", summary.preview.len());
        for row in &summary.preview {
            println!("{row}");
        }
    }
    if summary.rejected > 0 {
        printed.sort_by_key(|r| r.row);
        println!("rejected rows ({}):", summary.rejected);
        for rejection in &printed {
            let line = rejection
                .line
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            let reasons: Vec<&str> = rejection
                .reasons
                .iter()
                .map(|r| r.message.as_str())
                .collect();
            // The messages quote the data's values and keys.
            println!(
                "  row {}{line}: {}",
                rejection.row,
                crate::telemetry::escape_controls(&reasons.join("; "))
            );
        }
        if summary.rejected > printed.len() as u64 {
            println!(
                "  ... and {} more rejected rows",
                summary.rejected - printed.len() as u64
            );
        }
    }
    let written = match &args.out {
        Some(out) => format!(
            "{} written to {} ({})",
            summary.rows_out,
            out.display(),
            match args.format {
                OutputFormat::Parquet => "Parquet",
                OutputFormat::JsonLines => "JSON Lines",
            }
        ),
        None => format!(
            "{} mapped (dry run: nothing written; give --out FILE)",
            summary.rows_out
        ),
    };
    println!(
        "{}: {} rows in, {written}, {} rejected",
        args.file.display(),
        summary.rows_in,
        summary.rejected
    );
    Ok(if summary.rejected > 0 {
        exit::INGEST_FAILED
    } else {
        0
    })
}

fn load_schema(path: &Path) -> Result<Schema, CommandError> {
    let problem =
        |what: String| CommandError::ConfigProblems(format!("schema {}: {what}", path.display()));
    let text = std::fs::read(path).map_err(|e| problem(format!("cannot be read ({e})")))?;
    let json: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| problem(format!("is not valid JSON: {e}")))?;
    Schema::compile(&json).map_err(|e| problem(e.to_string()))
}

/// `out.parquet` → `out.parquet.partial`, in the same directory (so the rename is atomic).
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}
