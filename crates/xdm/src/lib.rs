//! XDM schemas as the platform checks records against them: a schema's JSON Schema export
//! (what the Schema Registry answers with `Accept: application/vnd.adobe.xed-full+json`) is
//! compiled once ([`Schema::compile`]); each record is then checked ([`Schema::check`]) with
//! the platform's conversions, and every problem is an [`Issue`] carrying one of the
//! platform's error codes ([`IssueCode`]).
//!
//! JSON Schema in, records in, issues out: this crate does no HTTP, no SQL and no file I/O, so
//! that both the emulator (which checks ingested records with it) and the daemon (which may
//! check records before it uploads them) can use it.
//!
//! Module map: `schema` (compiling: the keywords understood, `$ref`s and `allOf`), `meta` (the
//! meta-schema check of a schema's keywords), `check` (one record against a compiled schema:
//! conversions and rules), `stream` (the quick verdict on a JSON record
//! checked while it is parsed, holding nothing), `text` (the string formats: date, date-time, email, URI),
//! `pattern` (the `pattern` keyword), `record` (CSV rows as records, the identity of upsert
//! rows), `parquet` (Parquet rows as records, a file's columns against the schema), `pointer` (JSON pointers), `issue` (issues and their codes).

mod check;
mod issue;
mod meta;
pub mod parquet;
mod pattern;
mod pointer;
mod record;
mod schema;
mod stream;
mod text;

pub use check::{CheckMode, Source, kind as json_kind};
pub use issue::{Issue, IssueCode};
pub use pointer::{normalize_pointer, value_at};
pub use record::{CsvColumns, identity};
pub use schema::{Additional, IntWidth, KeyHasher, Node, Obj, Props, Schema, Ty};
pub use text::{Format, date_prefix, is_date, is_date_time, is_email, is_uri};
