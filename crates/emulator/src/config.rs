//! The emulator's configuration (a TOML file, every key optional).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
/// tokens = ["secret-token"]      # set: IMS-issued tokens pass only with [ims] clients
/// accept_issued_tokens = false   # true: they pass even with [ims] clients empty
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
/// [[schemas]]                    # XDM schemas (JSON Schema export), checked against records
/// id = "https://ns.adobe.com/tenant/schemas/profile"   # default: the file's $id
/// file = "profile.schema.json"   # relative to this config file
/// identity_field = "/crmId"      # identifies rows of upsert datasets
///
/// [[datasets]]                   # created at start if missing
/// id = "5deac2648a19d218a888d2b1"
/// name = "orders"
/// schema = "https://ns.adobe.com/tenant/schemas/profile"   # a schema's id or name
/// tags = { unifiedProfile = ["enabled:true", "isUpsert:true"] }
/// sandbox = "dev"               # default: seen from every sandbox
///
/// [server]                       # what one client can hold
/// max_connections = 256          # more: the oldest connection is asked to close
/// header_read_timeout_secs = 30  # for a request's headers, and idle keep-alive connections
///
/// [ims]                          # POST /ims/token/v3; empty clients = any non-empty pair
/// clients = [{ client_id = "my-client-id", client_secret = "s3cret" }]
/// token_lifetime_secs = 86399
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
/// fail_first_batches = 0
/// queued_probability = 0.0      # a completed batch waits in `queued` first
/// retrying_probability = 0.0     # processing passes through `retrying`
/// stalled_probability = 0.0      # processing ends in `stalled` (retries exhausted)
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
    /// Connection limits of the HTTP server.
    pub server: ServerConfig,
    /// Schemas to register at start (datasets reference them by id or name).
    pub schemas: Vec<SchemaSeed>,
    /// Datasets to create at start (with exactly these ids) if they do not exist yet.
    pub datasets: Vec<DatasetSeed>,
    /// The IMS token endpoint (`POST /ims/token/v3`).
    pub ims: ImsConfig,
    /// Fault injection (all probabilities 0 by default).
    pub faults: FaultConfig,
    /// The directory of the config file (relative schema files are found from there).
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            gateway: GatewayConfig::default(),
            processing_delay_ms: 200,
            revert_gc_delay_ms: 5000,
            abandon_after_ms: 0,
            limits: LimitsConfig::default(),
            server: ServerConfig::default(),
            schemas: Vec::new(),
            datasets: Vec::new(),
            ims: ImsConfig::default(),
            faults: FaultConfig::default(),
            base_dir: None,
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
        let mut config: EmulatorConfig =
            toml::from_str(&text).map_err(|e| EmulatorError::ConfigInvalid {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        config.base_dir = path.parent().map(Path::to_path_buf);
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
            ("faults.queued_probability", f.queued_probability),
            ("faults.retrying_probability", f.retrying_probability),
            ("faults.stalled_probability", f.stalled_probability),
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
            for (k, v) in &d.tags {
                if v.is_empty() {
                    return Err(format!(
                        "datasets: id {:?}: tag {k} has no values; give it a list of strings",
                        d.id
                    ));
                }
            }
        }
        for (i, s) in self.schemas.iter().enumerate() {
            if s.file.as_os_str().is_empty() {
                return Err(format!(
                    "schemas[{i}] has no file: set file = \"path/to/schema.json\" (the Schema Registry's JSON Schema export)"
                ));
            }
        }
        for (i, c) in self.ims.clients.iter().enumerate() {
            if c.client_id.is_empty() || c.client_secret.is_empty() {
                return Err(format!(
                    "ims.clients[{i}] needs both client_id and client_secret"
                ));
            }
        }
        if self.ims.token_lifetime_secs == 0 {
            return Err("ims.token_lifetime_secs must be at least 1".into());
        }
        let l = &self.limits;
        if l.max_put_bytes == 0 || l.max_chunk_bytes == 0 || l.max_files_per_batch == 0 {
            return Err("limits must be greater than 0".into());
        }
        if self.server.max_connections == 0 || self.server.header_read_timeout_secs == 0 {
            return Err(
                "server.max_connections and server.header_read_timeout_secs must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Which credentials the gateway accepts. An empty list accepts any non-empty value (the
/// permissive default, handy for demos; the daemon's embedded mode lists its own token).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Valid bearer tokens (`Authorization: Bearer {token}`). When set, a token issued by
    /// `POST /ims/token/v3` passes only if `[ims] clients` lists credentials (so that issuing
    /// one takes a secret) or `accept_issued_tokens` is true; expired or forged issued tokens
    /// never pass.
    pub tokens: Vec<String>,
    /// With `tokens` set and `[ims] clients` empty, accept the tokens IMS issues to anyone
    /// anyway (the allowlist then guards nothing: for demos only). Default false.
    pub accept_issued_tokens: bool,
    /// Valid `x-api-key` values.
    pub api_keys: Vec<String>,
    /// Valid `x-gw-ims-org-id` values.
    pub orgs: Vec<String>,
    /// Valid `x-sandbox-name` values.
    pub sandboxes: Vec<String>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The tokens are secrets (the embedded platform's, for one): count them only.
        f.debug_struct("GatewayConfig")
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .field("accept_issued_tokens", &self.accept_issued_tokens)
            .field("api_keys", &self.api_keys)
            .field("orgs", &self.orgs)
            .field("sandboxes", &self.sandboxes)
            .finish()
    }
}

/// Connection limits of the HTTP server, so that a client cannot hold every descriptor of the
/// process (in embedded mode, the daemon's). Request bodies have no timeout: a slow upload is
/// never cut.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Connections open at once (default 256). One more asks the oldest to close: at once if
    /// it is idle, after its current request otherwise.
    pub max_connections: usize,
    /// Seconds a connection has to send a request's headers, from its opening or from its
    /// previous response (so also how long an idle keep-alive connection stays). Default 30.
    pub header_read_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 256,
            header_read_timeout_secs: 30,
        }
    }
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
    /// The id or name of a schema (of `[[schemas]]` or registered before): its records are
    /// checked against it. Empty: no schema (any well-formed record is accepted).
    pub schema: String,
    /// Catalog tags, e.g. `unifiedProfile = ["enabled:true", "isUpsert:true"]` for an upsert
    /// dataset.
    pub tags: BTreeMap<String, Vec<String>>,
    /// The field that identifies a row of an upsert dataset (a JSON pointer such as `/crmId`,
    /// or dotted `person.crmId`); default: the schema's `identity_field`.
    pub identity_field: String,
    /// The sandbox it belongs to: calls naming another sandbox get 404 for it and do not see
    /// it in lists. Empty (the default): seen from every sandbox.
    pub sandbox: String,
}

