//! The emulator's walkthrough (docs/emulator.md, "Walkthrough: the platform guide's calls,
//! against the emulator") runs as written, with curl and jq, against a running emulator.

use std::process::Command;

use batchdrop_emulator::EmulatorConfig;
use serde_json::Value;

use crate::common::*;

fn shell_blocks(markdown: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in markdown.lines() {
        if inside {
            if line.starts_with("```") {
                inside = false;
                out.push('\n');
            } else {
                out.push_str(line);
                out.push('\n');
            }
        } else if line.trim_end() == "```sh" {
            inside = true;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_curl_walkthrough_works_as_written() {
    for tool in ["curl", "jq", "bash"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "the emulator walkthrough needs {tool} on PATH");
    }
    let env = start(EmulatorConfig {
        processing_delay_ms: 20,
        // Long enough for the script to see `inactive` on a loaded machine, short enough for
        // its `sleep 2` to see `deleted`.
        revert_gc_delay_ms: 1000,
        ..EmulatorConfig::default()
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("CRM_profiles.json"),
        work.path().join("CRM_profiles.json"),
    )
    .unwrap();
    std::fs::copy(
        fixture("CRM_profiles.csv"),
        work.path().join("CRM_profiles.csv"),
    )
    .unwrap();
    std::fs::write(work.path().join("profiles.parquet"), parquet_bytes(100)).unwrap();
    let big = parquet_bytes(100_000);
    assert!(big.len() > 3 * 262_144, "several chunks");
    std::fs::write(work.path().join("big.parquet"), &big).unwrap();

    let page = std::fs::read_to_string(workspace().join("docs/emulator.md")).unwrap();
    // The walkthrough's section: from its heading to the next one of the same level.
    let start = page
        .find("\n## Walkthrough: the platform guide's calls")
        .expect("docs/emulator.md has the walkthrough section");
    let end = page[start + 4..]
        .find("\n## ")
        .map_or(page.len(), |i| start + 4 + i);
    let md = page[start..end].to_owned();
    assert!(md.contains("batchdrop emulator --listen 127.0.0.1:8089 --data-dir ./var/platform"));
    let script = shell_blocks(&md);
    assert!(script.contains("action=REVERT") && script.contains("replay"));
    // Only the address and the wait for garbage collection change.
    let script = format!(
        "set -euo pipefail\n{}",
        script
            .replace("http://127.0.0.1:8089", &env.base)
            .replace("sleep 6", "sleep 2")
    );
    let cwd = work.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(cwd)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "script failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for expected in [
        "\"inputRecordCount\": 16",
        "{\"name\":\"big.parquet\",\"sizeInBytes\":262144}",
        &format!("range: bytes=0-{}", big.len() - 1),
        "downloaded file is identical",
        "\"records\": \"259\"",
        "{\"status\":\"success\",\"failed\":1,",
        "[\"parsing_errors_0.json\"]",
        "{\"_corrupt_record\":\"{oops\",\"code\":",
        "ABORT is only allowed while a batch is loading or processing",
        "\"acp_successor\":[",
        "\"duplicate_acknowledged_chunks\":0",
        // The IMS token opened the gateway.
        "\nCRM profiles\n",
        "\"ims_tokens_issued\":1",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    let statuses: Vec<&str> = stdout
        .lines()
        .filter(|l| ["success", "failed", "aborted", "inactive", "deleted"].contains(l))
        .collect();
    assert_eq!(
        statuses,
        vec![
            "success", "success", "success", "success", "success", "aborted", "inactive",
            "deleted", "success"
        ],
        "{stdout}"
    );

    // What the emulator holds afterwards.
    // Asked as the walkthrough's caller: batches are seen only from their organisation and
    // sandbox.
    let all: Value = env
        .client
        .get(format!(
            "{}{CATALOG}/batches?limit=100&orderBy=asc:created",
            env.base
        ))
        .header("Authorization", "Bearer demo-token")
        .header("x-api-key", "demo-key")
        .header("x-gw-ims-org-id", "DEMO@AdobeOrg")
        .header("x-sandbox-name", "prod")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut batches: Vec<&Value> = all.as_object().unwrap().values().collect();
    batches.sort_by_key(|b| b["created"].as_i64());
    let got: Vec<(&str, &str)> = batches
        .iter()
        .map(|b| {
            (
                b["inputFormat"]["format"].as_str().unwrap(),
                b["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), 7, "{got:?}");
    assert_eq!(got[0], ("json", "deleted"));
    assert_eq!(got[1], ("parquet", "success"));
    assert_eq!(got[2], ("parquet", "success"));
    assert!(
        got[3] == ("csv", "inactive") || got[3] == ("csv", "deleted"),
        "{got:?}"
    );
    assert_eq!(got[4], ("json", "success"), "the partial-ingestion batch");
    assert_eq!(got[5], ("json", "aborted"));
    assert_eq!(got[6], ("csv", "success"));
    assert_eq!(batches[2]["metrics"]["inputRecordCount"], 100_000);
    assert_eq!(batches[2]["metrics"]["inputByteSize"], big.len());
    let st = env.stats();
    assert_eq!(st.chunks_received as usize, big.len().div_ceil(262_144));
    assert_eq!(st.duplicate_acknowledged_chunks, 0);
    assert_eq!(st.ims_tokens_issued, 1);
}
