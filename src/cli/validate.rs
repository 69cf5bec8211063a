//! `batchdrop validate FILE... --dataset D`: the pre-upload check of pre-flight from the
//! command line. The dataset's schema comes from the Schema Registry (or the copy the daemon
//! keeps, or `--schema FILE`); each file is read once, streaming, and every problem printed
//! as file, row, field, code and message (or JSON with `--json`). Exit 0 when all rows pass, 4
//! when some would be refused.
//!
//! It uploads nothing and changes nothing on the platform or in the drop folders.

use std::path::{Path, PathBuf};

use super::{CommandError, Connection};
use crate::api::{Dataset, RegistrySchema};
use crate::config::{Config, Format};
use crate::preflight::cache;
use crate::preflight::validate::{FileCheck, Validator};

pub struct ValidateArgs {
    pub files: Vec<PathBuf>,
    pub dataset: Option<String>,
    pub schema: Option<PathBuf>,
    pub format: Option<String>,
    pub multiline_json: bool,
    pub json: bool,
}

pub async fn run(config: Option<&Config>, args: &ValidateArgs) -> Result<u8, CommandError> {
    let forced = match &args.format {
        None => None,
        Some(f) => Some(Format::parse(f).ok_or_else(|| {
            CommandError::Usage(format!("--format {f:?}: use json, csv or parquet"))
        })?),
    };
    let (schema, dataset) = match (&args.schema, config, &args.dataset) {
        (Some(path), _, _) => (schema_file(path)?, None),
        (None, Some(config), Some(dataset)) => dataset_schema(config, dataset).await?,
        _ => {
            return Err(CommandError::Usage(
                "give --dataset D or --schema FILE".into(),
            ));
        }
    };
    let validator = Validator::new(&schema, dataset.as_ref()).map_err(|why| {
        CommandError::Refused(format!(
            "schema {} cannot be used to check records: {why}",
            schema.id
        ))
    })?;
    let mut bad_files = 0;
    let mut reports = Vec::new();
    for file in &args.files {
        let checked = check_file(&validator, file, forced, args.multiline_json)?;
        if !checked.is_clean() {
            bad_files += 1;
        }
        if args.json {
            reports.push(serde_json::json!({
                "file": file.display().to_string(),
                "records": checked.records,
                "bad_rows": checked.bad_rows,
                "skipped": checked.skipped,
                "problems": checked.problems,
            }));
        } else {
            print_file(file, &checked);
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        );
    }
    Ok(if bad_files == 0 {
        0
    } else {
        super::exit::INGEST_FAILED
    })
}

fn check_file(
    validator: &Validator,
    file: &Path,
    forced: Option<Format>,
    multiline_json: bool,
) -> Result<FileCheck, CommandError> {
    let name = file.display();
    let format = forced
        .or_else(|| Format::from_extension(&file.to_string_lossy()))
        .ok_or_else(|| {
            CommandError::Usage(format!(
                "{name}: its format is not known from its extension: give --format json, csv or parquet"
            ))
        })?;
    let read_error = |e: std::io::Error| CommandError::Io(format!("cannot read {name}: {e}"));
    // Opened once and read once from its start: the file may be a pipe (`<(zcat rows.gz)`),
    // whose bytes a second open would not see again.
    let opened = std::fs::File::open(file).map_err(read_error)?;
    if format == Format::Parquet {
        // Parquet is read from its end (its footer), so only a file on disk will do.
        let meta = opened.metadata().map_err(read_error)?;
        if !meta.is_file() {
            return Err(CommandError::Usage(format!(
                "{name} is {}: a Parquet file is read from its end, so only a regular file will do; write it to a file first",
                crate::disk::Kind::of_type(meta.file_type()).describe()
            )));
        }
        return validator
            .check_file(opened, format, false)
            .map_err(read_error);
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 16, opened);
    let document = multiline_json
        || starts_with_bracket(std::io::BufRead::fill_buf(&mut reader).map_err(read_error)?);
    validator
        .check(reader, format, document)
        .map_err(read_error)
}

