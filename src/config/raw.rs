//! The configuration file's shape as written: serde structs that refuse unknown keys, with
//! every value optional where a default applies. `parse.rs` turns them into a [`super::Config`].
//!
//! This module must not apply defaults or validate values.

use std::path::PathBuf;

use serde::Deserialize;

use super::{AfterSuccess, Format, LogFormat, MappedFormat, OnBatchFailure, Validate, WatchMode};
use crate::units::Size;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) state_dir: Option<PathBuf>,
    /// A URL or a table: `state.rs` reads it, with its own messages.
    pub(super) state: Option<toml::Value>,
    pub(super) allow_network_state_dir: Option<bool>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) admin_listen: Option<String>,
    pub(super) probe_interval: Option<String>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) platform: RawPlatform,
    #[serde(default)]
    pub(super) upload: RawUpload,
    #[serde(default)]
    pub(super) defaults: RawWatchSettings,
    #[serde(default)]
    pub(super) watch: Vec<RawWatch>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlatform {
    pub(super) endpoint: Option<String>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) org_id: Option<String>,
    pub(super) sandbox: Option<String>,
    pub(super) api_key: Option<String>,
    pub(super) access_token_file: Option<PathBuf>,
    pub(super) request_timeout: Option<String>,
    pub(super) extra_ca_file: Option<PathBuf>,
    pub(super) auth: Option<RawAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) ims_url: Option<String>,
    pub(super) client_id: String,
    #[serde(default)]
    pub(super) scopes: Vec<String>,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) client_secret_env: Option<String>,
    pub(super) client_secret: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_queued_files: Option<u64>,
    pub(super) max_inflight_bytes: Option<Size>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpload {
    pub(super) large_file_threshold: Option<Size>,
    pub(super) chunk_size: Option<Size>,
    pub(super) concurrency: Option<usize>,
    pub(super) max_attempts: Option<u32>,
    pub(super) max_retry_age: Option<String>,
    pub(super) backoff_initial: Option<String>,
    pub(super) backoff_max: Option<String>,
    pub(super) poll_initial: Option<String>,
    pub(super) poll_max: Option<String>,
    pub(super) max_processing_age: Option<String>,
    pub(super) give_up_after: Option<String>,
}

/// Declares a struct holding the per-watch settings (those `[defaults]` may also set) plus
/// `$extra` fields. `[[watch]]` lists them all itself rather than through `#[serde(flatten)]`,
/// whose buffering loses the position of an unknown key: a typo then points at the key, not at
/// the `[[watch]]` header.
macro_rules! watch_settings {
    ($(#[$meta:meta])* struct $name:ident { $($extra:ident: $extra_type:ty,)* }) => {
        $(#[$meta])*
        #[derive(Deserialize, Default, Clone)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            $(pub(super) $extra: $extra_type,)*
            pub(super) format: Option<Format>,
            pub(super) multiline_json: Option<bool>,
            pub(super) mode: Option<WatchMode>,
            pub(super) settle: Option<String>,
            pub(super) rescan_interval: Option<String>,
            pub(super) max_files: Option<u64>,
            pub(super) max_bytes: Option<Size>,
            pub(super) max_wait: Option<String>,
            pub(super) min_batch_bytes: Option<Size>,
            pub(super) max_hold: Option<String>,
            pub(super) seal_bytes: Option<Size>,
            pub(super) after_success: Option<AfterSuccess>,
            pub(super) allow_duplicates: Option<bool>,
            pub(super) follow_symlinks: Option<bool>,
            pub(super) sidecar_timeout: Option<String>,
            pub(super) max_file_bytes: Option<Size>,
            pub(super) refuse_sparse: Option<bool>,
            pub(super) validate: Option<Validate>,
            pub(super) max_batches_per_day: Option<u32>,
            pub(super) include: Option<Vec<String>>,
            pub(super) exclude: Option<Vec<String>>,
            pub(super) partial_ingestion_percent: Option<u8>,
            pub(super) on_batch_failure: Option<OnBatchFailure>,
            pub(super) isolate_max_extra_batches: Option<u32>,
        }
    };
}

watch_settings! {
    /// `[defaults]`.
    struct RawWatchSettings {}
}

watch_settings! {
    /// One `[[watch]]`: its own keys, then any setting that overrides `[defaults]`.
    struct RawWatch {
        path: PathBuf,
        dataset: String,
        sandbox: Option<String>,
        archive_dir: Option<PathBuf>,
        failed_dir: Option<PathBuf>,
        mapping: Option<PathBuf>,
        output_format: Option<MappedFormat>,
    }
}
