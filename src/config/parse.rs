//! Reading a configuration: the file, its raw shape, then defaults, validation and resolved
//! paths into a [`Config`]; durations as written (`"500ms"`, `"5m"`).
//!
//! This module must not touch the network or the state database.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawAuth, RawConfig};
use super::{
    AfterSuccess, Config, ConfigError, Credentials, DEFAULT_MAX_HOLD, DEFAULT_SEAL_BYTES, Endpoint,
    Limits, LogFormat, OAuthConfig, PLATFORM_MAX_BYTES, PLATFORM_MAX_CHUNK, PLATFORM_MAX_FILES,
    PLATFORM_MAX_PUT, Platform, RECOMMENDED_MAX_BYTES, RECOMMENDED_MAX_FILES, SecretSource, Upload,
    Validate, Watch, WatchMode,
};
use super::{OnBatchFailure, Outcomes, Patterns, WatchMapping, parse_duration};
use crate::envsubst;

impl Config {
    /// The sandbox of `dataset`: that of the watch feeding it (a dataset belongs to one
    /// sandbox, which parsing holds the watches to), else `[platform] sandbox`.
    pub fn sandbox_of(&self, dataset: &str) -> &str {
        self.watches
            .iter()
            .find(|w| w.dataset == dataset)
            .map_or(&self.platform.sandbox, |w| &w.sandbox)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses `text`; relative paths in it are taken relative to the config file's folder, so a
    /// config means the same thing whatever the current directory of the process.
    /// `${VAR}` references are replaced from the environment first.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let interpolated =
            envsubst::interpolate(text, |name| std::env::var(name).ok()).map_err(|source| {
                ConfigError::Environment {
                    path: path.to_owned(),
                    source,
                }
            })?;
        Config::parse_interpolated(&interpolated.text, path).map_err(|e| match e {
            ConfigError::Parse { path, message } => ConfigError::Parse {
                path,
                message: interpolated.redact(&message),
            },
            ConfigError::Invalid { path, message } => ConfigError::Invalid {
                path,
                message: interpolated.redact(&message),
            },
            other => other,
        })
    }