/// Whether the first non-blank byte of a file's first bytes (`head`) is `[` (a JSON array:
/// multi-line JSON).
fn starts_with_bracket(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// Prints one file's verdict. The file's name, the fields (keys of the data) and the messages
/// (which quote values) have their control characters escaped: they are the data's, not ours.
fn print_file(file: &Path, checked: &FileCheck) {
    use crate::telemetry::escape_controls;
    let name = file.display().to_string();
    let name = escape_controls(&name);
    if let Some(why) = &checked.skipped {
        println!("{name}: not checked ({why})");
        return;
    }
    if checked.is_clean() {
        println!("{name}: {} records, all pass", checked.records);
        return;
    }
    println!(
        "{name}: {} of {} records would be refused",
        checked.bad_rows, checked.records
    );
    for p in &checked.problems {
        // Row 0: the file as a whole (a Parquet file the platform would refuse).
        let row = match p.row {
            0 => "(whole file)".to_owned(),
            row => row.to_string(),
        };
        println!(
            "{name}: row {row} field {} {}: {}",
            escape_controls(p.field.as_deref().unwrap_or("-")),
            p.code,
            escape_controls(&p.message)
        );
    }
    let shown_rows = {
        let mut rows: Vec<u64> = checked.problems.iter().map(|p| p.row).collect();
        rows.dedup();
        rows.len() as u64
    };
    if checked.bad_rows > shown_rows {
        println!(
            "{name}: ... and {} more rows with problems",
            checked.bad_rows - shown_rows
        );
    }
}

fn schema_file(path: &Path) -> Result<RegistrySchema, CommandError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CommandError::Io(format!("cannot read schema {}: {e}", path.display())))?;
    let document: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        CommandError::Usage(format!(
            "schema {} is not JSON ({e}): give the Schema Registry's xed-full export",
            path.display()
        ))
    })?;
    let id = document
        .get("$id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        // Its file names it when it carries no `$id`.
        .unwrap_or_else(|| path.display().to_string());
    Ok(RegistrySchema {
        id,
        version: String::new(),
        document,
    })
}

/// The dataset's schema from the registry (or the copy kept in the state dir), and the dataset
/// (its tags say whether it is an upsert one, and Profile-enabled).
pub(super) async fn dataset_schema(
    config: &Config,
    dataset: &str,
) -> Result<(RegistrySchema, Option<Dataset>), CommandError> {
    let connection = Connection::open(config).await?;
    let sandbox = config.sandbox_of(dataset);
    let api = &connection
        .api
        .in_sandbox(Some(sandbox))
        .map_err(|e| CommandError::api(&format!("look up dataset {dataset}"), e))?;
    let found = api
        .get_dataset(dataset)
        .await
        .map_err(|e| CommandError::api(&format!("look up dataset {dataset}"), e))?
        .ok_or_else(|| {
            CommandError::NotFound(format!(
                "dataset {dataset} does not exist in sandbox {sandbox}: check the id, and the sandbox (a watch's `sandbox`, else [platform] sandbox)"
            ))
        })?;
    let schema_id = found
        .schema_ref
        .as_ref()
        .map(|s| s.id.clone())
        .ok_or_else(|| {
            CommandError::Refused(format!(
                "dataset {dataset} has no schemaRef: there is no schema to check records against"
            ))
        })?;
    let schema = match api.get_schema(&schema_id).await {
        Ok(Some(s)) => s,
        Ok(None) => cache::load(&config.state_dir, &schema_id).ok_or_else(|| {
            CommandError::NotFound(format!(
                "schema {schema_id} of dataset {dataset} is not in the Schema Registry of sandbox {sandbox}"
            ))
        })?,
        Err(e) => cache::load(&config.state_dir, &schema_id)
            .ok_or_else(|| CommandError::api(&format!("fetch schema {schema_id}"), e))?,
    };
    if let Some(emulator) = connection.embedded {
        emulator.shutdown().await;
    }
    Ok((schema, Some(found)))
}
