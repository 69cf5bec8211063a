//! What operators expect of a daemon (issue #21), with the real binary: environment variables
//! in the config, per-watch include/exclude patterns, global flags, log formats, shell
//! completions, man pages, `--version`, `healthcheck`, metric help and build info.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn batchdrop() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchdrop"));
    cmd.stdin(Stdio::null()).env_remove("BATCHDROP_CONFIG");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` to its end (at most `secs`), killing it if it takes longer.
fn run_for(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("batchdrop did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_files_are_never_touched_and_get_no_receipt() {
    let env = Env::new().await;
    let config = env.write_config(
        "",
        "include = [\"*.json\", \"orders/**\"]\nexclude = [\"**/draft-*\", \"*.keep.json\"]",
    );
    let drop = env.drop_dir();
    let taken = ["a.json", "sub/b.json", "orders/2026/c.csv"];
    let left = [
        "notes.csv",
        "draft-a.json",
        "sub/draft-b.json",
        "x.keep.json",
        "orders/draft-z.csv",
    ];
    for (i, name) in taken.into_iter().enumerate() {
        let body = if name.ends_with(".csv") {
            "id,name\n1,a\n".to_owned()
        } else {
            jsonl(i * 10, 2)
        };
        write_atomic(&drop.join(name), body.as_bytes());
    }
    // Content that the platform would refuse: were one taken, it would fail with a receipt.
    for name in left {
        write_atomic(&drop.join(name), b"{not data");
    }
    let before: Vec<_> = left
        .iter()
        .map(|name| {
            let meta = std::fs::metadata(drop.join(name)).unwrap();
            (meta.ino(), meta.mtime_nsec(), meta.mode())
        })
        .collect();
    let out = run_for(
        batchdrop()
            .args(["run", "--once", "--config"])
            .arg(&config)
            .env("RUST_LOG", "batchdrop=info"),
        120,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let receipts = receipts(&drop);
    let mut named: Vec<String> = receipts
        .iter()
        .map(|r| r["file"].as_str().unwrap_or_default().to_owned())
        .collect();
    named.sort();
    assert_eq!(receipts.len(), taken.len(), "{receipts:#?}");
    for r in &receipts {
        assert_eq!(r["status"], "success", "{r}");
    }
    for (name, before) in left.iter().zip(before) {
        let path = drop.join(name);
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{name} was moved or deleted: {e}"));
        assert_eq!(
            (meta.ino(), meta.mtime_nsec(), meta.mode()),
            before,
            "{name} was changed"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"{not data");
        assert!(
            !named.iter().any(|n| n.ends_with(name)),
            "{name} has a receipt: {named:?}"
        );
    }
    let stderr = text(&out.stderr);
    for name in left {
        assert!(!stderr.contains(name), "{name} is in the log:\n{stderr}");
    }
}

#[test]
fn a_missing_environment_variable_is_a_config_error_naming_it_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n\n[[watch]]\npath = \"${DROP_ROOT:-drop}/in\"\ndataset = \"${BATCHDROP_TEST_DATASET}\"\n",
    )
    .unwrap();
    let out = run_for(
        batchdrop()
            .args(["check-config", "--config"])
            .arg(&config)
            .env_remove("BATCHDROP_TEST_DATASET"),
        60,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("BATCHDROP_TEST_DATASET") && stderr.contains("line 5"),
        "{stderr}"
    );
    // Set, it is the dataset; the default fills the folder.
    std::fs::create_dir_all(dir.path().join("drop/in")).unwrap();
    let out = run_for(
        batchdrop()
            .args(["check-config", "--config"])
            .arg(&config)
            .env("BATCHDROP_TEST_DATASET", "ds-from-env"),
        60,
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ds-from-env"), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&dir.path().join("drop/in").display().to_string()),
        "{stdout}"
    );
}

/// Writes a config with an embedded platform and one watch below `dir`.
fn embedded_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("config.toml");
    std::fs::create_dir_all(dir.join("drop")).unwrap();
    std::fs::write(
        &config,
        "state_dir = \"state\"\nadmin_listen = \"127.0.0.1:0\"\n[[watch]]\npath = \"drop\"\ndataset = \"demo\"\n",
    )
    .unwrap();
    config
}