    fn parse_interpolated(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // Absolute paths: inotify reports absolute paths, and a relative one would change
        // meaning with the working directory.
        let resolve = |p: &Path| {
            let joined = if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            };
            std::path::absolute(&joined).unwrap_or(joined)
        };
        let dur = |key: &str,
                   v: &Option<String>,
                   default: Duration|
         -> Result<Duration, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) => parse_duration(s).ok_or_else(|| {
                    invalid(format!(
                        "`{key} = \"{s}\"` is not a duration of at most 365 days: write e.g. \"500ms\", \"2s\", \"5m\", \"1h\", \"7d\""
                    ))
                }),
            }
        };

        let state_dir = resolve(raw.state_dir.as_deref().unwrap_or(Path::new("var/state")));
        let state = super::state::parse(raw.state.as_ref(), &resolve).map_err(invalid)?;

        let p = &raw.platform;
        let credentials = match (&p.access_token_file, &p.auth) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "[platform] has both access_token_file and [platform.auth]: keep one".into(),
                ));
            }
            (Some(file), None) => Some(Credentials::TokenFile(resolve(file))),
            (None, Some(auth)) => Some(Credentials::OAuth(oauth(auth, path, &resolve, &invalid)?)),
            (None, None) => None,
        };
        let endpoint = match (p.endpoint.as_deref().unwrap_or("embedded"), credentials) {
            ("embedded", None) => Endpoint::Embedded {
                data_dir: p
                    .data_dir
                    .as_deref()
                    .map(resolve)
                    .unwrap_or_else(|| state_dir.join("platform")),
            },
            ("embedded", Some(_)) => {
                return Err(invalid(
                    "[platform] endpoint is \"embedded\", which needs no credentials, but access_token_file or [platform.auth] is set: set endpoint to the platform's URL, or remove the credentials".into(),
                ));
            }
            (url, Some(credentials))
                if url.starts_with("http://") || url.starts_with("https://") =>
            {
                Endpoint::Url {
                    url: url.trim_end_matches('/').to_owned(),
                    credentials,
                }
            }
            (url, None) if url.starts_with("http://") || url.starts_with("https://") => {
                return Err(invalid(
                    "[platform] endpoint is a URL but neither `access_token_file` nor [platform.auth] is set: the platform needs credentials".into(),
                ));
            }
            (other, _) => {
                return Err(invalid(format!(
                    "[platform] endpoint = \"{other}\" is neither \"embedded\" nor an http(s) URL"
                )));
            }
        };
        let platform = Platform {
            extra_ca_file: p.extra_ca_file.as_deref().map(resolve),
            endpoint,
            org_id: p
                .org_id
                .clone()
                .unwrap_or_else(|| "batchdrop@AdobeOrg".into()),
            sandbox: p.sandbox.clone().unwrap_or_else(|| "prod".into()),
            api_key: p
                .api_key
                .clone()
                .or_else(|| p.auth.as_ref().map(|a| a.client_id.clone()))
                .unwrap_or_else(|| "batchdrop".into()),
            request_timeout: dur(
                "platform.request_timeout",
                &p.request_timeout,
                Duration::from_secs(300),
            )?,
        };

        let u = &raw.upload;
        let upload = Upload {
            large_file_threshold: u.large_file_threshold.map_or(PLATFORM_MAX_PUT, |s| s.0),
            chunk_size: u.chunk_size.map_or(64 * 1024 * 1024, |s| s.0),
            concurrency: u.concurrency.unwrap_or(4),
            max_attempts: u.max_attempts.unwrap_or(10),
            max_retry_age: dur(
                "upload.max_retry_age",
                &u.max_retry_age,
                Duration::from_secs(24 * 3600),
            )?,
            backoff_initial: dur(
                "upload.backoff_initial",
                &u.backoff_initial,
                Duration::from_secs(1),
            )?,
            backoff_max: dur(
                "upload.backoff_max",
                &u.backoff_max,
                Duration::from_secs(300),
            )?,
            poll_initial: dur(
                "upload.poll_initial",
                &u.poll_initial,
                Duration::from_millis(25),
            )?,
            poll_max: dur("upload.poll_max", &u.poll_max, Duration::from_secs(30))?,
            max_processing_age: dur(
                "upload.max_processing_age",
                &u.max_processing_age,
                Duration::from_secs(6 * 3600),
            )?,
            give_up_after: dur(
                "upload.give_up_after",
                &u.give_up_after,
                Duration::from_secs(72 * 3600),
            )?,
        };
        if upload.large_file_threshold == 0 || upload.large_file_threshold > PLATFORM_MAX_PUT {
            return Err(invalid(format!(
                "[upload] large_file_threshold must be between 1 and {PLATFORM_MAX_PUT} bytes (the platform's PUT limit)"
            )));
        }
        if upload.chunk_size == 0 || upload.chunk_size > PLATFORM_MAX_CHUNK {
            return Err(invalid(format!(
                "[upload] chunk_size must be between 1 and {PLATFORM_MAX_CHUNK} bytes"
            )));
        }
        if upload.concurrency == 0 || upload.max_attempts == 0 {
            return Err(invalid(
                "[upload] concurrency and max_attempts must be at least 1".into(),
            ));
        }

        if raw.watch.is_empty() {
            return Err(invalid(
                "no [[watch]] section: add one with `path` and `dataset` for each drop folder"
                    .into(),
            ));
        }
        let mut watches = Vec::new();
        let mut names = BTreeSet::new();
        for w in &raw.watch {
            let d = &raw.defaults;
            let s = w;
            let name = w.path.to_string_lossy().into_owned();
            if !names.insert(name.clone()) {
                return Err(invalid(format!("the folder {name} is watched twice")));
            }
            if w.dataset.trim().is_empty() {
                return Err(invalid(format!("[[watch]] {name}: `dataset` is empty")));
            }
            let path = resolve(&w.path);
            let min_batch_bytes = s.min_batch_bytes.or(d.min_batch_bytes).map_or(0, |s| s.0);
            let watch = Watch {
                name: name.clone(),
                archive_dir: w
                    .archive_dir
                    .as_deref()
                    .map(|p| path.join(p))
                    .unwrap_or_else(|| path.join("_archive")),
                failed_dir: w
                    .failed_dir
                    .as_deref()
                    .map(|p| path.join(p))
                    .unwrap_or_else(|| path.join("_failed")),
                path,
                dataset: w.dataset.clone(),
                sandbox: w
                    .sandbox
                    .clone()
                    .unwrap_or_else(|| platform.sandbox.clone()),
                format: s.format.or(d.format),
                multiline_json: s.multiline_json.or(d.multiline_json).unwrap_or(false),
                mode: s.mode.or(d.mode).unwrap_or(WatchMode::Events),
                settle: dur(
                    "settle",
                    &s.settle.clone().or(d.settle.clone()),
                    Duration::from_secs(2),
                )?,
                rescan_interval: dur(
                    "rescan_interval",
                    &s.rescan_interval.clone().or(d.rescan_interval.clone()),
                    Duration::from_secs(60),
                )?,
                max_files: s.max_files.or(d.max_files).unwrap_or(RECOMMENDED_MAX_FILES),
                max_bytes: s
                    .max_bytes
                    .or(d.max_bytes)
                    .map_or(RECOMMENDED_MAX_BYTES, |s| s.0),
                max_wait: dur(
                    "max_wait",
                    &s.max_wait.clone().or(d.max_wait.clone()),
                    Duration::from_secs(5),
                )?,
                min_batch_bytes,
                max_hold: dur(
                    "max_hold",
                    &s.max_hold.clone().or(d.max_hold.clone()),
                    DEFAULT_MAX_HOLD,
                )?,
                seal_bytes: s.seal_bytes.or(d.seal_bytes).map_or(
                    // A configured min_batch_bytes above the default must not become an
                    // error by an upgrade: the default then seals at min_batch_bytes.
                    DEFAULT_SEAL_BYTES.max(min_batch_bytes),
                    |s| s.0,
                ),
                after_success: s
                    .after_success
                    .or(d.after_success)
                    .unwrap_or(AfterSuccess::Archive),
                allow_duplicates: s.allow_duplicates.or(d.allow_duplicates).unwrap_or(false),
                follow_symlinks: s.follow_symlinks.or(d.follow_symlinks).unwrap_or(false),
                sidecar_timeout: dur(
                    "sidecar_timeout",
                    &s.sidecar_timeout.clone().or(d.sidecar_timeout.clone()),
                    Duration::from_secs(600),
                )?,
                max_file_bytes: s
                    .max_file_bytes
                    .or(d.max_file_bytes)
                    .map_or(RECOMMENDED_MAX_BYTES, |s| s.0),
                refuse_sparse: s.refuse_sparse.or(d.refuse_sparse).unwrap_or(false),
                validate: s.validate.or(d.validate).unwrap_or(Validate::Reject),
                max_batches_per_day: s.max_batches_per_day.or(d.max_batches_per_day),
                patterns: Patterns::new(
                    s.include
                        .as_ref()
                        .or(d.include.as_ref())
                        .map_or(&[], Vec::as_slice),
                    s.exclude
                        .as_ref()
                        .or(d.exclude.as_ref())
                        .map_or(&[], Vec::as_slice),
                )
                .map_err(|e| invalid(format!("[[watch]] {name}: {e}")))?,
                outcomes: Outcomes {
                    partial_ingestion_percent: s
                        .partial_ingestion_percent
                        .or(d.partial_ingestion_percent)
                        .unwrap_or(0),
                    on_batch_failure: s
                        .on_batch_failure
                        .or(d.on_batch_failure)
                        .unwrap_or(OnBatchFailure::Fail),
                    isolate_max_extra_batches: s
                        .isolate_max_extra_batches
                        .or(d.isolate_max_extra_batches)
                        .unwrap_or(Outcomes::default().isolate_max_extra_batches),
                },
                mapping: w.mapping.as_deref().map(|m| WatchMapping {
                    path: resolve(m),
                    output: w.output_format.unwrap_or_default(),
                }),
            };
            if w.output_format.is_some() && w.mapping.is_none() {
                return Err(invalid(format!(
                    "[[watch]] {name}: output_format applies only to a watch with a `mapping` (the format its mapped files are uploaded as); add mapping = \"FILE.mapping.json\" or remove output_format"
                )));
            }
            if !is_header_token(&watch.sandbox) {
                return Err(invalid(format!(
                    "[[watch]] {name}: sandbox {:?} is not a sandbox name (letters, digits, '-' and '_', as the platform names them)",
                    watch.sandbox
                )));
            }
            if let Some(other) = watches
                .iter()
                .find(|o: &&Watch| o.dataset == watch.dataset && o.sandbox != watch.sandbox)
            {
                return Err(invalid(format!(
                    "[[watch]] {name}: dataset {} is in sandbox {} here but in sandbox {} for watch {}: a dataset belongs to one sandbox; correct the `sandbox` of one of them",
                    watch.dataset, watch.sandbox, other.sandbox, other.name
                )));
            }
            if watch.outcomes.partial_ingestion_percent > 100 {
                return Err(invalid(format!(
                    "[[watch]] {name}: partial_ingestion_percent must be between 0 and 100 (the share of a batch's rows that may fail)"
                )));
            }
            if watch.max_batches_per_day == Some(0) {
                return Err(invalid(format!(
                    "[[watch]] {name}: max_batches_per_day must be at least 1 (leave it out for the default: 90 on Profile-enabled datasets, unlimited otherwise)"
                )));
            }
            if watch.max_files == 0 || watch.max_files > PLATFORM_MAX_FILES {
                return Err(invalid(format!(
                    "[[watch]] {name}: max_files = {} is out of range: it must be between 1 and {PLATFORM_MAX_FILES} (the platform's hard limit per batch; {RECOMMENDED_MAX_FILES} is recommended)",
                    watch.max_files
                )));
            }
            if watch.max_bytes == 0 || watch.max_bytes > PLATFORM_MAX_BYTES {
                return Err(invalid(format!(
                    "[[watch]] {name}: max_bytes = {} is out of range: it must be between 1 and {PLATFORM_MAX_BYTES} (1 TB, the platform's hard limit per batch; 100 GB is recommended)",
                    watch.max_bytes
                )));
            }
            if watch.max_file_bytes == 0 || watch.max_file_bytes > PLATFORM_MAX_BYTES {
                return Err(invalid(format!(
                    "[[watch]] {name}: max_file_bytes = {} is out of range: it must be between 1 and {PLATFORM_MAX_BYTES} (1 TB, the platform's hard limit per batch)",
                    watch.max_file_bytes
                )));
            }
            if watch.min_batch_bytes > watch.max_bytes {
                return Err(invalid(format!(
                    "[[watch]] {name}: min_batch_bytes ({}) is larger than max_bytes ({}): a batch could never reach it; lower min_batch_bytes or raise max_bytes",
                    watch.min_batch_bytes, watch.max_bytes
                )));
            }
            if watch.seal_bytes > 0 && watch.min_batch_bytes > watch.seal_bytes {
                return Err(invalid(format!(
                    "[[watch]] {name}: min_batch_bytes ({}) is larger than seal_bytes ({}): a batch is sealed at once from seal_bytes but held below min_batch_bytes; lower min_batch_bytes, raise seal_bytes or set seal_bytes = 0 (off)",
                    watch.min_batch_bytes, watch.seal_bytes
                )));
            }
            if watch.min_batch_bytes > 0 && watch.max_hold < watch.max_wait {
                return Err(invalid(format!(
                    "[[watch]] {name}: max_hold ({:?}) is shorter than max_wait ({:?}): a batch below min_batch_bytes is held at least max_wait; raise max_hold",
                    watch.max_hold, watch.max_wait
                )));
            }
            watches.push(watch);
        }

        let admin_listen = match raw.admin_listen.as_deref().unwrap_or("127.0.0.1:9187") {
            "off" => None,
            a => Some(a.parse().map_err(|_| {
                invalid(format!(
                    "admin_listen = \"{a}\" is not an address: write e.g. \"127.0.0.1:9187\", or \"off\""
                ))
            })?),
        };
        let limits = Limits {
            max_queued_files: raw.limits.max_queued_files.unwrap_or(200_000),
            max_inflight_bytes: raw
                .limits
                .max_inflight_bytes
                .map_or(500 * 1000 * 1000 * 1000, |s| s.0),
        };
        // The queue counts in SQLite's signed 64-bit integers.
        for (key, value) in [
            ("max_queued_files", limits.max_queued_files),
            ("max_inflight_bytes", limits.max_inflight_bytes),
        ] {
            if value == 0 || value > i64::MAX as u64 {
                return Err(invalid(format!(
                    "[limits] {key} = {value} is out of range: it must be between 1 and {}",
                    i64::MAX
                )));
            }
        }
        super::state::check_fleet(&state, &platform.endpoint, &watches).map_err(invalid)?;
        Ok(Config {
            state,
            allow_network_state_dir: raw.allow_network_state_dir.unwrap_or(false),
            admin_listen,
            probe_interval: dur(
                "probe_interval",
                &raw.probe_interval,
                Duration::from_secs(15),
            )?,
            limits,
            path: path.to_owned(),
            state_dir,
            log_format: raw.log_format.unwrap_or(LogFormat::Text),
            platform,
            upload,
            shutdown_grace: dur(
                "shutdown_grace",
                &raw.shutdown_grace,
                Duration::from_secs(30),
            )?,
            watches,
        })
    }
}

