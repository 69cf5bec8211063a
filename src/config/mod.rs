//! Configuration: TOML text → raw serde structs (unknown keys refused) → a validated [`Config`].
//!
//! This module owns parsing, defaults and validation of values. It must not touch the network or
//! the state database; checks that need the file system beyond reading the file itself (folders
//! writable and so on) belong to `check-config`.
//!
//! `mod.rs` holds the validated types; `raw.rs` the file's shape as written; `parse.rs` the
//! defaults and validation between them.

mod parse;
mod raw;
mod state;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use crate::patterns::Patterns;
pub use crate::units::{MAX_DURATION, parse_duration};
pub use state::{DEFAULT_LEASE, PasswordSource, PostgresState, StateBackend};

/// The platform's hard limits per batch (its guardrails page: 25,000 files / 1 TB); a
/// configuration may ask for less, never more.
pub const PLATFORM_MAX_FILES: u64 = 25_000;
pub const PLATFORM_MAX_BYTES: u64 = 1000 * 1000 * 1000 * 1000;
/// The recommended limits per batch, the defaults (the developer guide's 1,500 files; 100 GB
/// on both the guide and the guardrails page).
pub const RECOMMENDED_MAX_FILES: u64 = 1500;
pub const RECOMMENDED_MAX_BYTES: u64 = 100 * 1000 * 1000 * 1000;
/// How long a batch below `min_batch_bytes` is held for more files when `max_hold` is not set.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(3600);
/// A batch this big is sealed without waiting out `max_wait` when `seal_bytes` is not set (or
/// `min_batch_bytes`, when that is larger): the platform's guardrails call batches of hundreds
/// of MB efficient, and one of a GiB gains nothing from waiting for company.
pub const DEFAULT_SEAL_BYTES: u64 = 1024 * 1024 * 1024;
/// The daily batch budget of a Profile-enabled dataset when the watch sets none (the
/// platform's guardrail: about 90 batches a day per sandbox).
pub const PROFILE_BATCHES_PER_DAY: u32 = 90;
pub const PLATFORM_MAX_PUT: u64 = 268_435_456;
pub const PLATFORM_MAX_CHUNK: u64 = 512_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("config file {path}: {source}")]
    Environment {
        path: PathBuf,
        source: crate::envsubst::InterpolateError,
    },
}

pub use crate::format::Format;

/// What happens to a file once its batch succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterSuccess {
    Archive,
    Delete,
    Keep,
}

/// What a failed batch means for its files, when the platform does not say which file held
/// the bad rows (it never does: see docs/outcomes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBatchFailure {
    /// Every file of the batch fails with the batch's errors.
    Fail,
    /// The files are sent again in halves (bisection) until the culprits are alone, within
    /// `isolate_max_extra_batches`; what is left when the cap is reached fails.
    Isolate,
}

/// How a watch's batches end on the platform: what may fail, and what a failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcomes {
    /// The share of a batch's rows (percent, 0–100) that may fail while its good rows land
    /// (`partialIngestionPercentage`); 0: any bad row fails the batch.
    pub partial_ingestion_percent: u8,
    pub on_batch_failure: OnBatchFailure,
    /// With `isolate`: the most extra batches one failed batch may cost.
    pub isolate_max_extra_batches: u32,
}

impl Default for Outcomes {
    fn default() -> Outcomes {
        Outcomes {
            partial_ingestion_percent: 0,
            on_batch_failure: OnBatchFailure::Fail,
            isolate_max_extra_batches: 16,
        }
    }
}

/// What the local check of records against the dataset's schema does (when a schema is known;
/// without one nothing is checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validate {
    /// No local check: the platform finds bad rows.
    Off,
    /// Checked; a file with bad rows is uploaded anyway and its receipt says what the platform
    /// will likely refuse.
    Warn,
    /// Checked; a file with bad rows is refused with a receipt and not uploaded.
    Reject,
}

/// What a watch's mapped records are written as (`output_format`), staged and uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MappedFormat {
    /// The platform's preferred format (and the only one upsert datasets take).
    #[default]
    Parquet,
    /// JSON Lines.
    Json,
}

impl MappedFormat {
    /// The format the staged file is sent as.
    pub fn format(self) -> Format {
        match self {
            MappedFormat::Parquet => Format::Parquet,
            MappedFormat::Json => Format::Json,
        }
    }
}

/// A watch's Data Prep mapping set (`mapping`): each file is mapped into a staged file, which is
/// what gets uploaded (see `crate::mapped`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchMapping {
    /// The mapping set's file, resolved against the config file's folder.
    pub path: PathBuf,
    pub output: MappedFormat,
}

/// How a folder learns about new files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// inotify events plus a periodic rescan.
    Events,
    /// Scanning only, every `poll_interval` (network filesystems).
    Poll,
}

/// Where the daemon sends batches. The platform at a URL always comes with credentials; the
/// embedded one never needs any.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// Start the emulator in-process on loopback, storing its data in `data_dir`.
    Embedded { data_dir: PathBuf },
    Url {
        url: String,
        credentials: Credentials,
    },
}

/// How batchdrop proves who it is to the platform at a URL.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// A file holding a bearer token (re-read when it changes), kept fresh by someone else.
    TokenFile(PathBuf),
    /// OAuth server-to-server (`[platform.auth]`): batchdrop asks IMS for its own tokens.
    OAuth(OAuthConfig),
}

