//! How fast records are checked, both ways, over one JSON Lines file: held (parsed into a
//! `serde_json::Value`, then `Schema::check`) and the quick verdict (`Schema::passes_json`,
//! checked while parsed). For profiling the check (bench/RESULTS.md, issue #20).
//!
//! `cargo run --release -p batchdrop-xdm --example throughput -- SCHEMA.json FILE.jsonl [held|quick]`

use std::time::Instant;

use batchdrop_xdm::{CheckMode, Schema, Source};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, schema, file, rest @ ..] = args.as_slice() else {
        eprintln!("usage: throughput SCHEMA.json FILE.jsonl [held|quick]");
        std::process::exit(2);
    };
    let document: serde_json::Value = serde_json::from_slice(
        &std::fs::read(schema).unwrap_or_else(|e| panic!("cannot read {schema}: {e}")),
    )
    .unwrap_or_else(|e| panic!("{schema} is not JSON: {e}"));
    let schema = Schema::compile(&document, Some(schema.as_str()), None, None)
        .unwrap_or_else(|e| panic!("the schema does not compile: {e}"));
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
    let mode = CheckMode {
        source: Source::Json,
        skip_required: false,
        patterns: false,
    };
    let ways: Vec<&str> = match rest.first().map(String::as_str) {
        Some(way) => vec![way],
        None => vec!["held", "quick"],
    };
    for way in ways {
        let started = Instant::now();
        let (mut records, mut bad) = (0u64, 0u64);
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            records += 1;
            let passes = match way {
                "held" => match serde_json::from_slice::<serde_json::Value>(line) {
                    Ok(serde_json::Value::Object(record)) => {
                        let mut issues = Vec::new();
                        schema.check(&record, mode, &mut issues);
                        issues.is_empty()
                    }
                    _ => false,
                },
                _ => schema.passes_json(line, mode),
            };
            bad += u64::from(!passes);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{way}: {records} records ({bad} not passing), {:.0} MB/s, {:.0} ns/record",
            data.len() as f64 / secs / 1e6,
            secs * 1e9 / records.max(1) as f64
        );
    }
}
