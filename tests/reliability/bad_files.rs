//! Bad files of every kind: each gets a receipt saying what is wrong and where (the
//! catalogue is printed with `--nocapture`), and the good files around them flow on.

use super::*;

/// What a receipt says is wrong: its reason and its errors' descriptions.
fn what_is_wrong(r: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(reason) = r["reason"].as_str() {
        parts.push(reason.to_owned());
    }
    for e in r["errors"].as_array().into_iter().flatten() {
        parts.push(format!(
            "[{}] {}",
            e["code"].as_str().unwrap_or(""),
            e["description"].as_str().unwrap_or("")
        ));
    }
    for row in r["diagnostics"]["failed_rows_sample"]
        .as_array()
        .into_iter()
        .flatten()
    {
        parts.push(format!(
            "row [{}] {} in {}",
            row["code"].as_str().unwrap_or(""),
            row["message"].as_str().unwrap_or(""),
            row["record"].as_str().unwrap_or("")
        ));
    }
    if let Some(note) = r["note"].as_str() {
        parts.push(format!("(note: {note})"));
    }
    parts.join(" | ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_each_get_a_receipt_saying_what_and_where_and_the_rest_flows() {
    let _one_at_a_time = SERIAL.lock().await;
    let seed = seed("bad_files");
    let mut rng = StdRng::seed_from_u64(seed);
    // The dataset has a schema (every good file meets it), so that rows violating it are bad
    // files too.
    let schema_dir = tempfile::tempdir().unwrap();
    let schema_file = schema_dir.path().join("people.schema.json");
    std::fs::write(
        &schema_file,
        r#"{"$id": "https://ns.adobe.com/test/schemas/people", "title": "people", "type": "object",
            "properties": {"id": {"type": "integer", "minimum": 0}, "name": {"type": "string"}},
            "required": ["id"]}"#,
    )
    .unwrap();
    // A little latency on every request, so that a file can be changed while it is uploaded.
    let env = Env::with_emulator(EmulatorConfig {
        schemas: vec![batchdrop_emulator::SchemaSeed {
            file: schema_file,
            ..Default::default()
        }],
        datasets: vec![batchdrop_emulator::DatasetSeed {
            id: DATASET.into(),
            name: "test dataset".into(),
            schema: "people".into(),
            ..Default::default()
        }],
        processing_delay_ms: 300,
        faults: FaultConfig {
            seed,
            latency_probability: 1.0,
            latency_ms: 15,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let _keep = KeepOnPanic(env.dir.path().to_owned(), "bad_files");
    // The platform does not say which file of a failed batch held the bad rows: the bad
    // files are isolated by bisection, so that the good ones beside them flow.
    let config = env.write_config(
        "large_file_threshold = 8192\nchunk_size = 512",
        "on_batch_failure = \"isolate\"\nisolate_max_extra_batches = 200",
    );
    let drop = env.drop_dir();
    let mut good = Workload::new(drop.clone());
    let mut daemon = spawn_daemon(&config, &[]);
    let store = Store::open_shared(&env.state_dir()).await.unwrap();

    let bad: &[(&str, Vec<u8>)] = &[
        (
            "malformed.json",
            b"{\"id\": 1}\n{\"id\": 2, oops\n{\"id\": 3}\n".to_vec(),
        ),
        ("array.json", b"[{\"id\": 1}, {\"id\": 2}]\n".to_vec()),
        ("ragged.csv", b"id,name\n1,a\n2\n3,c,extra\n".to_vec()),
        ("empty_header.csv", b"\n1,a\n2,b\n".to_vec()),
        ("text.parquet", b"id,name\n1,this is not parquet\n".to_vec()),
        ("truncated.parquet", {
            let p = parquet_bytes(900_000, 50);
            p[..p.len() / 2].to_vec()
        }),
        ("empty.json", Vec::new()),
        (
            "schema_type.json",
            b"{\"id\": 1, \"name\": \"ok\"}\n{\"id\": \"seven\", \"name\": \"x\"}\n".to_vec(),
        ),
        (
            "schema_required.json",
            b"{\"id\": 2, \"name\": \"ok\"}\n{\"name\": \"no id\"}\n".to_vec(),
        ),
    ];

    // Changed while uploading: large files (chunked) caught mid-upload, one at a time so that
    // each is caught by its own check (a batch given up for one sends the others round again).
    let v1 = |first: usize| jsonl(first, 1200); // ~40 KB: 80 chunks
    let modified_v2 = jsonl(250_000, 700);
    let truncated_v2: String = v1(300_000)
        .lines()
        .take(400)
        .map(|l| format!("{l}\n"))
        .collect();
    let mid_upload =
        |f: &batchdrop::store::FileRow| f.uploaded_bytes > 0 && f.state == FileState::Batched;
    let mut done = 0;
    write_atomic(&drop.join("deleted.json"), v1(100_000).as_bytes());
    wait_file(&store, "deleted.json", "mid-upload", mid_upload).await;
    std::fs::remove_file(drop.join("deleted.json")).unwrap();
    done += 1;
    wait_archived(&drop, done, 120, &mut daemon).await;

    write_atomic(&drop.join("modified.json"), v1(200_000).as_bytes());
    wait_file(&store, "modified.json", "mid-upload", mid_upload).await;
    std::fs::write(drop.join("modified.json"), &modified_v2).unwrap();
    done += 1;
    wait_archived(&drop, done, 120, &mut daemon).await;

    write_atomic(&drop.join("truncated_during.json"), v1(300_000).as_bytes());
    wait_file(&store, "truncated_during.json", "mid-upload", mid_upload).await;
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(drop.join("truncated_during.json"))
            .unwrap();
        f.set_len(truncated_v2.len() as u64).unwrap();
    }
    done += 1;
    wait_archived(&drop, done, 120, &mut daemon).await;

    // Bad content, dropped among good files of every format.
    for i in 0..4 {
        good.json(&format!("good{i}.json"), rng.random_range(1..20));
        good.csv(&format!("good{i}.csv"), rng.random_range(1..20));
        good.parquet(&format!("good{i}.parquet"), rng.random_range(1..20));
    }
    for (name, content) in bad {
        write_atomic(&drop.join(name), content);
    }
    let phase1 = done + good.files.len() + bad.len();
    wait_archived(&drop, phase1, 120, &mut daemon).await;

    // Then, alone (so that nothing else disturbs its batch): a file appended once its upload
    // was acknowledged. Its batch goes on with the version that was taken; the grown file is
    // set aside with a receipt instead of being ingested again whole.
    write_atomic(&drop.join("appended.json"), jsonl(400_000, 30).as_bytes());
    wait_file(&store, "appended.json", "uploaded", |f| {
        f.state == FileState::Uploaded
    })
    .await;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(drop.join("appended.json"))
            .unwrap();
        f.write_all(jsonl(400_030, 5).as_bytes()).unwrap();
    }
    wait_archived(&drop, phase1 + 2, 120, &mut daemon).await;
    daemon.stop().await;
    // What the daemon noted about earlier versions it did not ingest.
    let mut history = BTreeMap::<String, Vec<String>>::new();
    for name in [
        "deleted.json",
        "modified.json",
        "truncated_during.json",
        "appended.json",
    ] {
        for f in store.files_by_path(name).await.unwrap() {
            if let Some(reason) = f.reason.filter(|_| f.state == FileState::Superseded) {
                history.entry(name.to_owned()).or_default().push(reason);
            }
        }
    }
    store.close().await;
    for name in ["modified.json", "truncated_during.json"] {
        assert!(
            history
                .get(name)
                .is_some_and(|h| h.iter().any(|r| r.contains("during its upload"))),
            "{name}: the change during its upload was noticed: {history:?}"
        );
    }

    let archived = receipts_by_name(&env.archive());
    let failed = receipts_by_name(&env.failed());
    println!("[bad_files] catalogue (file → status: what the receipt says is wrong):");
    let mut names: Vec<&str> = bad.iter().map(|(n, _)| *n).collect();
    names.extend([
        "deleted.json",
        "modified.json",
        "truncated_during.json",
        "appended.json",
    ]);
    for name in &names {
        for (dir, rs) in [("failed", &failed), ("archive", &archived)] {
            if let Some(r) = rs.get(*name) {
                println!(
                    "[bad_files]   {name} ({dir}) → {}: {}",
                    r["status"],
                    what_is_wrong(r)
                );
            }
        }
        for reason in history.get(*name).into_iter().flatten() {
            println!("[bad_files]   {name} (earlier version, superseded) → {reason}");
        }
    }

    // Each bad file failed alone, with a receipt saying what is wrong: the platform's codes,
    // the rows at fault. Pre-flight validation (#20) refuses the files with bad rows before
    // they are sent, naming the row and the code the platform would give; files it cannot
    // check (Parquet) fail on the platform with its codes.
    let expect_failed: &[(&str, &[&str])] = &[
        (
            "malformed.json",
            &["INGEST-1401-400", "row 2", "not uploaded"],
        ),
        ("array.json", &["INGEST-1401-400", "array"]),
        (
            "ragged.csv",
            &["INGEST-1401-400", "fields where the header has"],
        ),
        ("empty_header.csv", &["(118)", "header row is empty"]),
        // Refused before upload (#20), with the platform's code.
        ("text.parquet", &["(200)", "not a valid Parquet file"]),
        ("truncated.parquet", &["(200)", "not a valid Parquet file"]),
        ("empty.json", &["empty.json", "0 bytes", "never sent"]),
        (
            "schema_type.json",
            &["/id", "cannot be converted to an integer", "\"seven\""],
        ),
        (
            "schema_required.json",
            &["/id", "required field is missing", "INGEST-1555"],
        ),
        ("deleted.json", &["deleted.json", "deleted"]),
        ("appended.json", &["appended.json", "grew"]),
    ];
    for (name, words) in expect_failed {
        let r = failed
            .get(*name)
            .unwrap_or_else(|| panic!("{name}: no receipt in the failed folder"));
        assert_eq!(r["status"], "failed", "{r}");
        let text = what_is_wrong(r);
        for w in *words {
            assert!(
                text.contains(w),
                "{name}: the receipt should say {w:?}: {text}"
            );
        }
    }
    assert_eq!(failed.len(), expect_failed.len(), "{:#?}", failed.keys());

    // The good files and the changed ones are in the platform once, each as one whole version.
    let platform = Platform::new(&env.emulator.base_url());
    let ingested = platform.ingested().await;
    let mut expected = good.files.clone();
    expected.insert("modified.json".into(), 700);
    expected.insert("truncated_during.json".into(), 400);
    expected.insert("appended.json".into(), 30);
    ingested.assert_exactly(&expected);
    for (name, content) in [
        ("modified.json", modified_v2.clone()),
        ("truncated_during.json", truncated_v2.clone()),
        ("appended.json", jsonl(400_000, 30)),
    ] {
        let (_, file_id, _) = &ingested.by_name[name][0];
        let got = platform.download(file_id).await;
        assert!(
            got == content.as_bytes(),
            "{name}: the platform holds {} bytes that are not the one whole version ({} bytes)",
            got.len(),
            content.len()
        );
        assert_eq!(archived[name]["status"], "success", "{}", archived[name]);
    }
    for name in good.files.keys() {
        assert_eq!(archived[name]["status"], "success", "{}", archived[name]);
    }
    let left = data_files_left(&drop);
    assert!(left.is_empty(), "left in the drop folder: {left:?}");
}
