//! A batch's meta directory on Data Access (`GET /export/batches/{id}/meta?path=...`): the
//! error diagnostics (`row_errors`) and the input files' metadata (`input_files`) a batch
//! created with `enableErrorDiagnostics` leaves. Its types and tolerant readers of the
//! listings and of the JSON Lines files; no I/O (the client fetches).
//!
//! Nothing here learns which input file a failed row came from: the platform does not say
//! (`_filename` names the diagnostics file), and this module must not guess it from text.

use serde_json::Value;

use super::wire::lenient_u64;

/// The meta directories the platform documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaDir {
    /// `parsing_errors_N.json`, `conversion_errors_N.json`: the rows that failed.
    RowErrors,
    /// One metadata file per input file.
    InputFiles,
}

impl MetaDir {
    pub fn as_str(self) -> &'static str {
        match self {
            MetaDir::RowErrors => "row_errors",
            MetaDir::InputFiles => "input_files",
        }
    }
}

/// A file listed in a meta directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaFile {
    pub name: String,
    /// Its size in bytes, when the listing gives it (the platform writes it as a string).
    pub length: Option<u64>,
}

/// One problem of a failed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowIssue {
    pub code: String,
    pub message: String,
}

/// A failed row as a diagnostics file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The row's text (`_corrupt_record`), when the platform kept it.
    pub record: Option<String>,
    pub issues: Vec<RowIssue>,
}

/// The files of a meta directory listing (`{"data": [{"name", "length", "_links"}]}`).
pub(crate) fn meta_listing(v: &Value) -> Result<Vec<MetaFile>, String> {
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the listing has no \"data\" array")?;
    Ok(data
        .iter()
        .filter_map(|entry| {
            Some(MetaFile {
                name: entry.get("name")?.as_str()?.to_owned(),
                length: entry.get("length").and_then(lenient_u64),
            })
        })
        .collect())
}

/// The failed rows of a diagnostics file (JSON Lines); lines that are not JSON objects are
/// skipped (the file is only read to show samples).
pub(crate) fn row_errors(text: &str) -> Vec<RowError> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(Value::is_object)
        .map(|row| RowError {
            record: row.get("_corrupt_record").and_then(|r| match r {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }),
            issues: row
                .get("_errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|e| RowIssue {
                    code: text_of(e.get("code")),
                    message: text_of(e.get("message")),
                })
                .collect(),
        })
        .collect()
}

/// The input file paths of one `input_files` metadata file (lines of `{"path": ...}`).
pub(crate) fn input_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|v| v.get("path")?.as_str().map(str::to_owned))
        .collect()
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listings_read_string_lengths_and_skip_nameless_entries() {
        let v = json!({"data": [
            {"name": "conversion_errors_0.json", "length": "1162", "_links": {}},
            {"name": "parsing_errors_0.json", "length": 7},
            {"length": "3"}
        ], "_page": {"limit": 100, "count": 3}});
        assert_eq!(
            meta_listing(&v).unwrap(),
            vec![
                MetaFile {
                    name: "conversion_errors_0.json".into(),
                    length: Some(1162)
                },
                MetaFile {
                    name: "parsing_errors_0.json".into(),
                    length: Some(7)
                },
            ]
        );
        assert!(meta_listing(&json!({})).is_err());
    }

    #[test]
    fn the_documented_row_error_sample_reads() {
        let text = concat!(
            r#"{"_corrupt_record": "{missingQuotes: \"v1\"}", "_errors": [{"code": "1401", "message": "Row is corrupted and cannot be read, please fix and resend."}], "_filename": "parsing_errors_0.json"}"#,
            "\nnot json\n",
            r#"{"_errors": [{"code": 1542, "message": null}]}"#,
            "\n"
        );
        let rows = row_errors(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].record.as_deref(), Some("{missingQuotes: \"v1\"}"));
        assert_eq!(rows[0].issues[0].code, "1401");
        assert!(rows[0].issues[0].message.starts_with("Row is corrupted"));
        assert_eq!(rows[1].record, None);
        assert_eq!(
            rows[1].issues,
            vec![RowIssue {
                code: "1542".into(),
                message: String::new()
            }]
        );
        assert_eq!(
            input_paths("{\"path\": \"F1.json\"}\n{}\n"),
            vec!["F1.json".to_owned()]
        );
    }
}