/// A schema to register at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaSeed {
    /// The id datasets reference (`schemaRef.id`); default: the file's `$id`.
    pub id: String,
    /// A name datasets of the config may use instead of the id; default: the file's `title`.
    pub name: String,
    /// The schema: the JSON Schema that the Schema Registry exports
    /// (`Accept: application/vnd.adobe.xed-full+json; version=1`). Relative to the config file.
    pub file: PathBuf,
    /// The field that identifies a row in upsert datasets (JSON pointer or dotted path).
    pub identity_field: String,
}

/// The IMS token endpoint (`POST /ims/token/v3`, `grant_type=client_credentials`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImsConfig {
    /// The credentials it accepts. Empty (the default): any non-empty client id and secret.
    pub clients: Vec<ImsClient>,
    /// Lifetime of the tokens it issues, in seconds (`expires_in`); default 86399 (about 24 h,
    /// like IMS). The gateway refuses an issued token once it expired (401 `401013`).
    pub token_lifetime_secs: u64,
}

impl Default for ImsConfig {
    fn default() -> Self {
        ImsConfig {
            clients: Vec::new(),
            token_lifetime_secs: 86_399,
        }
    }
}

/// One OAuth server-to-server credential.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImsClient {
    pub client_id: String,
    pub client_secret: String,
    /// Scopes it may ask for; empty: any.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for ImsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImsClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
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
    /// The first this many batches to be processed after start fail whatever their content
    /// (the same error as `batch_failure_probability`): a failure that comes for sure.
    pub fail_first_batches: u64,
    /// Probability that a completed batch waits in `queued` (for `processing_delay_ms`) before
    /// its processing starts.
    pub queued_probability: f64,
    /// Probability that a batch in processing passes through `retrying` (for
    /// `processing_delay_ms`) and then goes on as usual.
    pub retrying_probability: f64,
    /// Probability that a batch in processing ends in `stalled` ("all retries have been
    /// exhausted"), where it stays until aborted.
    pub stalled_probability: f64,
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
            fail_first_batches: 0,
            queued_probability: 0.0,
            retrying_probability: 0.0,
            stalled_probability: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_tokens_never_print() {
        let config = EmulatorConfig {
            gateway: GatewayConfig {
                tokens: vec!["0123456789abcdef-embedded-token".into()],
                ..GatewayConfig::default()
            },
            ..EmulatorConfig::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
        assert!(printed.contains("<1 redacted>"), "{printed}");
    }
}
