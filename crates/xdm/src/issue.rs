//! What is wrong with a record: an [`Issue`] per problem, each of a kind ([`IssueCode`]) that
//! is one of the platform's error codes, with the wording a batch's error entry gives it.
//!
//! It owns the codes and their descriptions; it must not decide which values break which rule
//! (that is `check`).

/// The kind of a record's problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueCode {
    /// A field missing (or null) though the schema requires it (the platform's code).
    Required,
    /// A value of a type that no conversion turns into the field's type (the emulator's code:
    /// the platform's public documentation names none).
    Type,
    /// A value of the right type that breaks a rule of the field: enum, format, pattern, range,
    /// length, item count, or a field the schema forbids (the emulator's code).
    Constraint,
}

impl IssueCode {
    /// Every kind, for tables and tests.
    pub const ALL: [IssueCode; 3] = [IssueCode::Required, IssueCode::Type, IssueCode::Constraint];

    /// The error code a batch's errors and failed rows carry.
    pub const fn code(self) -> &'static str {
        match self {
            IssueCode::Required => "INGEST-1555-400",
            IssueCode::Type => "INGEST-1542-400",
            IssueCode::Constraint => "INGEST-1543-400",
        }
    }

    /// The platform's description of the code (the first sentence of a batch error entry).
    pub const fn description(self) -> &'static str {
        match self {
            IssueCode::Required => {
                "A required field is either missing or has a value of null. Add the required field to the input row and try again."
            }
            IssueCode::Type => {
                "A value has a type that cannot be converted to its field's type. Send values of the field's type and try again."
            }
            IssueCode::Constraint => {
                "A value breaks a rule of its field (enum, format, range or length). Fix the value and try again."
            }
        }
    }
}

/// One problem of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub code: IssueCode,
    /// JSON pointer of the field (RFC 6901), `""` for the record itself.
    pub pointer: String,
    /// Starts with the pointer (`/` for the record itself), then says what is wrong and what
    /// to send instead.
    pub message: String,
}
