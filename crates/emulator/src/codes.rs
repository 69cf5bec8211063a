//! Every error code the emulator answers with, in one place: the codes of a batch's errors and
//! failed rows ([`Code`]), the gateway's (`error_code`, [`GatewayCode`]) and IMS's (the OAuth
//! `error` of a refused token request, [`ImsCode`]), each with where it comes from. The codes of a record's problems are `batchdrop_xdm`'s ([`IssueCode`]); they
//! are listed here through [`Code::Record`].
//!
//! Codes the platform's public documentation names are the platform's; the others are the
//! emulator's own (marked so), in the platform's style.

use axum::http::StatusCode;
use batchdrop_xdm::IssueCode;

/// A code in a batch's `errors` or in a failed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A file of 0 bytes (the platform's code).
    EmptyFile,
    /// A CSV file whose header row is empty or cannot be read (the platform's code).
    CsvEmptyHeader,
    /// A file that is not Parquet, or that cannot be read in bounded memory (the platform's).
    NotParquet,
    /// A row that cannot be read or parsed (the platform's code).
    UnparsableRow,
    /// A record that breaks its schema.
    Record(IssueCode),
    /// A batch refused as a whole: an upsert dataset takes Parquet only, and needs an identity
    /// field (the emulator's code: the platform's public documentation names none).
    Upsert,
    /// A batch with no file to read (the emulator's code).
    NoReadableFiles,
    /// Errors found, diagnostics off (the platform's code and wording).
    ErrorsNoDiagnostics,
    /// Partial ingestion summary (the platform's code).
    PartialSummary,
    /// The emulator could not store what processing produced (the emulator's code).
    Storage,
    /// A batch failed by fault injection (the emulator's code).
    Fault,
}

impl Code {
    /// The code as batches and failed rows carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::EmptyFile => "106",
            Code::CsvEmptyHeader => "118",
            Code::NotParquet => "200",
            Code::UnparsableRow => "INGEST-1401-400",
            Code::Record(issue) => issue.code(),
            Code::Upsert => "INGEST-1560-400",
            Code::NoReadableFiles => "INGEST-1100-400",
            Code::ErrorsNoDiagnostics => "INGEST-1211-400",
            Code::PartialSummary => "INGEST-1212-400",
            Code::Storage => "EMULATOR-STORAGE-500",
            Code::Fault => "EMULATOR-FAULT-500",
        }
    }

    /// The platform's description of a row's code (the first sentence of the batch error
    /// entry that counts the rows of one code and field).
    pub fn row_description(self) -> &'static str {
        match self {
            Code::UnparsableRow => {
                "The row has corrupted data and cannot be read or parsed. Fix the corrupted data and try again."
            }
            Code::Record(issue) => issue.description(),
            _ => "The row was refused.",
        }
    }

    /// The generic description of a batch error entry of this code: the platform's where its
    /// documentation gives one. It never names a file or a row (the platform's do not).
    pub fn description(self) -> &'static str {
        match self {
            Code::EmptyFile => "Dataset file is empty.",
            Code::CsvEmptyHeader => "The CSV file has an empty header row.",
            Code::NotParquet => "The file is not a valid Parquet file.",
            Code::ErrorsNoDiagnostics => {
                "Encountered errors while parsing, converting or otherwise validating the data. Please resend the data with error diagnostics enabled to collect additional information on failure types"
            }
            other => other.row_description(),
        }
    }
}

impl From<IssueCode> for Code {
    fn from(issue: IssueCode) -> Code {
        Code::Record(issue)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `error_code` of the gateway (the platform's codes), answered before a request reaches
/// a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayCode {
    /// No `Authorization` header.
    TokenMissing,
    /// A token the gateway does not accept (unknown, expired, forged).
    TokenInvalid,
    /// No `x-api-key` header.
    ApiKeyMissing,
    /// An API key the gateway does not know.
    ApiKeyInvalid,
    /// No `x-gw-ims-org-id` header.
    OrgMissing,
    /// An organization the credential does not belong to.
    OrgInvalid,
    /// Too many requests (injected).
    TooManyRequests,
}

impl GatewayCode {
    /// The HTTP status and the `error_code`.
    pub fn status_and_code(self) -> (StatusCode, &'static str) {
        match self {
            GatewayCode::TokenMissing => (StatusCode::FORBIDDEN, "403010"),
            GatewayCode::TokenInvalid => (StatusCode::UNAUTHORIZED, "401013"),
            GatewayCode::ApiKeyMissing => (StatusCode::FORBIDDEN, "403000"),
            GatewayCode::ApiKeyInvalid => (StatusCode::FORBIDDEN, "403003"),
            GatewayCode::OrgMissing => (StatusCode::BAD_REQUEST, "400003"),
            GatewayCode::OrgInvalid => (StatusCode::FORBIDDEN, "403025"),
            GatewayCode::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "429001"),
        }
    }
}

/// The OAuth `error` of a token request IMS refuses (RFC 6749, section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImsCode {
    /// A form field is missing.
    InvalidRequest,
    /// A grant other than `client_credentials`.
    UnsupportedGrantType,
    /// An unknown client id, or a secret that does not match.
    InvalidClient,
    /// A scope not granted to the client.
    InvalidScope,
}

impl ImsCode {
    /// The `error` as IMS answers it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImsCode::InvalidRequest => "invalid_request",
            ImsCode::UnsupportedGrantType => "unsupported_grant_type",
            ImsCode::InvalidClient => "invalid_client",
            ImsCode::InvalidScope => "invalid_scope",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_rows_have_their_platform_descriptions() {
        let all = [
            Code::EmptyFile,
            Code::CsvEmptyHeader,
            Code::NotParquet,
            Code::UnparsableRow,
            Code::Record(IssueCode::Required),
            Code::Record(IssueCode::Type),
            Code::Record(IssueCode::Constraint),
            Code::Upsert,
            Code::NoReadableFiles,
            Code::ErrorsNoDiagnostics,
            Code::PartialSummary,
            Code::Storage,
            Code::Fault,
        ];
        let mut strings: Vec<&str> = all.iter().map(|c| c.as_str()).collect();
        strings.sort_unstable();
        strings.dedup();
        assert_eq!(strings.len(), all.len(), "two codes share a string");
        assert!(Code::UnparsableRow.row_description().contains("corrupted"));
        assert!(
            Code::from(IssueCode::Required)
                .row_description()
                .contains("required field")
        );
        assert_eq!(Code::Fault.row_description(), "The row was refused.");
        assert!(
            Code::ErrorsNoDiagnostics
                .description()
                .contains("error diagnostics enabled")
        );
        assert_eq!(Code::EmptyFile.description(), "Dataset file is empty.");
    }
}
