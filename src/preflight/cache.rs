//! The schemas fetched from the Schema Registry, kept in the state dir with their version
//! (`schemas/{sha256 of the $id}.json`), so that a restart while the registry is unreachable
//! still validates, and an operator can see which version the daemon checks against.
//!
//! This module owns that folder; it must not reach the platform.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::api::RegistrySchema;

const FOLDER: &str = "schemas";

fn path_of(state_dir: &Path, schema_id: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let name = format!("{:x}", Sha256::digest(schema_id.as_bytes()));
    state_dir.join(FOLDER).join(format!("{name}.json"))
}

/// Writes the schema, replacing an older copy (all or nothing: a temp file renamed).
pub fn save(state_dir: &Path, schema: &RegistrySchema) -> io::Result<PathBuf> {
    let path = path_of(state_dir, &schema.id);
    std::fs::create_dir_all(state_dir.join(FOLDER))?;
    let body = json!({
        "id": schema.id,
        "version": schema.version,
        "fetched": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "schema": schema.document,
    });
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&body).map_err(io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The copy kept of `schema_id`, if any (an unreadable copy is as good as none).
pub fn load(state_dir: &Path, schema_id: &str) -> Option<RegistrySchema> {
    let bytes = std::fs::read(path_of(state_dir, schema_id)).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some(RegistrySchema {
        id: v.get("id")?.as_str()?.to_owned(),
        version: v.get("version")?.as_str()?.to_owned(),
        document: v.get("schema")?.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_schema_is_loaded_back_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let id = "https://ns.adobe.com/tenant/schemas/p";
        assert!(load(dir.path(), id).is_none());
        let schema = RegistrySchema {
            id: id.into(),
            version: "1.3".into(),
            document: json!({"type": "object", "properties": {}}),
        };
        save(dir.path(), &schema).unwrap();
        assert_eq!(load(dir.path(), id), Some(schema));
        assert!(load(dir.path(), "https://ns.adobe.com/tenant/schemas/other").is_none());
    }
}
