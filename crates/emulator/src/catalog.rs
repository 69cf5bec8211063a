//! The Catalog endpoints: batches and datasets, as maps keyed by id.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::catalog_query::{CatalogQuery, Collection};
use super::error::{ApiError, ApiResult};
use super::gateway::Caller;
use super::scope;
use super::state::AppState;
use super::store::{
    BatchFilter, BatchRow, BatchStatus, DatasetRow, NewDataset, Page, new_dataset_id,
};

fn parse_obj(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| json!({}))
}

/// A batch as the Catalog shows it.
pub fn batch_json(b: &BatchRow) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(b.id));
    o.insert("imsOrg".into(), json!(b.ims_org));
    o.insert("sandboxName".into(), json!(b.sandbox));
    o.insert("status".into(), json!(b.status.as_str()));
    o.insert("created".into(), json!(b.created));
    o.insert("updated".into(), json!(b.updated));
    if let Some(s) = b.started {
        o.insert("started".into(), json!(s));
    }
    if let Some(c) = b.completed {
        o.insert("completed".into(), json!(c));
    }
    o.insert(
        "relatedObjects".into(),
        json!([{"type": "dataSet", "id": b.dataset_id}]),
    );
    o.insert("inputFormat".into(), parse_obj(&b.input_format));
    o.insert("version".into(), json!(batch_version(b.status)));
    o.insert("tags".into(), parse_obj(&b.tags));
    o.insert("createdUser".into(), json!(b.created_user));
    o.insert("updatedUser".into(), json!(b.created_user));
    // The API key the batch was made with (its creator is `{key}@AdobeID`).
    let client = b
        .created_user
        .strip_suffix("@AdobeID")
        .unwrap_or(&b.created_user);
    o.insert("createdClient".into(), json!(client));
    o.insert(
        "sandboxId".into(),
        json!(sandbox_id(&b.ims_org, &b.sandbox)),
    );
    // The platform fills externalId with the batch id when the client sent none.
    o.insert(
        "externalId".into(),
        json!(b.external_id.as_deref().unwrap_or(&b.id)),
    );
    if let Some(r) = &b.replay {
        o.insert("replay".into(), parse_obj(r));
    }
    if let Value::Object(opts) = parse_obj(&b.options) {
        for (k, v) in opts {
            o.insert(k, v);
        }
    }
    if let Some(m) = &b.metrics {
        o.insert("metrics".into(), parse_obj(m));
    }
    if let Some(e) = &b.errors {
        let errors: Value = serde_json::from_str(e).unwrap_or_else(|_| json!([]));
        if errors.as_array().is_some_and(|a| !a.is_empty()) {
            o.insert("errors".into(), errors);
        }
    }
    Value::Object(o)
}

/// A batch's `version`, which moves on as its status does (the platform's moves with every
/// change of the object; the status is what changes an emulator batch).
fn batch_version(status: BatchStatus) -> String {
    let step = match status {
        BatchStatus::Loading => 0,
        BatchStatus::Staging | BatchStatus::Queued => 1,
        BatchStatus::Processing | BatchStatus::Retrying => 2,
        BatchStatus::Success
        | BatchStatus::Failed
        | BatchStatus::Aborted
        | BatchStatus::Abandoned
        | BatchStatus::Stalled => 3,
        BatchStatus::Inactive => 4,
        BatchStatus::Deleted => 5,
    };
    format!("1.0.{step}")
}

/// The id of a dataset's view (the platform's `viewId`, which Data Access repeats as each
/// file's `dataSetViewId`): stable per dataset.
pub fn view_id(dataset_id: &str) -> String {
    uuid_like(dataset_id).replace('-', "")[..24].to_owned()
}

/// A stable identifier of the sandbox (the platform's are UUIDs; this one is derived from the
/// organisation and the sandbox name, so the same sandbox always has the same id).
pub fn sandbox_id(org: &str, sandbox: &str) -> String {
    uuid_like(&format!("{org}/{sandbox}"))
}

