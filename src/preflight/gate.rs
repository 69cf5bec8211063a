//! What the daemon does with pre-flight's verdicts, at start and on every reload: a watch that
//! cannot work is refused (left out, with an ERROR saying what to change), a watch whose
//! dataset is not in the sandbox is blocked as `crate::blocked` does (its files wait, nothing
//! is failed), warnings are logged, and the others run.
//!
//! It must not move files; the store is touched only through `crate::blocked`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::validate::Validator;
use super::{Verdict, WatchReport, check_watch};
use crate::api::{ApiClient, Dataset};
use crate::config::{Config, PROFILE_BATCHES_PER_DAY, Watch};
use crate::store::Store;

/// The watches that may run, and the check of their records (by watch name) where their
/// dataset's schema is known.
#[derive(Default)]
pub struct Admitted {
    pub watches: Vec<Watch>,
    pub validators: BTreeMap<String, Arc<Validator>>,
    /// The daily batch budget of each watch that has one (by watch name): its own
    /// `max_batches_per_day`, or the guardrail's 90 when its dataset is Profile-enabled.
    pub budgets: BTreeMap<String, u32>,
    /// The loaded mapping set of each watch that has one (by watch name).
    pub mappers: BTreeMap<String, Arc<crate::mapped::WatchMapper>>,
}

/// Checks every watch of `config` and says which may run.
pub async fn admit(api: &ApiClient, store: &Store, config: &Config) -> Admitted {
    let mut admitted = Admitted::default();
    for watch in &config.watches {
        let report = check_watch(api, &config.state_dir, watch).await;
        log(watch, &report);
        match report.worst() {
            Verdict::Refuse => continue,
            Verdict::Missing => {
                let why = report
                    .checks
                    .iter()
                    .find(|c| c.verdict == Verdict::Missing)
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                if let Err(e) =
                    crate::blocked::block(store, &watch.dataset, &watch.name, &why).await
                {
                    tracing::error!(watch = %watch.name, "cannot record the block of dataset {}: {}", watch.dataset, e.explain());
                }
            }
            Verdict::Pass | Verdict::Warn | Verdict::Unchecked => {}
        }
        if let Some(mapping) = &watch.mapping {
            match crate::mapped::load(mapping, report.schema.as_ref()) {
                Ok((mapper, warnings)) => {
                    for warning in warnings {
                        tracing::warn!(watch = %watch.name, mapping = %mapping.path.display(), "{warning}");
                    }
                    admitted
                        .mappers
                        .insert(watch.name.clone(), Arc::new(mapper));
                }
                Err(e) => {
                    tracing::error!(
                        watch = %watch.name, dataset = %watch.dataset,
                        "watch {} is refused and does not run (the other watches do): {e}",
                        watch.name
                    );
                    continue;
                }
            }
        }
        let profile = report
            .dataset
            .as_ref()
            .is_some_and(Dataset::is_profile_enabled);
        if let Some(budget) = watch
            .max_batches_per_day
            .or(profile.then_some(PROFILE_BATCHES_PER_DAY))
        {
            admitted.budgets.insert(watch.name.clone(), budget);
        }
        let upsert = report.dataset.as_ref().is_some_and(Dataset::is_upsert);
        if let Some(schema) = &report.schema {
            match Validator::new(schema, upsert) {
                Ok(v) => {
                    admitted.validators.insert(watch.name.clone(), Arc::new(v));
                }
                Err(why) => {
                    tracing::warn!(watch = %watch.name, "schema {} cannot check records ({why}); files are not checked locally", schema.id)
                }
            }
        }
        admitted.watches.push(watch.clone());
    }
    admitted
}

fn log(watch: &Watch, report: &WatchReport) {
    for check in &report.checks {
        let line = format!("{}: {}", check.subject, check.message);
        match check.verdict {
            Verdict::Pass => tracing::debug!(watch = %watch.name, "pre-flight: {line}"),
            Verdict::Warn | Verdict::Unchecked => {
                tracing::warn!(watch = %watch.name, dataset = %watch.dataset, "pre-flight: {line}")
            }
            Verdict::Missing => {
                tracing::error!(watch = %watch.name, dataset = %watch.dataset, "pre-flight: {line}")
            }
            Verdict::Refuse => tracing::error!(
                watch = %watch.name, dataset = %watch.dataset,
                "pre-flight: watch {} is refused and does not run (the other watches do): {line}; fix the config and reload (SIGHUP)",
                watch.name
            ),
        }
    }
}
