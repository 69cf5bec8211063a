//! The format of a data file, as the platform names it: one enum for the config (`format = `),
//! the store (the `format` columns) and the API client (a batch's `inputFormat`).
//!
//! This module must not know how any of them spells it on its own ground beyond the lower-case
//! names below (the store's SQL encoding lives in the store).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Input file format. Written in lower case everywhere: config, state database, receipts,
/// `status --json` and requests to the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Csv,
    Parquet,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// A format's name or a file extension, in any case (`jsonl` and `ndjson` are JSON lines).
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" | "jsonl" | "ndjson" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// The format a file name implies, if any.
    pub fn from_extension(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1;
        Format::parse(ext)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_extensions() {
        assert_eq!(Format::Parquet.as_str(), "parquet");
        assert_eq!(Format::parse("CSV"), Some(Format::Csv));
        assert_eq!(Format::parse("ndjson"), Some(Format::Json));
        assert_eq!(Format::parse("xml"), None);
        assert_eq!(Format::from_extension("a/b.jsonl"), Some(Format::Json));
        assert_eq!(Format::from_extension("noext"), None);
        for format in [Format::Json, Format::Csv, Format::Parquet] {
            assert_eq!(Format::parse(format.as_str()), Some(format));
            assert_eq!(
                serde_json::to_value(format).unwrap(),
                serde_json::json!(format.as_str())
            );
        }
    }
}
