//! The Schema Registry: the one lookup of a dataset's schema, fully resolved
//! (`Accept: application/vnd.adobe.xed-full+json; version=1`), so that records can be checked
//! before they are uploaded. It owns that request and reading its answer; keeping the schema
//! (the cache in the state dir) and checking records are the caller's.

use reqwest::Method;
use reqwest::header::ACCEPT;
use serde_json::Value;

use super::answer::{Answer, read_json};
use super::client::{ApiClient, Service};
use super::error::{ApiError, ErrorKind};
use super::paths::segment;
use super::types::RegistrySchema;

/// The media type of the fully resolved JSON Schema (every `$ref` and `allOf` inlined).
pub const XED_FULL: &str = "application/vnd.adobe.xed-full+json; version=1";

impl ApiClient {
    /// `GET {schemaregistry}/tenant/schemas/{$id, URL-encoded}` with [`XED_FULL`]; `None` when
    /// the registry does not know the schema (in this sandbox).
    pub async fn get_schema(&self, schema_id: &str) -> Result<Option<RegistrySchema>, ApiError> {
        let op = format!("GET schema {schema_id} from the Schema Registry");
        let url = self.url(
            Service::SchemaRegistry,
            &format!("tenant/schemas/{}", segment(schema_id)),
            &[],
        );
        let builder = self.request(Method::GET, url).header(ACCEPT, XED_FULL);
        let resp = match self.execute(&op, builder).await {
            Ok(resp) => resp,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let document = read_json(&op, resp, Answer::Platform).await?;
        schema_from_response(schema_id, document)
            .map(Some)
            .map_err(|msg| ApiError::invalid_response(op, msg))
    }
}

/// The registry's answer: a JSON object (the schema itself) with its `$id` and `version`.
fn schema_from_response(asked: &str, document: Value) -> Result<RegistrySchema, String> {
    let Some(obj) = document.as_object() else {
        return Err("expected the schema as a JSON object".to_owned());
    };
    let id = obj
        .get("$id")
        .and_then(Value::as_str)
        .unwrap_or(asked)
        .to_owned();
    let version = obj
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(RegistrySchema {
        id,
        version,
        document,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_gives_its_id_and_version_and_refuses_a_non_object() {
        let s = schema_from_response(
            "x",
            serde_json::json!({"$id": "https://ns.adobe.com/t/schemas/a", "version": "1.2"}),
        )
        .unwrap();
        assert_eq!(
            (s.id.as_str(), s.version.as_str()),
            ("https://ns.adobe.com/t/schemas/a", "1.2")
        );
        let s = schema_from_response("asked", serde_json::json!({})).unwrap();
        assert_eq!((s.id.as_str(), s.version.as_str()), ("asked", ""));
        assert!(schema_from_response("x", serde_json::json!([1])).is_err());
    }
}