/// Compared by value on reload (`PartialEq`), never through `Debug`, which hides secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    /// Where the queue lives: SQLite in `state_dir`, or fleet mode's PostgreSQL.
    pub state: StateBackend,
    /// Let the state dir live on NFS/SMB/CIFS anyway (SQLite's locking is unreliable there).
    pub allow_network_state_dir: bool,
    pub log_format: LogFormat,
    pub platform: Platform,
    pub upload: Upload,
    pub shutdown_grace: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` when "off".
    pub admin_listen: Option<std::net::SocketAddr>,
    /// How often the platform is probed for `/readyz` when nothing else talked to it.
    pub probe_interval: Duration,
    pub limits: Limits,
    pub watches: Vec<Watch>,
}

/// Caps that keep the daemon bounded: when one is reached, intake pauses (and `/readyz` and
/// the `batchdrop_intake_paused` metric say so) until work drains below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files recorded but not finished yet.
    pub max_queued_files: u64,
    /// Bytes in batches sealed but not finished yet.
    pub max_inflight_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, PartialEq)]
pub struct Platform {
    pub endpoint: Endpoint,
    pub org_id: String,
    pub sandbox: String,
    pub api_key: String,
    pub request_timeout: Duration,
    /// A PEM file of extra trusted roots (a TLS-inspecting proxy); verification stays on.
    pub extra_ca_file: Option<PathBuf>,
}

/// `[platform.auth]`: the client asks IMS for tokens with `client_credentials`.
#[derive(Clone, PartialEq)]
pub struct OAuthConfig {
    pub ims_url: String,
    pub client_id: String,
    pub scopes: String,
    pub secret: SecretSource,
}

/// Where the client secret is read from. Never printed.
#[derive(Clone, PartialEq)]
pub enum SecretSource {
    /// Re-read at every token request, so a rotated (mounted) secret is picked up.
    File(PathBuf),
    /// Read from this environment variable at start.
    Env(String),
    /// Inline in the config file (allowed only when the file is private to its owner).
    Inline(String),
}

impl std::fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = match &self.secret {
            SecretSource::File(p) => format!("file {}", p.display()),
            SecretSource::Env(v) => format!("environment variable {v}"),
            SecretSource::Inline(_) => "[inline, redacted]".to_owned(),
        };
        f.debug_struct("OAuthConfig")
            .field("ims_url", &self.ims_url)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("secret", &secret)
            .finish()
    }
}

// Hand-written so that a future inline secret can never reach a log line through `{:?}`.
impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("endpoint", &self.endpoint)
            .field("org_id", &self.org_id)
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

/// Upload, retry and polling behaviour (global).
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub large_file_threshold: u64,
    pub chunk_size: u64,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub max_retry_age: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub poll_initial: Duration,
    pub poll_max: Duration,
    /// A batch still processing on the platform after this long is reported stuck.
    pub max_processing_age: Duration,
    /// A stuck (or `stalled`) batch older than this is given up: its files fail.
    pub give_up_after: Duration,
}

/// One drop folder and everything that applies to it (defaults already merged in).
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    /// Stable name used in the state database: the folder path as written in the config.
    pub name: String,
    pub path: PathBuf,
    pub dataset: String,
    /// The sandbox of the dataset: the watch's `sandbox`, else `[platform] sandbox`. Every
    /// call about its batches names it.
    pub sandbox: String,
    pub format: Option<Format>,
    pub multiline_json: bool,
    pub mode: WatchMode,
    pub settle: Duration,
    pub rescan_interval: Duration,
    pub max_files: u64,
    pub max_bytes: u64,
    pub max_wait: Duration,
    /// A batch smaller than this is held for more files (0: never held), at most `max_hold`.
    pub min_batch_bytes: u64,
    pub max_hold: Duration,
    /// A batch of at least this many bytes is sealed at once, without waiting out `max_wait`
    /// (0: never; it stays within `max_files` / `max_bytes`).
    pub seal_bytes: u64,
    pub after_success: AfterSuccess,
    pub archive_dir: PathBuf,
    pub failed_dir: PathBuf,
    /// Ingest content that was already ingested into this dataset (default: skip it).
    pub allow_duplicates: bool,
    /// Follow symlinks that lead out of the watch folder (default: refuse them with a receipt).
    pub follow_symlinks: bool,
    /// How long a `.replay` sidecar waits for its data file before it is failed.
    pub sidecar_timeout: Duration,
    /// Larger files are refused with a receipt instead of being uploaded.
    pub max_file_bytes: u64,
    /// Refuse sparse files (far fewer bytes on disk than their length) with a receipt.
    pub refuse_sparse: bool,
    /// The local check of records against the dataset's schema, before upload.
    pub validate: Validate,
    /// At most this many batches a day, spaced evenly (`None`: 90 for a Profile-enabled
    /// dataset, unlimited otherwise; see `preflight::gate`).
    pub max_batches_per_day: Option<u32>,
    /// Which files below the folder are this watch's (`include` / `exclude`); the others are
    /// never touched.
    pub patterns: Patterns,
    pub outcomes: Outcomes,
    /// Map each file with a Data Prep mapping set before upload (`mapping`, `output_format`).
    pub mapping: Option<WatchMapping>,
}

impl Watch {
    /// The format a file in this folder is sent as: the watch's, or the file's extension.
    pub fn format_for(&self, rel_path: &str) -> Option<Format> {
        self.format.or_else(|| Format::from_extension(rel_path))
    }
}
