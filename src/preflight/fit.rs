//! Whether a dataset, as the Catalog describes it, fits a watch: the rules of the platform's
//! guardrails that a dataset's tags and a watch's format decide (upsert datasets take Parquet
//! only; CSV and multi-line JSON work but are advised against on Profile datasets).
//!
//! Pure: no HTTP, no files. The verdicts' wording is what an operator reads, so each says what
//! to change.

use super::{Check, Verdict};
use crate::api::Dataset;
use crate::config::{Format, Watch};

/// The checks of `dataset`'s tags against `watch`'s format.
pub fn fit(watch: &Watch, dataset: &Dataset) -> Vec<Check> {
    let subject = format!("watch {}: dataset {} tags", watch.name, dataset.id);
    let mut checks = Vec::new();
    if dataset.is_upsert() {
        if watch.format == Some(Format::Parquet) {
            checks.push(Check::new(
                &subject,
                Verdict::Pass,
                "upsert dataset, and the watch sends Parquet (the only format upsert takes)",
            ));
        } else {
            let sends = match watch.format {
                Some(f) => format!("format = \"{f}\""),
                None => "the format of each file's extension".to_owned(),
            };
            checks.push(Check::new(
                &subject,
                Verdict::Refuse,
                &format!(
                    "dataset {} is an upsert dataset (unifiedProfile isUpsert:true), which takes Parquet files only, \
                     but watch {} sends {sends}: set format = \"parquet\" on the watch and drop Parquet files, \
                     or point it at a dataset without upsert",
                    dataset.id, watch.name
                ),
            ));
        }
        return checks;
    }
    let profile = dataset.is_profile_enabled();
    let advice = match watch.format {
        Some(Format::Csv) => Some(
            "CSV is a legacy format: flat schemas only, and the platform does not validate its rows as it does \
             JSON and Parquet; prefer Parquet or single-line JSON",
        ),
        Some(Format::Json) if watch.multiline_json => Some(
            "multi-line JSON cannot be split by the platform and is ingested more slowly; prefer single-line JSON \
             (JSON Lines: set multiline_json = false and write one record per line)",
        ),
        _ => None,
    };
    match advice {
        Some(advice) => checks.push(Check::new(
            &subject,
            Verdict::Warn,
            &format!("{advice} (watch {}, dataset {})", watch.name, dataset.id),
        )),
        None => checks.push(Check::new(
            &subject,
            Verdict::Pass,
            if profile {
                "Profile-enabled dataset; the watch's format fits it"
            } else {
                "the watch's format fits the dataset"
            },
        )),
    }
    checks
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn dataset(tags: &[&str]) -> Dataset {
        let mut map = BTreeMap::new();
        if !tags.is_empty() {
            map.insert(
                "unifiedProfile".to_owned(),
                tags.iter().map(|t| (*t).to_owned()).collect(),
            );
        }
        Dataset {
            id: "ds1".into(),
            name: None,
            schema_ref: None,
            tags: map,
            raw: serde_json::Value::Null,
        }
    }

    fn watch(format: Option<Format>, multiline_json: bool) -> Watch {
        let text = "[platform]\nendpoint = \"embedded\"\n[[watch]]\npath = \"/tmp/in\"\ndataset = \"ds1\"\n";
        let mut w = crate::config::Config::parse(text, std::path::Path::new("/tmp/c.toml"))
            .unwrap()
            .watches
            .remove(0);
        w.format = format;
        w.multiline_json = multiline_json;
        w
    }

    fn verdicts(checks: &[Check]) -> Vec<Verdict> {
        checks.iter().map(|c| c.verdict).collect()
    }

    #[test]
    fn upsert_takes_parquet_only_and_the_refusal_says_what_to_change() {
        let upsert = dataset(&["enabled: true", "isUpsert: true"]);
        let parquet = fit(&watch(Some(Format::Parquet), false), &upsert);
        assert_eq!(verdicts(&parquet), [Verdict::Pass]);
        for format in [Some(Format::Json), Some(Format::Csv), None] {
            let checks = fit(&watch(format, false), &upsert);
            assert_eq!(verdicts(&checks), [Verdict::Refuse], "{format:?}");
            assert!(
                checks[0].message.contains("set format = \"parquet\""),
                "{}",
                checks[0].message
            );
        }
    }

    #[test]
    fn csv_and_multi_line_json_get_the_platforms_advice_and_run() {
        let plain = dataset(&["enabled:true"]);
        let csv = fit(&watch(Some(Format::Csv), false), &plain);
        assert_eq!(verdicts(&csv), [Verdict::Warn]);
        assert!(csv[0].message.contains("legacy"));
        let multi = fit(&watch(Some(Format::Json), true), &plain);
        assert_eq!(verdicts(&multi), [Verdict::Warn]);
        assert!(multi[0].message.contains("single-line JSON"));
        assert_eq!(
            verdicts(&fit(&watch(Some(Format::Json), false), &plain)),
            [Verdict::Pass]
        );
    }
}
