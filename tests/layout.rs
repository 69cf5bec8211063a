//! The one test binary's layout: with `autotests = false`, a file of `tests/` that
//! `tests/main.rs` does not declare is never compiled, and its tests silently never run (a
//! branch that adds `tests/NEW.rs` merges without an error). This checks that every file is
//! declared; it must not check anything else.

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn every_file_of_tests_is_a_module_of_the_one_test_binary() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(tests.join("main.rs")).unwrap();
    let declared: BTreeSet<String> = main
        .lines()
        .filter_map(|line| line.trim().strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_owned)
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(&tests)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "main")
        .collect();
    let missing: Vec<&String> = files.difference(&declared).collect();
    assert!(
        missing.is_empty(),
        "tests/{{{}}}.rs: not declared in tests/main.rs, so never compiled; add `mod NAME;` there",
        missing
            .iter()
            .map(|name| name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(
        declared.contains("support"),
        "tests/main.rs declares support"
    );
}