/// `[platform.auth]` of the config file at `path` → [`OAuthConfig`].
fn oauth(
    auth: &RawAuth,
    path: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
    invalid: &dyn Fn(String) -> ConfigError,
) -> Result<OAuthConfig, ConfigError> {
    let secret = match (
        &auth.client_secret_file,
        &auth.client_secret_env,
        &auth.client_secret,
    ) {
        (Some(f), None, None) => SecretSource::File(resolve(f)),
        (None, Some(v), None) => SecretSource::Env(v.clone()),
        (None, None, Some(s)) => {
            refuse_if_shared(path, invalid)?;
            SecretSource::Inline(s.clone())
        }
        _ => {
            return Err(invalid(
                "[platform.auth] needs exactly one of client_secret_file (recommended), client_secret_env or client_secret".into(),
            ));
        }
    };
    let ims_url = auth
        .ims_url
        .clone()
        .unwrap_or_else(|| "https://ims-na1.adobelogin.com/ims/token/v3".into());
    if !(ims_url.starts_with("https://") || ims_url.starts_with("http://")) {
        return Err(invalid(format!(
            "[platform.auth] ims_url = \"{ims_url}\" is not an http(s) URL: write the token endpoint's URL, e.g. \"https://ims-na1.adobelogin.com/ims/token/v3\""
        )));
    }
    Ok(OAuthConfig {
        ims_url,
        client_id: auth.client_id.clone(),
        scopes: auth.scopes.join(","),
        secret,
    })
}

/// A config file holding a secret must not be readable by group or others.
fn refuse_if_shared(
    path: &Path,
    invalid: &dyn Fn(String) -> ConfigError,
) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0o600);
    if mode & 0o077 != 0 {
        return Err(invalid(format!(
            "[platform.auth] client_secret is written in this file, which others can read (mode {:o}): \
             run `chmod 600 {}`, or better, move the secret to a file named by client_secret_file",
            mode & 0o777,
            path.display()
        )));
    }
    Ok(())
}

/// A sandbox name as the platform makes them (it goes into the `x-sandbox-name` header).
fn is_header_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests;