fn uuid_like(seed: &str) -> String {
    use sha2::Digest;
    let hex = crate::upload::hex(&sha2::Sha256::digest(seed.as_bytes())[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A JSON object keyed by id whose keys keep the order of the query (`orderBy`), as the
/// Catalog sends them (serde_json's own map would sort them).
fn ordered_map<'a>(items: impl Iterator<Item = (&'a str, Value)>) -> Response {
    let mut body = String::from("{");
    for (i, (id, v)) in items.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&Value::String(id.to_owned()).to_string());
        body.push(':');
        body.push_str(&v.to_string());
    }
    body.push('}');
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

pub async fn get_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let b = scope::batch(&state, &caller, &id).await?;
    let mut map = Map::new();
    map.insert(b.id.clone(), batch_json(&b));
    Ok(axum::Json(Value::Object(map)).into_response())
}

/// `limit` (default 20, at most 100) and `start` (offset) of `/lastBatches`.
fn page(q: &HashMap<String, String>) -> ApiResult<Page> {
    let limit = match q.get("limit") {
        None => 20,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit {v:?} must be a positive integer"))
            })?
            .min(100),
    };
    let start = match q.get("start") {
        None => 0,
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(format!("start {v:?} must be a non-negative integer"))
        })?,
    };
    Ok(Page { limit, start })
}

/// `/lastBatches` takes these parameters; its other documented filters are refused (ignoring
/// one would answer the whole collection as if it were the filtered one).
const LAST_BATCHES_PARAMS: &[&str] = &["dataSetId", "limit", "start"];

/// Refuses, with 400, a parameter this list does not support and a `!` negation (which an
/// exact match would turn into an empty answer).
fn supported_only(q: &HashMap<String, String>, what: &str, known: &[&str]) -> ApiResult<()> {
    let mut names: Vec<&String> = q.keys().collect();
    names.sort();
    for name in names {
        if !known.contains(&name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "the emulator's Catalog cannot filter {what} by {name:?}: it supports {} only; \
                 drop the parameter or filter the answer yourself",
                known.join(", ")
            )));
        }
        if q[name].split(',').any(|v| v.starts_with('!')) && name != "orderBy" {
            return Err(ApiError::bad_request(format!(
                "the emulator's Catalog cannot negate a filter ({name}={}): list the values wanted instead",
                q[name]
            )));
        }
    }
    Ok(())
}

