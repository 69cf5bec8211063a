//! What one caller may see: the datasets and batches of its organisation and sandbox (the
//! gateway's `x-gw-ims-org-id` and `x-sandbox-name`), and the answer for everything else.
//!
//! The platform isolates sandboxes completely: a dataset or batch of another sandbox is not
//! "forbidden", it does not exist for this caller, and the answer does not tell the two apart.
//! Every handler that loads a dataset or a batch named by the caller goes through here, so
//! that none can forget the rule. This module must not check credentials (`gateway.rs` does)
//! or decide what a batch's status allows (the handlers do).

use super::error::{ApiError, ApiResult};
use super::gateway::Caller;
use super::state::AppState;
use super::store::{BatchRow, BatchStatus, DatasetRow};

/// The 404 of a dataset that does not exist or belongs to another sandbox.
pub fn dataset_not_found(id: &str, caller: &Caller) -> ApiError {
    ApiError::not_found(format!(
        "dataset {id} does not exist in sandbox {} of organization {}",
        caller.sandbox, caller.org
    ))
}

/// The 404 of a batch that does not exist or belongs to another sandbox.
pub fn batch_not_found(id: &str, caller: &Caller) -> ApiError {
    ApiError::not_found(format!(
        "batch {id} does not exist in sandbox {} of organization {}",
        caller.sandbox, caller.org
    ))
}

/// The dataset `id` as the caller sees it, or its 404.
pub async fn dataset(state: &AppState, caller: &Caller, id: &str) -> ApiResult<DatasetRow> {
    state
        .store
        .visible_dataset(id, caller.scope())
        .await?
        .ok_or_else(|| dataset_not_found(id, caller))
}

/// The batch `id` as the caller sees it, or its 404.
pub async fn batch(state: &AppState, caller: &Caller, id: &str) -> ApiResult<BatchRow> {
    state
        .store
        .visible_batch(id, caller.scope())
        .await?
        .ok_or_else(|| batch_not_found(id, caller))
}

/// The batch `id` if Data Access still shows it to the caller: not for a batch unknown here,
/// of another sandbox, or made inactive or deleted (a revert takes a batch out of Data Access
/// at once). Data Access answers those with an empty listing, not a 404 (its spec documents
/// only 200, 401 and 500 for them).
pub async fn shown_batch(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Option<BatchRow>> {
    Ok(state
        .store
        .visible_batch(id, caller.scope())
        .await?
        .filter(|batch| !matches!(batch.status, BatchStatus::Inactive | BatchStatus::Deleted)))
}
