//! The registered schemas (the emulator's Schema Registry): by id, and by name for the config's
//! datasets; registered from the data dir and the config at start, and by the emulator's owner
//! while it runs. Compiling and checking are `batchdrop_xdm`'s; this module only keeps them.

use std::sync::{Arc, RwLock};

use batchdrop_xdm::Schema;

use crate::config::EmulatorConfig;
use crate::error::EmulatorError;
use crate::store::Store;

/// The registered schemas.
#[derive(Debug, Default)]
pub struct Registry {
    schemas: RwLock<Vec<Arc<Schema>>>,
}

impl Registry {
    /// Adds a schema, replacing one with the same id; logs what of it is not checked.
    pub fn insert(&self, schema: Schema) -> Arc<Schema> {
        for warning in &schema.warnings {
            tracing::warn!(schema = %schema.id, "{warning}");
        }
        let schema = Arc::new(schema);
        let mut all = self.schemas.write().expect("schema registry");
        all.retain(|s| s.id != schema.id);
        all.push(schema.clone());
        schema
    }

    /// The schema with this id, else the one with this name.
    pub fn get(&self, key: &str) -> Option<Arc<Schema>> {
        let all = self.schemas.read().expect("schema registry");
        all.iter()
            .find(|s| s.id == key)
            .or_else(|| all.iter().find(|s| s.name == key))
            .cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.schemas.read().expect("schema registry").is_empty()
    }

    /// The ids, for messages.
    pub fn ids(&self) -> Vec<String> {
        self.schemas
            .read()
            .expect("schema registry")
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }
}

/// A dataset's `schemaRef` naming a registered schema.
pub fn schema_ref_json(id: &str) -> String {
    serde_json::json!({"id": id, "contentType": "application/vnd.adobe.xed-full+json;version=1"})
        .to_string()
}

/// Registers the schemas kept in the data dir, then those of the config (which win and are
/// kept in turn).
pub async fn setup_schemas(
    store: &Store,
    registry: &Registry,
    config: &EmulatorConfig,
) -> Result<(), EmulatorError> {
    for (id, name, body, identity) in store.saved_schemas().await? {
        let compiled = serde_json::from_str(&body)
            .map_err(|e| e.to_string())
            .and_then(|v| Schema::compile(&v, Some(&id), Some(&name), identity.as_deref()));
        match compiled {
            Ok(s) => {
                registry.insert(s);
            }
            Err(e) => {
                tracing::warn!(schema = %id, error = %e, "stored schema no longer compiles; register it again")
            }
        }
    }
    for (i, seed) in config.schemas.iter().enumerate() {
        let path = match &config.base_dir {
            Some(base) if seed.file.is_relative() => base.join(&seed.file),
            _ => seed.file.clone(),
        };
        let bad = |what: String| {
            EmulatorError::Config(format!("schemas[{i}] (file {}): {what}", path.display()))
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("cannot be read: {e}; check the path (relative paths start at the config file's directory)")))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("is not JSON: {e}")))?;
        let compiled = Schema::compile(
            &json,
            Some(&seed.id),
            Some(&seed.name),
            Some(&seed.identity_field),
        )
        .map_err(bad)?;
        store
            .save_schema(
                &compiled.id,
                &compiled.name,
                &json.to_string(),
                compiled.identity_field.as_deref(),
            )
            .await?;
        tracing::info!(schema = %compiled.id, name = %compiled.name, "schema registered");
        registry.insert(compiled);
    }
    Ok(())
}