/// The values of a filter the store can narrow a list by before the query runs: those of
/// `key` when it is given once and without a negation; none (no narrowing) otherwise.
fn narrowing(pairs: &[(String, String)], key: &str) -> Vec<String> {
    match pairs
        .iter()
        .filter(|(k, _)| k == key)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [(_, v)] if !v.contains('!') => v
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

pub async fn list_batches(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let query = CatalogQuery::parse(&pairs, Collection::Batches)?;
    // Only a narrowing for the store: the query itself decides what is shown.
    let datasets = narrowing(&pairs, "dataSet");
    let filter = BatchFilter {
        datasets,
        ..BatchFilter::default()
    };
    let rows = state
        .store
        .list_batches(&filter, caller.scope(), &Page::everything())
        .await?;
    let objects = rows.iter().map(|b| (b.id.clone(), batch_json(b))).collect();
    let shown = query.apply(objects);
    Ok(ordered_map(
        shown.iter().map(|(id, v)| (id.as_str(), v.clone())),
    ))
}

/// A dataset as the Catalog shows it, with its most recent batch (`last`).
pub fn dataset_json(d: &DatasetRow, last: Option<&BatchRow>) -> Value {
    let mut o = match parse_obj(&d.extra) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    o.insert("id".into(), json!(d.id));
    o.insert("name".into(), json!(d.name));
    o.insert("imsOrg".into(), json!(d.ims_org));
    o.insert("sandboxName".into(), json!(d.sandbox));
    o.insert("tags".into(), parse_obj(&d.tags));
    if let Some(s) = &d.schema_ref {
        o.insert("schemaRef".into(), parse_obj(s));
    }
    o.insert("created".into(), json!(d.created));
    o.insert("updated".into(), json!(d.updated));
    o.insert("version".into(), json!("1.0.0"));
    // Fields a client reads unconditionally; what the dataset was created with wins.
    let defaults = [
        ("createdClient", json!("batchdrop-emulator")),
        ("createdUser", json!("batchdrop-emulator@AdobeID")),
        ("updatedUser", json!("batchdrop-emulator@AdobeID")),
        (
            "classification",
            json!({"dataBehavior": "record", "managedBy": "CUSTOMER"}),
        ),
    ];
    for (key, value) in defaults {
        o.entry(key).or_insert(value);
    }
    o.insert("viewId".into(), json!(view_id(&d.id)));
    o.insert(
        "files".into(),
        json!(format!("@/dataSetFiles?dataSetId={}", d.id)),
    );
    if let Some(batch) = last {
        o.insert("lastBatchId".into(), json!(batch.id));
        o.insert("lastBatchStatus".into(), json!(batch.status.as_str()));
    }
    Value::Object(o)
}

pub async fn create_dataset(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(mut req) = req else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object with name and schemaRef",
        ));
    };
    let name = match req.remove("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        _ => {
            return Err(ApiError::bad_request(
                "name is required (a non-empty string)",
            ));
        }
    };
    let schema_ref = match req.remove("schemaRef") {
        Some(v @ Value::Object(_)) if v.get("id").and_then(Value::as_str).is_some() => v,
        _ => {
            return Err(ApiError::bad_request(
                "schemaRef is required: {\"id\": \"https://ns.adobe.com/{TENANT}/schemas/{ID}\", \"contentType\": \"application/vnd.adobe.xed+json;version=1\"}",
            ));
        }
    };
    // With schemas registered, a dataset must name one of them (a permissive emulator without
    // schemas takes any reference, and its datasets accept any well-formed record).
    let ref_id = schema_ref
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !state.schemas.is_empty() && state.schemas.get(ref_id).is_none() {
        return Err(ApiError::bad_request(format!(
            "schemaRef.id {ref_id:?} is not a schema of this sandbox: register it first (emulator config [[schemas]]); registered: {}",
            state.schemas.ids().join(", ")
        )));
    }
    let tags = dataset_tags(req.remove("tags"))?;
    let creator = format!("{}@AdobeID", caller.api_key);
    req.insert("createdClient".into(), json!(caller.api_key));
    req.insert("createdUser".into(), json!(creator));
    req.insert("updatedUser".into(), json!(creator));
    for k in [
        "id",
        "created",
        "updated",
        "imsOrg",
        "sandboxName",
        "version",
    ] {
        req.remove(k);
    }
    let id = new_dataset_id();
    state
        .store
        .insert_dataset_if_missing(NewDataset {
            id: &id,
            name: &name,
            schema_ref: Some(&schema_ref.to_string()),
            tags: &tags.to_string(),
            extra: &Value::Object(req).to_string(),
            ims_org: &caller.org,
            sandbox: &caller.sandbox,
            identity_field: None,
        })
        .await?;
    tracing::info!(dataset = %id, %name, "dataset created");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!([format!("@/dataSets/{id}")])),
    )
        .into_response())
}

/// A new dataset's tags: an object of arrays of strings.
pub(crate) fn dataset_tags(tags: Option<Value>) -> ApiResult<Value> {
    match tags {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(m)) => {
            for (k, v) in &m {
                if !matches!(v, Value::Array(a) if a.iter().all(Value::is_string)) {
                    return Err(ApiError::bad_request(format!(
                        "tags.{k} must be an array of strings"
                    )));
                }
            }
            Ok(Value::Object(m))
        }
        Some(_) => Err(ApiError::bad_request("tags must be an object")),
    }
}

pub async fn get_dataset(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = scope::dataset(&state, &caller, &id).await?;
    let mut map = Map::new();
    let last = state.store.last_batch_of(&d.id, caller.scope()).await?;
    map.insert(d.id.clone(), dataset_json(&d, last.as_ref()));
    Ok(axum::Json(Value::Object(map)).into_response())
}

/// `DELETE /dataSets/{id}`: 200 with `["@/dataSets/{id}"]`, as the platform answers; 404 when
/// there is no such dataset. Creating a batch for it is refused from then on.
pub async fn delete_dataset(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if state
        .store
        .visible_dataset(&id, caller.scope())
        .await?
        .is_none()
        || !state.store.delete_dataset(&id).await?
    {
        return Err(scope::dataset_not_found(&id, &caller));
    }
    tracing::info!(dataset = %id, "dataset deleted");
    Ok(axum::Json(json!([format!("@/dataSets/{id}")])).into_response())
}

