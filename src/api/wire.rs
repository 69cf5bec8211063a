//! What the platform's JSON looks like, both ways: request bodies (serde structs) and tolerant
//! readers that turn responses into `types.rs` values. It owns every wire quirk: the `$` on
//! replay predecessors, Catalog's maps keyed by id, numbers that arrive as strings, statuses
//! with aliases. It does no I/O and must not share types with the emulator crate, so that a
//! contract test between the two means something.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::types::{
    BatchError, BatchInfo, BatchMetrics, BatchStatus, CreateBatch, DataSetFile, Dataset, Format,
    Replay, SchemaRef,
};

// ---- requests -------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateBatchBody<'a> {
    dataset_id: &'a str,
    input_format: InputFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay: Option<ReplayBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: &'a BTreeMap<String, Vec<String>>,
    enable_error_diagnostics: bool,
    // The public docs spell it both ways; the platform's own examples use this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_ingestion_percentage: Option<u8>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InputFormat {
    format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_multi_line_json: Option<bool>,
}

#[derive(Debug, Serialize)]
struct ReplayBody<'a> {
    predecessors: Vec<String>,
    reason: &'a str,
}

impl<'a> CreateBatchBody<'a> {
    pub(crate) fn new(req: &'a CreateBatch) -> CreateBatchBody<'a> {
        CreateBatchBody {
            dataset_id: &req.dataset_id,
            input_format: InputFormat {
                format: req.format.as_str(),
                // Only meaningful for JSON; other formats would reject or ignore it.
                is_multi_line_json: (req.format == Format::Json).then_some(req.multiline_json),
            },
            replay: req.replay.as_ref().map(|r| ReplayBody {
                predecessors: r
                    .predecessors
                    .iter()
                    .map(|p| format!("${}", p.trim_start_matches('$')))
                    .collect(),
                reason: &r.reason,
            }),
            external_id: req.external_id.as_deref(),
            tags: &req.tags,
            enable_error_diagnostics: req.enable_error_diagnostics,
            partial_ingestion_percentage: req.partial_ingestion_percent,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateDatasetBody<'a> {
    pub(crate) name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) schema_ref: Option<SchemaRefBody<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) tags: &'a BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SchemaRefBody<'a> {
    pub(crate) id: &'a str,
    pub(crate) content_type: &'a str,
}

// ---- responses ------------------------------------------------------------------------------

/// A batch from either a bare Batch object (create-batch) or a Catalog map keyed by id with one
/// entry. `Ok(None)` for an empty map, which Catalog may send instead of a 404.
pub(crate) fn batch_from_response(v: &Value) -> Result<Option<BatchInfo>, String> {
    let Some(obj) = v.as_object() else {
        return Err(format!("expected a JSON object, got {}", type_name(v)));
    };
    if looks_like_batch(obj) {
        return batch_from_object(None, obj).map(Some);
    }
    Ok(batches_from_map(v)?.into_iter().next())
}

/// All batches of a Catalog listing (a map keyed by id). Entries that are not objects are
/// skipped: Catalog listings may carry bookkeeping keys next to the batches.
pub(crate) fn batches_from_map(v: &Value) -> Result<Vec<BatchInfo>, String> {
    let Some(obj) = v.as_object() else {
        return Err(format!("expected a map of batches, got {}", type_name(v)));
    };
    if looks_like_batch(obj) {
        return Ok(vec![batch_from_object(None, obj)?]);
    }
    obj.iter()
        .filter_map(|(key, value)| value.as_object().map(|o| (key, o)))
        .map(|(key, o)| batch_from_object(Some(key), o))
        .collect()
}

/// A bare batch has an `id` string and a `status`; a map keyed by id has neither at top level.
fn looks_like_batch(obj: &Map<String, Value>) -> bool {
    obj.get("id").is_some_and(Value::is_string) && obj.contains_key("status")
}

fn batch_from_object(key: Option<&str>, o: &Map<String, Value>) -> Result<BatchInfo, String> {
    let id = str_field(o, "id")
        .or_else(|| key.map(str::to_string))
        .ok_or("batch without an id")?;
    let status = str_field(o, "status")
        .map(|s| BatchStatus::parse(&s))
        .ok_or_else(|| format!("batch {id} has no status"))?;
    let metrics = o.get("metrics").and_then(Value::as_object);
    let metric = |name: &str| metrics.and_then(|m| m.get(name)).and_then(lenient_u64);
    Ok(BatchInfo {
        status,
        external_id: str_field(o, "externalId"),
        dataset_id: related_dataset(o).or_else(|| str_field(o, "datasetId")),
        created: o.get("created").and_then(lenient_i64),
        updated: o.get("updated").and_then(lenient_i64),
        started: o.get("started").and_then(lenient_i64),
        completed: o.get("completed").and_then(lenient_i64),
        metrics: BatchMetrics {
            input_file_count: metric("inputFileCount"),
            input_byte_size: metric("inputByteSize"),
            input_record_count: metric("inputRecordCount"),
            output_record_count: metric("outputRecordCount"),
            output_byte_size: metric("outputByteSize"),
            output_file_count: metric("outputFileCount"),
            failed_record_count: metric("failedRecordCount"),
        },
        errors: o
            .get("errors")
            .and_then(Value::as_array)
            .map(|errs| errs.iter().filter_map(batch_error).collect())
            .unwrap_or_default(),
        replay: o.get("replay").and_then(Value::as_object).map(|r| Replay {
            predecessors: string_list(r.get("predecessors"))
                .into_iter()
                .map(|p| p.trim_start_matches('$').to_string())
                .collect(),
            reason: str_field(r, "reason").unwrap_or_default(),
        }),
        tags: tags(o.get("tags")),
        raw: Value::Object(o.clone()),
        id,
    })
}

fn related_dataset(o: &Map<String, Value>) -> Option<String> {
    o.get("relatedObjects")?
        .as_array()?
        .iter()
        .filter_map(Value::as_object)
        .find(|r| str_field(r, "type").is_some_and(|t| t.eq_ignore_ascii_case("dataSet")))
        .and_then(|r| str_field(r, "id"))
}

fn batch_error(v: &Value) -> Option<BatchError> {
    let o = v.as_object()?;
    Some(BatchError {
        // Codes arrive both as strings ("INGEST-1212-400") and as numbers (106).
        code: o.get("code").map(scalar_string).unwrap_or_default(),
        description: str_field(o, "description")
            .or_else(|| str_field(o, "message"))
            .unwrap_or_default(),
        record_count: o.get("recordCount").and_then(lenient_u64),
    })
}

/// The id from create-dataset's answer `["@/dataSets/{id}"]`. Also takes a bare id string or an
/// object with `id`, which some gateways return.
pub(crate) fn dataset_id_from_create(v: &Value) -> Result<String, String> {
    let first = match v {
        Value::Array(items) => items.first().and_then(Value::as_str),
        Value::String(s) => Some(s.as_str()),
        Value::Object(o) => o.get("id").and_then(Value::as_str),
        _ => None,
    }
    .ok_or_else(|| format!("expected [\"@/dataSets/{{id}}\"], got {v}"))?;
    let id = first.rsplit('/').next().unwrap_or(first).trim();
    if id.is_empty() || id.starts_with('@') {
        return Err(format!("no dataset id in {v}"));
    }
    Ok(id.to_string())
}

/// A dataset from `GET {catalog}/dataSets/{id}` (a map keyed by id; a bare object also works).
pub(crate) fn dataset_from_response(v: &Value) -> Result<Option<Dataset>, String> {
    let Some(obj) = v.as_object() else {
        return Err(format!("expected a JSON object, got {}", type_name(v)));
    };
    let (key, o) = if obj.get("id").is_some_and(Value::is_string) || obj.contains_key("name") {
        (None, obj)
    } else {
        match obj.iter().find_map(|(k, v)| v.as_object().map(|o| (k, o))) {
            Some((k, o)) => (Some(k.as_str()), o),
            None => return Ok(None),
        }
    };
    let id = str_field(o, "id")
        .or_else(|| key.map(str::to_string))
        .ok_or("dataset without an id")?;
    let schema_ref = o.get("schemaRef").and_then(Value::as_object).and_then(|s| {
        Some(SchemaRef {
            id: str_field(s, "id")?,
            content_type: str_field(s, "contentType").unwrap_or_default(),
        })
    });
    Ok(Some(Dataset {
        id,
        name: str_field(o, "name"),
        schema_ref,
        tags: tags(o.get("tags")),
        raw: Value::Object(o.clone()),
    }))
}

/// `{"data": [{"dataSetFileId", "dataSetId", "records", "size"}]}` from Data Access.
pub(crate) fn dataset_files(v: &Value) -> Result<Vec<DataSetFile>, String> {
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("expected {{\"data\": [...]}}, got {}", type_name(v)))?;
    data.iter()
        .filter_map(Value::as_object)
        .map(|o| {
            Ok(DataSetFile {
                id: str_field(o, "dataSetFileId").ok_or("dataset file without dataSetFileId")?,
                dataset_id: str_field(o, "dataSetId"),
                name: str_field(o, "name"),
                records: o.get("records").and_then(lenient_u64),
                size: o.get("size").and_then(lenient_u64),
            })
        })
        .collect()
}

/// IMS token answer: `{"access_token", "token_type", "expires_in"}`.
#[derive(Debug, PartialEq)]
pub(crate) struct TokenAnswer {
    pub(crate) access_token: String,
    pub(crate) expires_in: std::time::Duration,
}

pub(crate) fn token_answer(v: &Value) -> Result<TokenAnswer, String> {
    let access_token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("no access_token in the answer")?
        .to_string();
    let expires = v
        .get("expires_in")
        .and_then(lenient_u64)
        .ok_or("no expires_in in the answer")?;
    // IMS v3 documents seconds (86399 ≈ 24 h); the retired v1/v2 endpoints sent milliseconds.
    // No token lives 12 days, so a value that large can only be milliseconds.
    let secs = if expires > 1_000_000 {
        expires / 1000
    } else {
        expires
    };
    Ok(TokenAnswer {
        access_token,
        expires_in: std::time::Duration::from_secs(secs),
    })
}

// ---- lenient scalars ------------------------------------------------------------------------

fn str_field(o: &Map<String, Value>, name: &str) -> Option<String> {
    match o.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn lenient_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().map(scalar_string).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn tags(v: Option<&Value>) -> BTreeMap<String, Vec<String>> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), string_list(Some(v))))
                .collect()
        })
        .unwrap_or_default()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `GET {catalog}/batches/{id}` example of the reference, verbatim.
    const CATALOG_BATCH: &str = r#"{ "01E8043CY305K2MTV5ANH9G1GC": {
        "id": "01E8043CY305K2MTV5ANH9G1GC", "status": "success", "externalId": "...",
        "relatedObjects": [{"type": "dataSet", "id": "5deac2648a19d218a888d2b1"}],
        "inputFormat": {"format": "json"}, "created": 1576741597205, "started": 1576741718543,
        "completed": 1576741722026, "updated": 1576741722644,
        "metrics": {"inputByteSize": 568, "inputFileCount": 4, "inputRecordCount": 519,
                    "outputRecordCount": 514, "failedRecordCount": 5},
        "errors": [{"code": "INGEST-1212-400", "description": "Encountered 5 errors ...",
                    "recordCount": 5}],
        "replay": {"predecessors": ["..."], "reason": "replace"},
        "tags": {"acp_successor": ["..."]} } }"#;

    /// The create-batch response of the original guide (with a replay).
    const CREATED_BATCH: &str = r#"{
        "id": "{BATCH_ID}", "imsOrg": "{ORG_ID}", "updated": 0, "status": "loading",
        "created": 0, "relatedObjects": [{"type": "dataSet", "id": "{DATASET_ID}"}],
        "replay": {"predecessors": ["batchIdA", "batchIdB"], "reason": "replace"},
        "version": "1.0.0", "tags": {}, "createdUser": "{USER_ID}", "updatedUser": "{USER_ID}"
    }"#;

    #[test]
    fn catalog_map_sample_parses() {
        let v: Value = serde_json::from_str(CATALOG_BATCH).unwrap();
        let b = batch_from_response(&v).unwrap().unwrap();
        assert_eq!(b.id, "01E8043CY305K2MTV5ANH9G1GC");
        assert_eq!(b.status, BatchStatus::Success);
        assert!(b.status.is_terminal());
        assert_eq!(b.external_id.as_deref(), Some("..."));
        assert_eq!(b.dataset_id.as_deref(), Some("5deac2648a19d218a888d2b1"));
        assert_eq!(b.created, Some(1576741597205));
        assert_eq!(b.started, Some(1576741718543));
        assert_eq!(b.completed, Some(1576741722026));
        assert_eq!(b.updated, Some(1576741722644));
        assert_eq!(
            b.metrics,
            BatchMetrics {
                input_file_count: Some(4),
                input_byte_size: Some(568),
                input_record_count: Some(519),
                output_record_count: Some(514),
                failed_record_count: Some(5),
                ..BatchMetrics::default()
            }
        );
        assert_eq!(
            b.errors,
            vec![BatchError {
                code: "INGEST-1212-400".into(),
                description: "Encountered 5 errors ...".into(),
                record_count: Some(5),
            }]
        );
        assert_eq!(b.replay.unwrap().reason, "replace");
        assert_eq!(b.tags["acp_successor"], vec!["...".to_string()]);
        assert_eq!(b.raw["inputFormat"]["format"], "json");
    }

    #[test]
    fn bare_created_batch_parses() {
        let v: Value = serde_json::from_str(CREATED_BATCH).unwrap();
        let b = batch_from_response(&v).unwrap().unwrap();
        assert_eq!(b.id, "{BATCH_ID}");
        assert_eq!(b.status, BatchStatus::Loading);
        assert_eq!(b.dataset_id.as_deref(), Some("{DATASET_ID}"));
        assert_eq!(b.created, Some(0));
        assert_eq!(
            b.replay.unwrap().predecessors,
            vec!["batchIdA".to_string(), "batchIdB".to_string()]
        );
        assert!(b.tags.is_empty());
        assert!(b.errors.is_empty());
    }

    #[test]
    fn catalog_listing_and_tolerated_variants() {
        let v = json!({
            "B1": {"status": "ACTIVE", "created": "1700000000000",
                    "replay": {"predecessors": ["$B0"], "reason": "replace"},
                    "errors": [{"code": 106, "description": "Dataset file is empty"}],
                    "metrics": {"failedRecordCount": "3", "inputByteSize": 10.0}},
            "B2": {"id": "B2", "status": "failure", "datasetId": "D9"},
            "_page": 3
        });
        let list = batches_from_map(&v).unwrap();
        assert_eq!(list.len(), 2);
        let b1 = &list[0];
        assert_eq!(b1.id, "B1", "the map key stands in for a missing id");
        assert_eq!(b1.status, BatchStatus::Success);
        assert_eq!(b1.created, Some(1_700_000_000_000));
        assert_eq!(b1.replay.as_ref().unwrap().predecessors, vec!["B0"]);
        assert_eq!(b1.errors[0].code, "106");
        assert_eq!(b1.metrics.failed_record_count, Some(3));
        assert_eq!(b1.metrics.input_byte_size, Some(10));
        assert_eq!(list[1].status, BatchStatus::Failed);
        assert_eq!(list[1].dataset_id.as_deref(), Some("D9"));

        assert_eq!(batches_from_map(&json!({})).unwrap(), vec![]);
        assert_eq!(batch_from_response(&json!({})).unwrap(), None);
        assert!(batch_from_response(&json!([1])).is_err());
        assert!(batch_from_response(&json!({"X": {"id": "X"}})).is_err());
    }

    #[test]
    fn create_batch_body_matches_the_reference() {
        let mut req = CreateBatch::new("5deac2648a19d218a888d2b1", Format::Json);
        req.replay = Some(Replay {
            predecessors: vec!["01EQ1C48TR4GD4FE7NH2522TCQ".into(), "$ALREADY".into()],
            reason: "replace".into(),
        });
        req.external_id = Some("optional client id".into());
        req.tags.insert("key".into(), vec!["value".into()]);
        req.enable_error_diagnostics = true;
        req.partial_ingestion_percent = Some(5);
        let body = serde_json::to_value(CreateBatchBody::new(&req)).unwrap();
        assert_eq!(
            body,
            json!({ "datasetId": "5deac2648a19d218a888d2b1",
                "inputFormat": { "format": "json", "isMultiLineJson": false },
                "replay": { "predecessors": ["$01EQ1C48TR4GD4FE7NH2522TCQ", "$ALREADY"],
                            "reason": "replace" },
                "externalId": "optional client id", "tags": { "key": ["value"] },
                "enableErrorDiagnostics": true, "partialIngestionPercentage": 5 })
        );

        let minimal = CreateBatch::new("D", Format::Parquet);
        assert_eq!(
            serde_json::to_value(CreateBatchBody::new(&minimal)).unwrap(),
            json!({"datasetId": "D", "inputFormat": {"format": "parquet"},
                   "enableErrorDiagnostics": false})
        );
    }

    #[test]
    fn dataset_answers() {
        assert_eq!(
            dataset_id_from_create(&json!(["@/dataSets/5deac2648a19d218a888d2b1"])).unwrap(),
            "5deac2648a19d218a888d2b1"
        );
        assert!(dataset_id_from_create(&json!([])).is_err());
        assert!(dataset_id_from_create(&json!(["@/dataSets/"])).is_err());

        let v = json!({"5deac2648a19d218a888d2b1": {
            "name": "orders", "schemaRef": {"id": "https://ns.adobe.com/x/schemas/1",
            "contentType": "application/vnd.adobe.xed-full+json;version=1"},
            "tags": {"unifiedProfile": ["enabled:true", "isUpsert:true"]}}});
        let d = dataset_from_response(&v).unwrap().unwrap();
        assert_eq!(d.id, "5deac2648a19d218a888d2b1");
        assert_eq!(d.name.as_deref(), Some("orders"));
        assert_eq!(d.schema_ref.unwrap().id, "https://ns.adobe.com/x/schemas/1");
        assert_eq!(d.tags["unifiedProfile"].len(), 2);
        assert_eq!(dataset_from_response(&json!({})).unwrap(), None);
    }

    #[test]
    fn data_access_files() {
        let v = json!({"data": [{"dataSetFileId": "F1", "dataSetId": "D1", "records": 519,
            "size": "568", "_links": {"self": {"href": "https://x/export/files/F1"}}}]});
        assert_eq!(
            dataset_files(&v).unwrap(),
            vec![DataSetFile {
                id: "F1".into(),
                dataset_id: Some("D1".into()),
                name: None,
                records: Some(519),
                size: Some(568),
            }]
        );
        assert!(dataset_files(&json!({"data": [{"size": 1}]})).is_err());
        assert!(dataset_files(&json!([])).is_err());
    }

    #[test]
    fn token_answers() {
        let t = token_answer(
            &json!({"access_token": "eyJ", "token_type": "bearer", "expires_in": 86399}),
        )
        .unwrap();
        assert_eq!(t.expires_in.as_secs(), 86399);
        let ms = token_answer(&json!({"access_token": "eyJ", "expires_in": "86399000"})).unwrap();
        assert_eq!(ms.expires_in.as_secs(), 86399);
        assert!(token_answer(&json!({"access_token": "", "expires_in": 5})).is_err());
        assert!(token_answer(&json!({"access_token": "x"})).is_err());
    }
}
