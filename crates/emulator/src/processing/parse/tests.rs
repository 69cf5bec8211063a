//! The parse step's tests: whole reads and reads in parts give the same results.

use super::*;
use crate::formats::{InputFormat, RowIssue};
use batchdrop_xdm::{IssueCode, Schema};
use serde_json::json;

fn failure(pointer: &str) -> RowFailure {
    RowFailure {
        row: Some(1),
        issues: vec![RowIssue {
            code: IssueCode::Type.into(),
            message: format!("{pointer}: bad"),
            pointer: Some(pointer.to_owned()),
        }],
        raw: None,
    }
}

#[test]
fn failures_group_per_field_until_the_cap_then_per_code() {
    let mut stored = MAX_STORED_FAILED_ROWS - 2;
    let mut tally = Tally {
        groups: Vec::new(),
        failures: Vec::new(),
        stored: &mut stored,
    };
    tally.add(failure("/a"));
    tally.add(failure("/a"));
    assert_eq!(tally.groups.len(), 1);
    assert_eq!(tally.groups[0].count, 2);
    assert_eq!(tally.groups[0].first, "/a: bad");
    for i in 0..MAX_GROUPS_PER_FILE + 3 {
        tally.add(failure(&format!("/f{i}")));
    }
    // One group per field up to the cap, then one for "other fields" of that code.
    assert_eq!(tally.groups.len(), MAX_GROUPS_PER_FILE + 1);
    let other = tally.groups.last().unwrap();
    assert_eq!((other.pointer.as_deref(), other.count), (None, 4));
    // Whole failures are kept up to the batch's allowance only.
    assert_eq!(tally.failures.len(), 2);
    assert_eq!(stored, MAX_STORED_FAILED_ROWS);
}

/// A JSON Lines plan: with a schema of 60 integer fields or none, keeping good rows or not.
fn lines_plan(schema: bool, keep_good: bool) -> Plan {
    let fields: serde_json::Map<String, serde_json::Value> = (0..60)
        .map(|i| (format!("f{i}"), json!({"type": "integer"})))
        .collect();
    let schema = schema.then(|| {
        let json = json!({"type": "object", "properties": fields});
        Arc::new(Schema::compile(&json, Some("t"), None, None).unwrap())
    });
    Plan {
        fmt: InputFormat::from_json(&json!({"format": "json"})),
        diagnostics: true,
        partial_pct: keep_good.then_some(50.0),
        schema,
        upsert: None,
        refusals: Vec::new(),
    }
}