pub async fn list_datasets(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let query = CatalogQuery::parse(&pairs, Collection::Datasets)?;
    let rows = state
        .store
        .list_datasets(caller.scope(), None, &Page::everything())
        .await?;
    let mut objects = Vec::with_capacity(rows.len());
    for d in &rows {
        let last = state.store.last_batch_of(&d.id, caller.scope()).await?;
        objects.push((d.id.clone(), dataset_json(d, last.as_ref())));
    }
    let shown = query.apply(objects);
    Ok(ordered_map(
        shown.iter().map(|(id, v)| (id.as_str(), v.clone())),
    ))
}

/// `GET /dataSetFiles`: the files of successful batches as Catalog objects keyed by id
/// (`dataSetId`, `batchId`, `name`, `records`, `size`...), with the list query language of the
/// other Catalog lists. The dataset objects' `files` link (`@/dataSetFiles?dataSetId=ID`)
/// points here.
pub async fn list_dataset_files(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let query = CatalogQuery::parse(&pairs, Collection::DatasetFiles)?;
    let datasets = narrowing(&pairs, "dataSetId");
    // A dataset's files page after page (the usual walk) is read a page at a time: reading
    // every file for each page made listing n files O(n²).
    let page = query.page_alone("dataSetId", &datasets);
    let files = state
        .store
        .readable_files(&datasets, caller.scope(), page)
        .await?;
    let objects = files
        .into_iter()
        .map(|(file, dataset)| {
            let object = json!({
                "id": file.id,
                "dataSetId": dataset,
                "dataSetViewId": view_id(&dataset),
                "batchId": file.batch_id,
                "name": file.path,
                "records": file.records.unwrap_or(0),
                "size": file.served_size.unwrap_or(file.size),
                "isValid": true,
                "created": file.created,
                "updated": file.updated,
                "version": "1.0.0",
            });
            (file.id, object)
        })
        .collect();
    let shown = match page {
        Some(_) => query.shape(objects),
        None => query.apply(objects),
    };
    Ok(ordered_map(
        shown.iter().map(|(id, v)| (id.as_str(), v.clone())),
    ))
}

/// `GET /lastBatches`: per dataset (keyed by its id), its last batch, last successful and last
/// failed one. Datasets without a batch are left out.
pub async fn last_batches(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    supported_only(&q, "lastBatches", LAST_BATCHES_PARAMS)?;
    let page = page(&q)?;
    let wanted: Vec<&str> = q
        .get("dataSetId")
        .map(|v| v.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let mut shown = Vec::new();
    let mut datasets = state
        .store
        .list_datasets(caller.scope(), None, &Page::everything())
        .await?;
    datasets.retain(|d| wanted.is_empty() || wanted.contains(&d.id.as_str()));
    for d in &datasets {
        let Some(last) = state
            .store
            .last_batch_in(&d.id, caller.scope(), None)
            .await?
        else {
            continue;
        };
        let mut o = Map::new();
        o.insert("lastBatchId".into(), json!(last.id));
        o.insert("lastBatchStatus".into(), json!(last.status.as_str()));
        for (field, status) in [
            ("lastSuccessfulBatchId", BatchStatus::Success),
            ("lastFailedBatchId", BatchStatus::Failed),
        ] {
            if let Some(b) = state
                .store
                .last_batch_in(&d.id, caller.scope(), Some(status))
                .await?
            {
                o.insert(field.into(), json!(b.id));
            }
        }
        o.insert("imsOrg".into(), json!(last.ims_org));
        o.insert(
            "sandboxId".into(),
            json!(sandbox_id(&last.ims_org, &last.sandbox)),
        );
        o.insert("created".into(), json!(last.created));
        o.insert("updated".into(), json!(last.updated));
        shown.push((d.id.as_str(), Value::Object(o)));
    }
    let start = usize::try_from(page.start).unwrap_or(usize::MAX);
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
    Ok(ordered_map(shown.into_iter().skip(start).take(limit)))
}
