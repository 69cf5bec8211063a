//! The emulator's configuration (a TOML file, every key optional).

use std::path::Path;

use serde::Deserialize;

use super::error::EmulatorError;

/// How the emulator behaves. Every field has a default, so an empty TOML file (or
/// `EmulatorConfig::default()`) gives a permissive emulator with the platform's real limits.
///
/// ```toml
/// processing_delay_ms = 200      # pause before each of staging → processing → done
/// revert_gc_delay_ms = 5000      # inactive → deleted after this long
/// abandon_after_ms = 0           # loading with no activity this long → abandoned (0 = never)
///
/// [gateway]                      # empty list = accept any non-empty value
/// tokens = ["secret-token"]
/// api_keys = ["my-client-id"]
/// orgs = ["ABC123@AdobeOrg"]
/// sandboxes = ["prod"]
///
/// [limits]                       # the platform's documented limits are the defaults
/// max_put_bytes = 268435456
/// max_chunk_bytes = 512000000
/// max_files_per_batch = 1500
/// max_batch_bytes = 107374182400
///
/// [[datasets]]                   # created at start if missing
/// id = "5deac2648a19d218a888d2b1"
/// name = "orders"
///
/// [faults]                       # all off by default
/// seed = 42
/// http_500_probability = 0.0
/// http_503_probability = 0.0
/// http_429_probability = 0.0
/// retry_after_secs = 1
/// connection_reset_probability = 0.0
/// lost_response_probability = 0.0
/// latency_probability = 0.0
/// latency_ms = 0
/// batch_failure_probability = 0.0
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmulatorConfig {
    /// Which credentials the gateway accepts.
    pub gateway: GatewayConfig,
    /// Pause (milliseconds) before each step of `staging → processing → success|failed`, so
    /// clients can observe the intermediate states. Default 200.
    pub processing_delay_ms: u64,
    /// How long (milliseconds) a reverted or replaced batch stays `inactive` before it becomes
    /// `deleted`. Default 5000.
    pub revert_gc_delay_ms: u64,
    /// A batch left `loading` with no activity (no upload, no action) for this long becomes
    /// `abandoned`, as on the platform. 0 (the default) never abandons.
    pub abandon_after_ms: u64,
    /// Size and count limits.
    pub limits: LimitsConfig,
    /// Datasets to create at start (with exactly these ids) if they do not exist yet.
    pub datasets: Vec<DatasetSeed>,
    /// Fault injection (all probabilities 0 by default).
    pub faults: FaultConfig,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            gateway: GatewayConfig::default(),
            processing_delay_ms: 200,
            revert_gc_delay_ms: 5000,
            abandon_after_ms: 0,
            limits: LimitsConfig::default(),
            datasets: Vec::new(),
            faults: FaultConfig::default(),
        }
    }
}

impl EmulatorConfig {
    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self, EmulatorError> {
        let text = std::fs::read_to_string(path).map_err(|source| EmulatorError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let config: EmulatorConfig =
            toml::from_str(&text).map_err(|e| EmulatorError::ConfigInvalid {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        config
            .validate()
            .map_err(|message| EmulatorError::ConfigInvalid {
                path: path.to_path_buf(),
                message,
            })?;
        Ok(config)
    }

    /// Checks values that TOML's types alone cannot.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let f = &self.faults;
        for (name, p) in [
            ("faults.http_500_probability", f.http_500_probability),
            ("faults.http_503_probability", f.http_503_probability),
            ("faults.http_429_probability", f.http_429_probability),
            (
                "faults.connection_reset_probability",
                f.connection_reset_probability,
            ),
            ("faults.latency_probability", f.latency_probability),
            (
                "faults.batch_failure_probability",
                f.batch_failure_probability,
            ),
        ] {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(format!(
                    "{name} = {p} is not a probability: use a number from 0.0 to 1.0"
                ));
            }
        }
        let total = f.http_500_probability
            + f.http_503_probability
            + f.http_429_probability
            + f.connection_reset_probability
            + f.lost_response_probability;
        if total > 1.0 + 1e-9 {
            return Err(format!(
                "the probabilities of 500, 503, 429, connection reset and lost response add up to {total}: \
                 they are exclusive outcomes of one request, so their sum must be at most 1.0"
            ));
        }
        for d in &self.datasets {
            super::store::validate_dataset_id(&d.id)
                .map_err(|e| format!("datasets: id {:?}: {e}", d.id))?;
        }
        let l = &self.limits;
        if l.max_put_bytes == 0 || l.max_chunk_bytes == 0 || l.max_files_per_batch == 0 {
            return Err("limits must be greater than 0".into());
        }
        Ok(())
    }
}

/// Which credentials the gateway accepts. An empty list accepts any non-empty value (the
/// permissive default, handy for demos and for the daemon's embedded mode).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Valid bearer tokens (`Authorization: Bearer {token}`).
    pub tokens: Vec<String>,
    /// Valid `x-api-key` values.
    pub api_keys: Vec<String>,
    /// Valid `x-gw-ims-org-id` values.
    pub orgs: Vec<String>,
    /// Valid `x-sandbox-name` values.
    pub sandboxes: Vec<String>,
}

/// Size and count limits; the defaults are the platform's documented ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest body of a single-request PUT (default 268,435,456 = 256 MB); larger → 413.
    pub max_put_bytes: u64,
    /// Largest body of one PATCH chunk (default 512,000,000); larger → 413.
    pub max_chunk_bytes: u64,
    /// Most files in one batch (default 1500).
    pub max_files_per_batch: u64,
    /// Most bytes in one batch (default 100 GB = 107,374,182,400).
    pub max_batch_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_put_bytes: 268_435_456,
            max_chunk_bytes: 512_000_000,
            max_files_per_batch: 1500,
            max_batch_bytes: 100 * 1024 * 1024 * 1024,
        }
    }
}

/// A dataset to create at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetSeed {
    /// The dataset id, used as is (any string without `/`, control characters or spaces).
    pub id: String,
    /// Its display name.
    pub name: String,
}

/// Fault injection. Each platform request draws once: 500, 503, 429, connection reset and lost
/// response are exclusive outcomes (their probabilities add up to at most 1); latency is drawn
/// separately.
/// `/emulator/stats` is never faulted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Seed of the fault RNG, so a failing run can be replayed.
    pub seed: u64,
    /// Probability of answering 500 Internal Server Error (before doing anything).
    pub http_500_probability: f64,
    /// Probability of answering 503 Service Unavailable (before doing anything).
    pub http_503_probability: f64,
    /// Probability of answering 429 Too Many Requests with `Retry-After`.
    pub http_429_probability: f64,
    /// The `Retry-After` value (seconds) sent with 429 and 503.
    pub retry_after_secs: u64,
    /// Probability of dropping the connection after reading part of the request body,
    /// without any response (the request has no effect).
    pub connection_reset_probability: f64,
    /// Probability of applying the request and then dropping the connection without sending the
    /// response: the client cannot tell whether it was applied (a created batch it never hears
    /// of, a chunk it must send again).
    pub lost_response_probability: f64,
    /// Probability of adding `latency_ms` before handling a request.
    pub latency_probability: f64,
    /// Added latency in milliseconds.
    pub latency_ms: u64,
    /// Probability that a completed batch fails in processing whatever its content.
    pub batch_failure_probability: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            http_500_probability: 0.0,
            http_503_probability: 0.0,
            http_429_probability: 0.0,
            retry_after_secs: 1,
            connection_reset_probability: 0.0,
            lost_response_probability: 0.0,
            latency_probability: 0.0,
            latency_ms: 0,
            batch_failure_probability: 0.0,
        }
    }
}