/// `lines` lines of JSON Lines after a byte order mark, with bad rows of every kind spread
/// all over (a wrong field among 60, unparsable, not an object), blank and CRLF lines, and
/// a last line without a newline.
fn messy_lines(lines: usize) -> Vec<u8> {
    let mut out = b"\xEF\xBB\xBF".to_vec();
    for i in 0..lines {
        let line = match i % 11 {
            0 => format!("{{\"f{}\": \"not a number\"}}\n", (i * 7) % 60),
            3 => "{not json\n".to_owned(),
            5 => "[1, 2]\n".to_owned(),
            6 => "\n".to_owned(),
            7 => format!("{{\"f1\": {i}}}\r\n"),
            _ => format!("{{\"f0\": {i}, \"f2\": 2}}\n"),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"{\"f3\": \"last, no newline\"}");
    out
}

/// What reading a batch gave: its results, each file's good-rows copy, and the files left
/// in its folder.
struct Read {
    results: Vec<FileResult>,
    copies: Vec<Option<Vec<u8>>>,
    left: Vec<String>,
}

/// Reads `files` as one batch planned as `plan`, each read in at most `threads` parts of
/// at least a byte (one: read whole).
fn read_batch(files: &[Vec<u8>], plan: &Plan, threads: usize) -> Read {
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<Input> = files
        .iter()
        .enumerate()
        .map(|(k, content)| {
            let disk = dir.path().join(format!("f{k}"));
            std::fs::write(&disk, content).unwrap();
            Input {
                file_id: format!("f{k}"),
                path: format!("in/file {k}.json"),
                disk,
                good: dir.path().join(format!("f{k}.good")),
            }
        })
        .collect();
    let split = Split {
        threads,
        min_part_bytes: 1,
    };
    for input in &inputs {
        let parts = parts_of(input, plan, split).len().max(1);
        assert_eq!(parts, threads, "{} is read in {threads} parts", input.path);
    }
    let (results, captured) = parse_all(&inputs, plan, split, &AtomicBool::new(false)).unwrap();
    assert!(captured.is_none());
    let copies = results
        .iter()
        .map(|r| {
            r.good.as_ref().map(|(path, size)| {
                let bytes = std::fs::read(path).unwrap();
                assert_eq!(*size.as_ref().unwrap(), bytes.len() as u64);
                bytes
            })
        })
        .collect();
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    Read {
        results,
        copies,
        left,
    }
}

fn assert_same(parts: &Read, whole: &Read, what: &str) {
    assert_eq!(parts.results.len(), whole.results.len());
    for (p, w) in parts.results.iter().zip(&whole.results) {
        let counts = |r: &FileResult| (r.size, r.records, r.ok, r.failed, r.file_error.clone());
        assert_eq!(counts(p), counts(w), "{what}: counts of {}", w.path);
        assert_eq!(p.groups, w.groups, "{what}: groups of {}", w.path);
        assert_eq!(
            format!("{:?}", p.failures),
            format!("{:?}", w.failures),
            "{what}: failures of {}",
            w.path
        );
    }
    assert!(parts.copies == whole.copies, "{what}: good-rows copies");
    assert_eq!(parts.left, whole.left, "{what}: files left");
}

#[test]
fn files_read_in_parts_give_what_they_give_read_whole() {
    // Two files: the first takes part of the batch's allowance of stored failures, the
    // second reaches it, and the 60 fields reach the cap of groups per file.
    let files = vec![messy_lines(900), messy_lines(3000)];
    for (schema, keep_good) in [(true, true), (false, false), (false, true), (true, false)] {
        let plan = lines_plan(schema, keep_good);
        let whole = read_batch(&files, &plan, 1);
        let first = &whole.results[1].failures[0];
        let failures = |r: &Read| r.results.iter().map(|r| r.failures.len()).sum::<usize>();
        let failed: u64 = whole.results.iter().map(|r| r.failed).sum();
        assert_eq!(
            failures(&whole),
            MAX_STORED_FAILED_ROWS.min(failed as usize)
        );
        assert!(!schema || failed as usize > MAX_STORED_FAILED_ROWS);
        let blank = (0..3000).filter(|i| i % 11 == 6).count() as u64;
        assert_eq!(whole.results[1].records, 3000 - blank + 1);
        if schema {
            // Row 1 is the second file's first (after the byte order mark).
            assert_eq!(first.row, Some(1));
            assert!(
                first.issues[0]
                    .message
                    .starts_with("file 'in/file 1.json' row 1: ")
            );
            assert!(whole.results[1].groups.len() > MAX_GROUPS_PER_FILE);
        }
        assert_eq!(
            whole.copies.iter().flatten().count(),
            usize::from(keep_good) * 2
        );
        for threads in [2, 3, 4, 7] {
            let parts = read_batch(&files, &plan, threads);
            let what = format!("schema {schema}, good rows {keep_good}, {threads} parts");
            assert_same(&parts, &whole, &what);
        }
    }
}

#[test]
fn a_file_cut_after_any_of_its_lines_gives_what_it_gives_read_whole() {
    let content = messy_lines(60);
    let dir = tempfile::tempdir().unwrap();
    let input = Input {
        file_id: "f".into(),
        path: "f.json".into(),
        disk: dir.path().join("f"),
        good: dir.path().join("f.good"),
    };
    std::fs::write(&input.disk, &content).unwrap();
    let plan = lines_plan(true, true);
    let cancel = AtomicBool::new(false);
    let summary = |r: &FileResult| {
        let copy = r.good.as_ref().map(|(p, _)| std::fs::read(p).unwrap());
        let failures = format!("{:?}", r.failures);
        (r.records, r.ok, r.failed, failures, copy)
    };
    let mut stored = 0;
    let whole = parse_file(&input, &plan, None, &mut stored, &cancel).unwrap();
    let whole = (summary(&whole), whole.groups, stored);
    assert_eq!(whole.0.2, 6 * 3);
    let size = content.len() as u64;
    let cuts = memchr::memchr_iter(b'\n', &content).map(|i| i as u64 + 1);
    for cut in cuts.filter(|&c| c < size) {
        let mut stored = 0;
        let parts = [0..cut, cut..size];
        let read = parse_in_parts(&input, &plan, &parts, &mut stored, &cancel).unwrap();
        let read = (summary(&read), read.groups, stored);
        assert!(read == whole, "cut at byte {cut}: {read:?} != {whole:?}");
    }
}

#[test]
fn small_files_stay_on_one_thread_and_big_ones_use_the_threads_there_are() {
    let split = Split {
        threads: 2,
        min_part_bytes: MIN_PART_BYTES,
    };
    assert_eq!(split.parts(0), 1);
    assert_eq!(split.parts(2 * MIN_PART_BYTES - 1), 1);
    assert_eq!(split.parts(2 * MIN_PART_BYTES), 2);
    assert_eq!(split.parts(100 * MIN_PART_BYTES), 2);
    // CSV and multi-line JSON are read whole whatever their size.
    let dir = tempfile::tempdir().unwrap();
    let input = Input {
        file_id: "f".into(),
        path: "f".into(),
        disk: dir.path().join("f"),
        good: dir.path().join("f.good"),
    };
    std::fs::write(&input.disk, "a\nb\nc\nd\n").unwrap();
    let split = Split {
        threads: 4,
        min_part_bytes: 1,
    };
    let mut plan = lines_plan(false, false);
    assert_eq!(parts_of(&input, &plan, split).len(), 4);
    plan.fmt = InputFormat::from_json(&json!({"format": "csv"}));
    assert!(parts_of(&input, &plan, split).is_empty());
    plan.fmt = InputFormat::from_json(&json!({"format": "json", "isMultiLineJson": true}));
    assert!(parts_of(&input, &plan, split).is_empty());
}

#[test]
fn a_part_with_too_many_distinct_failing_fields_is_read_again_whole() {
    // Each row has a field of its own that the schema does not allow: as many groups.
    let json = json!({"type": "object", "additionalProperties": false,
        "properties": {"id": {"type": "integer"}}});
    let mut plan = lines_plan(false, true);
    plan.schema = Some(Arc::new(
        Schema::compile(&json, Some("t"), None, None).unwrap(),
    ));
    let rows = 2 * MAX_GROUPS_PER_PART + 100;
    let content: String = (0..rows).map(|i| format!("{{\"x{i}\": 1}}\n")).collect();
    let files = vec![content.into_bytes()];
    let whole = read_batch(&files, &plan, 1);
    assert_eq!(whole.results[0].failed, rows as u64);
    assert_eq!(whole.results[0].groups.len(), MAX_GROUPS_PER_FILE + 1);
    assert_same(&read_batch(&files, &plan, 2), &whole, "2 parts");
}
