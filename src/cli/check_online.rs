//! `batchdrop check-config --online`: after the offline checks, asks the platform what the
//! daemon's pre-flight asks at start: credentials obtained, the sandbox reachable, every
//! watch's dataset found in it and fitting the watch, its schema fetched. One line per check
//! (`ok`, `warning` or `FAILED`, what, and what to do); exit 3 when any check failed.
//!
//! It changes nothing on the platform; beyond pre-flight's schema copies in the state dir it
//! writes nothing.

use super::{CommandError, Connection};
use crate::api::BatchQuery;
use crate::config::Config;
use crate::preflight::{Check, Verdict, check_watch};

pub async fn run(config: &Config) -> Result<u8, CommandError> {
    let offline = super::check_config::run(config);
    let mut checks = Vec::new();
    match Connection::open(config).await {
        Err(e) => checks.push(Check::new(
            "credentials",
            Verdict::Unchecked,
            &format!("cannot set up the platform client: {e}"),
        )),
        Ok(connection) => {
            let api = &connection.api;
            let sandbox = &config.platform.sandbox;
            let probe = BatchQuery {
                limit: Some(1),
                ..BatchQuery::default()
            };
            match api.find_batches(&probe).await {
                Ok(_) => {
                    checks.push(Check::new(
                        "credentials",
                        Verdict::Pass,
                        "a token was obtained and the platform accepted it",
                    ));
                    checks.push(Check::new(
                        &format!("sandbox {sandbox}"),
                        Verdict::Pass,
                        "reachable (the Catalog answered)",
                    ));
                    for watch in &config.watches {
                        let report = check_watch(api, &config.state_dir, watch).await;
                        checks.extend(report.checks);
                    }
                }
                Err(e) if matches!(e.http_status(), Some(401 | 403)) || e.is_config() => {
                    checks.push(Check::new(
                        "credentials",
                        Verdict::Unchecked,
                        &format!("refused: {e}"),
                    ));
                }
                Err(e) => {
                    checks.push(Check::new(
                        &format!("sandbox {sandbox}"),
                        Verdict::Unchecked,
                        &format!("not reachable: {e}"),
                    ));
                }
            }
            if let Some(emulator) = connection.embedded {
                emulator.shutdown().await;
            }
        }
    }
    println!("online checks:");
    for c in &checks {
        println!("{:<8}{}: {}", c.verdict.label(), c.subject, c.message);
    }
    let failed = checks.iter().filter(|c| c.verdict.is_failure()).count();
    match (offline, failed) {
        (Err(e), _) => Err(e),
        (Ok(code), 0) => Ok(code),
        (Ok(_), n) => Err(CommandError::ConfigProblems(format!(
            "config {}: {n} online check(s) failed (the lines marked FAILED above say what to change)",
            config.path.display()
        ))),
    }
}
