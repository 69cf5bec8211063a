//! `batchdrop abort BATCH`: stops a batch in flight. The abort is recorded in the state first
//! (the batch ends `aborted`, its files fail with a reason that says how to retry them), so the
//! running daemon neither goes on with it nor requeues its files when it sees the platform's
//! abort; then ABORT is sent. A batch this state does not know is aborted on the platform only.
//!
//! This module must not move files (the daemon's archiver moves them to the failed folder).

use super::{CommandError, Connection, known_batch, platform_only};
use crate::api::{BatchAction, BatchStatus};
use crate::config::Config;
use crate::store::BatchState;

pub async fn run(config: &Config, arg: &str) -> Result<u8, CommandError> {
    let Some((store, b)) = known_batch(config, arg).await? else {
        platform_only(config, arg, BatchAction::Abort).await?;
        return Ok(0);
    };
    let label = b.label();
    match b.state() {
        BatchState::Success => {
            return Err(CommandError::Refused(format!(
                "batch {label} already succeeded: abort only stops a batch in flight; to take its data back out of dataset {}, run `batchdrop revert {label}`",
                b.dataset
            )));
        }
        BatchState::Aborted => {
            println!("batch {label} was already aborted");
            return Ok(0);
        }
        s if !s.in_flight() => {
            return Err(CommandError::Refused(format!(
                "batch {label} already ended ({s}): there is nothing to abort; `batchdrop status {label}` shows its history"
            )));
        }
        _ => {}
    }
    let conn = Connection::open(config).await?;
    // Every call about the batch goes to the sandbox it was created in.
    let api = conn
        .api
        .in_sandbox(b.sandbox.as_deref())
        .map_err(|e| CommandError::api(&format!("abort batch {label}"), e))?;
    // The platform may have finished it a moment ago: then there is nothing to abort, and the
    // daemon records the outcome itself.
    if let Some(remote) = b.remote_id() {
        match api.get_batch(remote).await {
            Ok(Some(info)) if info.status.is_terminal() => {
                conn.close().await;
                return Err(CommandError::Refused(format!(
                    "batch {label} is already {} on the platform: too late to abort{}",
                    info.status,
                    if info.status == BatchStatus::Success {
                        format!(
                            "; to take its data back, wait for its receipts and run `batchdrop revert {label}`"
                        )
                    } else {
                        String::new()
                    }
                )));
            }
            Ok(_) => {}
            Err(e) => {
                conn.close().await;
                return Err(CommandError::api(&format!("look up batch {label}"), e));
            }
        }
    }
    let reason = format!(
        "batch {label} was aborted by the operator (`batchdrop abort`); run `batchdrop retry {}` to ingest its files again",
        match b.remote_id() {
            Some(r) => r.to_owned(),
            None => format!("#{}", b.id),
        }
    );
    if !store.abort_batch(b.id, &reason).await? {
        conn.close().await;
        let now = store.batch(b.id).await?;
        return Err(CommandError::Refused(format!(
            "batch {label} ended ({}) before the abort could be recorded; see `batchdrop status {label}`",
            now.state()
        )));
    }
    // A batch being created has no id here yet: find it by its externalId.
    let remote = match b.remote_id() {
        Some(r) => Some(r.to_owned()),
        None => match api
            .find_batch_by_external_id(&b.dataset, &b.external_id)
            .await
        {
            Ok(found) => found.map(|f| f.id),
            Err(e) => {
                conn.close().await;
                return Err(CommandError::api(
                    &format!(
                        "batch {label} is recorded as aborted, but looking it up on the platform by externalId {} failed (the platform abandons it unused)",
                        b.external_id
                    ),
                    e,
                ));
            }
        },
    };
    let sent = match &remote {
        Some(r) => api.batch_action(r, BatchAction::Abort).await,
        None => Ok(()),
    };
    conn.close().await;
    let files = store.batch_files(b.id).await?.len();
    store.close().await;
    sent.map_err(|e| {
        CommandError::api(
            &format!(
                "batch {label} is recorded as aborted (its {files} file(s) go to the failed folder), but the platform refused ABORT"
            ),
            e,
        )
    })?;
    println!(
        "aborted batch {}; its {files} file(s) go to the failed folder with a receipt (`batchdrop retry {}` requeues them)",
        remote.as_deref().unwrap_or(&label),
        remote.clone().unwrap_or_else(|| format!("#{}", b.id))
    );
    Ok(0)
}
