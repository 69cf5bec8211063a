//! Where schemas come from (the config, the Catalog, the embedded API), the start refused
//! with what to fix for a bad schema config, and data dirs of older emulators.

use super::*;

#[tokio::test]
async fn schemas_come_from_the_config_the_catalog_and_the_embedded_api() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(schema_config(dir.path())).await;
    // The config's dataset references its schema.
    let (_, d) = env
        .get_json(&format!("{CATALOG}/dataSets/{PROFILES}"))
        .await;
    assert_eq!(d[PROFILES]["schemaRef"]["id"], PROFILE_ID);
    // POST /dataSets with a registered schemaRef gets it; an unknown one is refused.
    let create = |schema: &str| {
        env.req(Method::POST, &format!("{CATALOG}/dataSets"))
            .json(&json!({"name": "d", "schemaRef": {"id": schema,
                          "contentType": "application/vnd.adobe.xed-full+json;version=1"}}))
            .send()
    };
    let r = create(PROFILE_ID).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let ds = v[0]
        .as_str()
        .unwrap()
        .trim_start_matches("@/dataSets/")
        .to_owned();
    let bad = jsonl(&[json!({"person": {"name": {"firstName": "x"}}})]);
    let (_, b) = env
        .ingest_into(
            &ds,
            json!({"format": "json"}),
            DIAG(),
            &[("b.json", bad.clone())],
        )
        .await;
    assert_eq!(b["status"], "failed");
    error_for(&b, "INGEST-1555-400", "/person/name/lastName");
    let r = create("https://ns.adobe.com/tenant/schemas/unknown")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    let detail = e["detail"].as_str().unwrap();
    assert!(
        detail.contains("unknown") && detail.contains(PROFILE_ID),
        "{detail}"
    );

    // The embedded API: register a schema later and attach it to a dataset.
    let emu = env.emu();
    let tiny =
        json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}});
    emu.register_schema("urn:tiny", &tiny).await.unwrap();
    emu.ensure_dataset_with_schema("folder-tiny", "tiny", "urn:tiny")
        .await
        .unwrap();
    let err = emu
        .ensure_dataset_with_schema("folder-x", "x", "urn:nope")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("urn:nope") && err.contains("register"),
        "{err}"
    );
    let err = emu
        .register_schema("urn:bad", &json!({"type": "array"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("urn:bad") && err.contains("root"), "{err}");
    // A keyword of the wrong JSON type would silently check nothing: refused, by name.
    let err = emu
        .register_schema(
            "urn:loose",
            &json!({"type": "object", "required": "id", "properties": {"id": {"type": "string"}}}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("urn:loose") && err.contains("required must be a list of strings"),
        "{err}"
    );
    let (_, b) = env
        .ingest_into(
            "folder-tiny",
            json!({"format": "json"}),
            DIAG(),
            &[("t.json", b"{\"id\": \"7\"}\n{\"id\": \"seven\"}\n".to_vec())],
        )
        .await;
    assert_eq!(b["metrics"]["failedRecordCount"], 1, "{b:#}");
    error_for(&b, "INGEST-1542-400", "/id");

    // Registered schemas survive a restart, even without the config that named them.
    let env = env.restart(cfg()).await;
    let (_, b) = env
        .ingest_into(
            "folder-tiny",
            json!({"format": "json"}),
            DIAG(),
            &[("t.json", b"{\"id\": \"seven\"}\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    let (_, b) = env
        .ingest_into(&ds, json!({"format": "json"}), DIAG(), &[("b.json", bad)])
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
}

#[tokio::test]
async fn bad_schema_configs_stop_the_start_with_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let try_start = |config: EmulatorConfig| {
        let data = data.path().to_path_buf();
        async move {
            Emulator::start("127.0.0.1:0".parse().unwrap(), &data, config)
                .await
                .map(|_| ())
                .unwrap_err()
                .to_string()
        }
    };
    let missing = EmulatorConfig {
        schemas: vec![SchemaSeed {
            file: PathBuf::from("/nonexistent/schema.json"),
            ..SchemaSeed::default()
        }],
        ..cfg()
    };
    let e = try_start(missing).await;
    assert!(
        e.contains("/nonexistent/schema.json") && e.contains("cannot be read"),
        "{e}"
    );
    let external = dir.path().join("ext.json");
    std::fs::write(
        &external,
        json!({"$id": "urn:x", "type": "object", "allOf": [{"$ref": "https://ns.adobe.com/xdm/context/profile"}]})
            .to_string(),
    )
    .unwrap();
    let e = try_start(EmulatorConfig {
        schemas: vec![SchemaSeed {
            file: external,
            ..SchemaSeed::default()
        }],
        ..cfg()
    })
    .await;
    assert!(e.contains("xed-full"), "{e}");
    let e = try_start(EmulatorConfig {
        datasets: vec![DatasetSeed {
            id: "d".into(),
            schema: "no-such-schema".into(),
            ..DatasetSeed::default()
        }],
        ..cfg()
    })
    .await;
    assert!(
        e.contains("no-such-schema") && e.contains("[[schemas]]"),
        "{e}"
    );
    // The TOML form, with a file relative to the config file.
    std::fs::write(dir.path().join("p.json"), profile_schema().to_string()).unwrap();
    let toml_path = dir.path().join("emulator.toml");
    std::fs::write(
        &toml_path,
        "[[schemas]]\nfile = \"p.json\"\nidentity_field = \"crmId\"\n\n[[datasets]]\nid = \"x\"\nschema = \"CRM profile\"\ntags = { unifiedProfile = [\"enabled:true\", \"isUpsert:true\"] }\n",
    )
    .unwrap();
    let config = EmulatorConfig::from_file(&toml_path).unwrap();
    let env = start(config).await;
    let (_, d) = env.get_json(&format!("{CATALOG}/dataSets/x")).await;
    assert_eq!(d["x"]["schemaRef"]["id"], PROFILE_ID);
    assert_eq!(d["x"]["tags"]["unifiedProfile"][1], "isUpsert:true");
}

#[tokio::test]
async fn a_data_dir_of_an_older_emulator_gets_the_new_columns() {
    let dir = tempfile::tempdir().unwrap();
    // The tables as the first release made them (without the columns added since).
    rewrite_data_dir(
        dir.path(),
        &[
            "CREATE TABLE datasets (id TEXT PRIMARY KEY, name TEXT NOT NULL, schema_ref TEXT,
            tags TEXT NOT NULL DEFAULT '{}', extra TEXT NOT NULL DEFAULT '{}',
            ims_org TEXT NOT NULL DEFAULT '', sandbox TEXT NOT NULL DEFAULT '',
            created INTEGER NOT NULL, updated INTEGER NOT NULL)",
            "CREATE TABLE files (id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, path TEXT NOT NULL,
            kind TEXT NOT NULL, state TEXT NOT NULL, size INTEGER NOT NULL DEFAULT 0,
            records INTEGER, created INTEGER NOT NULL, updated INTEGER NOT NULL,
            UNIQUE (batch_id, path))",
            "CREATE TABLE failed_rows (batch_id TEXT NOT NULL, seq INTEGER NOT NULL,
            file_path TEXT NOT NULL, row_no INTEGER, code TEXT NOT NULL, message TEXT NOT NULL,
            raw TEXT, PRIMARY KEY (batch_id, seq))",
            "INSERT INTO datasets (id, name, created, updated) VALUES ('old', 'old one', 1, 1)",
        ],
    )
    .await;
    let env = start_in(dir, cfg()).await;
    let (s, d) = env.get_json(&format!("{CATALOG}/dataSets/old")).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["old"]["name"], "old one");
    let (batch, b) = env
        .ingest_into(
            "old",
            json!({"format": "json"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 50}),
            &[("a.json", b"{\"a\": 1}\nnope\n{\"a\": 3}\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(
        env.failed_rows(&batch).await[0]["errors"][0]["code"],
        "INGEST-1401-400"
    );
    let files = download_files(&env, &batch).await;
    assert_eq!(files[0].1, b"{\"a\": 1}\n{\"a\": 3}\n");
}

/// Issue #18 item 7: a registered schema is fetched as the Schema Registry's lookup answers
/// it, with the `xed-full` Accept header (the daemon's pre-flight validation will do so).
#[tokio::test]
async fn a_registered_schema_is_looked_up_with_the_xed_full_accept() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(schema_config(dir.path())).await;
    let encoded: String = PROFILE_ID
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    let path = format!("/data/foundation/schemaregistry/tenant/schemas/{encoded}");
    let lookup = |accept: Option<&'static str>, path: String| {
        let mut request = env.req(Method::GET, &path);
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        request.send()
    };
    let r = lookup(
        Some("application/vnd.adobe.xed-full+json; version=1"),
        path.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let schema: Value = r.json().await.unwrap();
    assert_eq!(schema["$id"], PROFILE_ID);
    assert_eq!(schema["meta:altId"], "_batchdrop.schemas.crm-profile");
    // The document registered, whole: its rules are there to check records against.
    assert_eq!(
        schema["properties"]["person"]["properties"]["name"]["required"],
        json!(["lastName"])
    );

    // Without a registry media type: 406; an unknown schema or container: 404.
    let r = lookup(None, path.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    let v: Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("xed-full"), "{v}");
    let r = lookup(
        Some("application/vnd.adobe.xed-full+json; version=1"),
        "/data/foundation/schemaregistry/tenant/schemas/https%3A%2F%2Fns.adobe.com%2Fx%2Fschemas%2Fnone".into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = lookup(
        Some("application/vnd.adobe.xed-full+json; version=1"),
        path.replace("/tenant/", "/global/"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
