//! Pre-flight: what can be known about a watch before a batch is spent on it. The dataset is
//! looked up in the configured sandbox (Catalog), its tags are held against the watch's format
//! (`fit`), and its schema is fetched from the Schema Registry and kept in the state dir
//! (`cache`), for the local validation of records (`validate`).
//!
//! This module decides and words verdicts; `gate` (refusing or blocking watches for the daemon) and
//! `check-config --online` (printing them) act on them. It must not move files or touch the
//! store; HTTP goes through `crate::api` only.

pub mod cache;
pub mod fit;
pub mod gate;
pub mod guardrails;
mod lines;
pub mod local;
pub mod parquet;
pub mod validate;

use std::path::Path;

use crate::api::{ApiClient, Dataset, ErrorKind, RegistrySchema};
use crate::config::Watch;

/// How one check came out, from harmless to fatal for its watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// It works, but the platform advises otherwise.
    Warn,
    /// Could not be checked (the platform unreachable, a schema not found): the watch runs,
    /// without what the check would have given.
    Unchecked,
    /// The dataset is not in the configured sandbox: the watch is blocked (its files wait)
    /// until it appears or the config is fixed.
    Missing,
    /// The watch cannot work as configured: it is refused.
    Refuse,
}

impl Verdict {
    /// The word `check-config --online` prints.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "ok",
            Verdict::Warn => "warning",
            Verdict::Unchecked => "FAILED",
            Verdict::Missing => "FAILED",
            Verdict::Refuse => "FAILED",
        }
    }

    /// Whether `check-config --online` counts it as a failure.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Verdict::Unchecked | Verdict::Missing | Verdict::Refuse
        )
    }
}

/// One check and its outcome, worded for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`watch W: dataset D ...`).
    pub subject: String,
    pub verdict: Verdict,
    pub message: String,
}

impl Check {
    pub fn new(subject: &str, verdict: Verdict, message: &str) -> Check {
        Check {
            subject: subject.to_owned(),
            verdict,
            message: message.to_owned(),
        }
    }
}

/// What pre-flight found for one watch.
#[derive(Debug, Clone)]
pub struct WatchReport {
    pub checks: Vec<Check>,
    /// The dataset as the Catalog describes it (when it was found).
    pub dataset: Option<Dataset>,
    /// The dataset's schema (fetched, or the copy kept in the state dir).
    pub schema: Option<RegistrySchema>,
}

impl WatchReport {
    /// The worst verdict of its checks.
    pub fn worst(&self) -> Verdict {
        let rank = |v: Verdict| match v {
            Verdict::Pass => 0,
            Verdict::Warn => 1,
            Verdict::Unchecked => 2,
            Verdict::Missing => 3,
            Verdict::Refuse => 4,
        };
        self.checks
            .iter()
            .map(|c| c.verdict)
            .max_by_key(|v| rank(*v))
            .unwrap_or(Verdict::Pass)
    }
}

/// Checks one watch against the platform: its dataset exists in the watch's sandbox, fits the
/// watch, and its schema is fetched (and kept in `state_dir`).
pub async fn check_watch(api: &ApiClient, state_dir: &Path, watch: &Watch) -> WatchReport {
    let subject = format!("watch {}: dataset {}", watch.name, watch.dataset);
    let sandbox = watch.sandbox.as_str();
    let mut report = WatchReport {
        checks: Vec::new(),
        dataset: None,
        schema: None,
    };
    let api = match api.in_sandbox(Some(sandbox)) {
        Ok(api) => api,
        Err(e) => {
            report
                .checks
                .push(Check::new(&subject, Verdict::Refuse, &e.to_string()));
            return report;
        }
    };
    let api = &api;
    let dataset = match api.get_dataset(&watch.dataset).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            report.checks.push(missing(&subject, watch, sandbox));
            return report;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            report.checks.push(missing(&subject, watch, sandbox));
            return report;
        }
        Err(e) => {
            report.checks.push(Check::new(
                &subject,
                Verdict::Unchecked,
                &format!("cannot ask the Catalog about it: {e}"),
            ));
            return report;
        }
    };
    report.checks.push(Check::new(
        &subject,
        Verdict::Pass,
        &format!("exists in sandbox {sandbox}"),
    ));
    report.checks.extend(fit::fit(watch, &dataset));
    if let Some(schema_ref) = &dataset.schema_ref {
        let (check, schema) = fetch_schema(api, state_dir, watch, &schema_ref.id).await;
        report.checks.push(check);
        report.schema = schema;
    }
    report.dataset = Some(dataset);
    report
}

fn missing(subject: &str, watch: &Watch, sandbox: &str) -> Check {
    Check::new(
        subject,
        Verdict::Missing,
        &format!(
            "dataset {} does not exist in sandbox {sandbox} (the Catalog answered 404; a dataset of another \
             sandbox is invisible from this one): set the watch's `sandbox` (or [platform] sandbox) to the \
             dataset's sandbox, or the `dataset` of watch {} to a dataset of sandbox {sandbox}",
            watch.dataset, watch.name
        ),
    )
}

/// The schema from the registry (kept in the state dir), or the copy kept before when the
/// registry cannot be reached.
async fn fetch_schema(
    api: &ApiClient,
    state_dir: &Path,
    watch: &Watch,
    schema_id: &str,
) -> (Check, Option<RegistrySchema>) {
    let subject = format!("watch {}: schema {schema_id}", watch.name);
    let fallback = |why: String| match cache::load(state_dir, schema_id) {
        Some(kept) => (
            Check::new(
                &subject,
                Verdict::Warn,
                &format!(
                    "{why}; checking files against the copy kept in the state dir (version {})",
                    kept.version
                ),
            ),
            Some(kept),
        ),
        None => (
            Check::new(
                &subject,
                Verdict::Unchecked,
                &format!("{why}; files are not checked locally before upload"),
            ),
            None,
        ),
    };
    match api.get_schema(schema_id).await {
        Ok(Some(schema)) => {
            let kept = match cache::save(state_dir, &schema) {
                Ok(path) => format!(", kept in {}", path.display()),
                Err(e) => format!(" (cannot keep it in the state dir: {e})"),
            };
            match batchdrop_xdm::Schema::compile(&schema.document, Some(&schema.id), None, None) {
                Ok(_) => (
                    Check::new(
                        &subject,
                        Verdict::Pass,
                        &format!("fetched version {}{kept}", schema.version),
                    ),
                    Some(schema),
                ),
                Err(why) => (
                    Check::new(
                        &subject,
                        Verdict::Unchecked,
                        &format!(
                            "fetched version {}, but it cannot be compiled ({why}); files are not checked locally",
                            schema.version
                        ),
                    ),
                    None,
                ),
            }
        }
        Ok(None) => fallback(
            "the Schema Registry does not know it (404): check the dataset's schemaRef and the sandbox"
                .to_owned(),
        ),
        Err(e) => fallback(format!("cannot fetch it: {e}")),
    }
}
