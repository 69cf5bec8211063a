//! batchdrop's mapping engine: turns flat records (CSV, JSON Lines, multi-line JSON, Parquet)
//! into records shaped like the dataset's XDM schema, with the platform's own Data Prep
//! mapping sets (`{"mappings": [{"sourceType": "ATTRIBUTE" | "STATIC" | "EXPRESSION",
//! "source": ..., "destination": ...}]}`), streaming, into Parquet or JSON Lines.
//!
//! ```no_run
//! use batchdrop_mapping::{InputFormat, Mapper, MappingSet, Options, Output, OutputFormat, Schema};
//! let set = MappingSet::from_json(&std::fs::read("crm.mapping.json")?)?;
//! let schema = Schema::compile(&serde_json::from_slice(&std::fs::read("profile.schema.json")?)?)?;
//! let mapper = Mapper::new(set, Some(schema));
//! let out = std::fs::File::create("crm.parquet")?;
//! let summary = batchdrop_mapping::map_file(
//!     &mapper,
//!     "crm.csv".as_ref(),
//!     &InputFormat::detect("crm.csv".as_ref())?,
//!     Some(Output { format: OutputFormat::Parquet, writer: out }),
//!     &Options::default(),
//!     &mut |rejection| eprintln!("row {}: {}", rejection.row, rejection.reasons[0].message),
//! )?;
//! println!("{} rows in, {} out", summary.rows_in, summary.rows_out);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The parts: `mapping_set` loads and checks a set; `expr` and `functions` are Data Prep's
//! expression language; `mapper` applies a set to one record; `xdm` is the schema (types,
//! conversions, checks, walking the tree `batchdrop-xdm` compiles); `shape`, `columns` and `write`
//! make the output; `read` reads inputs; `run` ties them for a whole file. The format and
//! every rule are described in `docs/mapping.md`.

mod columns;
pub mod dates;
mod datum;
mod expr;
mod functions;
mod mapper;
mod mapping_set;
pub mod path;
mod read;
mod run;
mod shape;
mod write;
pub mod xdm;

pub use functions::{UNSUPPORTED as UNSUPPORTED_FUNCTIONS, supported_names as supported_functions};
pub use mapper::{CsvBinding, Mapper, Reason, ReasonKind, Rejection};
pub use mapping_set::{MappingError, MappingSet};
pub use read::{CsvOptions, InputFormat, OnBytes};
pub use run::{MapError, Options, Output, Summary, map_file, map_seeing};
pub use write::{INFERENCE_ROWS, OutputFormat, WriteError};
pub use xdm::{Schema, SchemaError};
