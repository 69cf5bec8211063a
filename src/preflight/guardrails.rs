//! The platform's record-size guardrails, checked locally: a Profile-enabled dataset takes
//! records of about 100 KB at most, 10 KB for an ExperienceEvent (platform-behaviour.md, "Guardrails
//! that shape batching"). Which one applies comes from the dataset's tags and its schema's
//! class. The size of a record is its bytes as read: the JSON Lines line, the element of a
//! multi-line JSON file as compact JSON, the CSV row's fields and separators.
//!
//! It decides the limit and words the problem; reading records is `validate`'s. It must not
//! read files or talk to the platform.

use serde_json::Value;

use crate::api::{Dataset, RegistrySchema};

/// The code of a record over the guardrail. The platform's reference names none (it drops
/// such records from Profile), so it is batchdrop's own, in the platform's style.
pub const RECORD_TOO_LARGE: &str = "BATCHDROP-RECORD-SIZE-400";

/// The XDM class of time-series records.
const EXPERIENCE_EVENT: &str = "https://ns.adobe.com/xdm/context/experienceevent";

/// What kind of Profile record a dataset holds, by its schema's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Profile (and any other record class): 100 KB.
    Profile,
    /// ExperienceEvent: 10 KB.
    ExperienceEvent,
}

impl RecordKind {
    /// The largest record the platform takes, in bytes (KB read as 1024: the lenient reading).
    pub fn max_bytes(self) -> usize {
        match self {
            RecordKind::Profile => 100 * 1024,
            RecordKind::ExperienceEvent => 10 * 1024,
        }
    }

    fn words(self) -> &'static str {
        match self {
            RecordKind::Profile => "100 KB for a Profile record",
            RecordKind::ExperienceEvent => "10 KB for an ExperienceEvent",
        }
    }

    /// The problem of a record of `bytes` bytes, over the limit.
    pub fn message(self, bytes: usize) -> String {
        format!(
            "the record is {bytes} bytes, over the {} bytes the platform takes ({}); split it or leave fields out",
            self.max_bytes(),
            self.words()
        )
    }
}

/// The record-size limit of a dataset: `None` unless it is Profile-enabled (the limits are the
/// Profile store's).
pub fn record_kind(schema: &RegistrySchema, dataset: &Dataset) -> Option<RecordKind> {
    if !dataset.is_profile_enabled() {
        return None;
    }
    let doc = &schema.document;
    let names_event = |v: &Value| v.as_str() == Some(EXPERIENCE_EVENT);
    let event = doc.get("meta:class").is_some_and(names_event)
        || doc
            .get("meta:extends")
            .and_then(Value::as_array)
            .is_some_and(|all| all.iter().any(names_event));
    Some(if event {
        RecordKind::ExperienceEvent
    } else {
        RecordKind::Profile
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(tags: &[&str]) -> Dataset {
        Dataset {
            id: "d".into(),
            name: None,
            schema_ref: None,
            tags: [(
                "unifiedProfile".to_owned(),
                tags.iter().map(|t| (*t).to_owned()).collect(),
            )]
            .into(),
            raw: Value::Null,
        }
    }

    fn schema(document: Value) -> RegistrySchema {
        RegistrySchema {
            id: "https://ns.adobe.com/t/schemas/s".into(),
            version: "1.0".into(),
            document,
        }
    }

    #[test]
    fn the_limit_follows_the_profile_tag_and_the_schemas_class() {
        let event = schema(serde_json::json!({"meta:class": EXPERIENCE_EVENT}));
        let extends = schema(serde_json::json!({"meta:extends": ["x", EXPERIENCE_EVENT]}));
        let profile =
            schema(serde_json::json!({"meta:class": "https://ns.adobe.com/xdm/context/profile"}));
        let on = dataset(&["enabled:true"]);
        assert_eq!(record_kind(&event, &on), Some(RecordKind::ExperienceEvent));
        assert_eq!(
            record_kind(&extends, &on),
            Some(RecordKind::ExperienceEvent)
        );
        assert_eq!(record_kind(&profile, &on), Some(RecordKind::Profile));
        assert_eq!(record_kind(&event, &dataset(&[])), None);
        assert!(
            RecordKind::ExperienceEvent
                .message(20_000)
                .contains("20000 bytes")
        );
    }
}
