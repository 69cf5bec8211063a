//! Upsert datasets: batches merged by identity into the current view, and datasets created
//! through the Catalog that take their schema's identity.

use super::*;

async fn current(env: &Env, ds: &str, query: &str) -> (StatusCode, Value) {
    env.get_json(&format!("{EXPORT}/dataSets/{ds}/current{query}"))
        .await
}

#[tokio::test]
async fn two_upsert_batches_merge_into_the_current_view() {
    let (env, _schemas) = start_with_schemas().await;
    // Batch 1: two profiles with names and points.
    let first = parquet_of(vec![
        ("crmId", strings(&[Some("c1"), Some("c2")])),
        (
            "person",
            structure(vec![(
                "name",
                structure(vec![
                    ("firstName", strings(&[Some("Ada"), Some("Bob")])),
                    ("lastName", strings(&[Some("Doe"), Some("Roe")])),
                ]),
            )]),
        ),
        (
            "loyalty",
            structure(vec![
                (
                    "points",
                    Arc::new(Float64Array::from(vec![10.0, 5.0])) as ArrayRef,
                ),
                ("tier", strings(&[Some("silver"), Some("bronze")])),
            ]),
        ),
    ]);
    let (_, b) = env
        .ingest_into(
            UPSERT,
            json!({"format": "parquet"}),
            DIAG(),
            &[("day1.parquet", first)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    // Batch 2: only the loyalty points of c1, its first name, and a new profile c3; one row
    // without its identity fails (partial ingestion keeps the others).
    let second = parquet_of(vec![
        ("crmId", strings(&[Some("c1"), Some("c3"), None])),
        (
            "person",
            structure(vec![(
                "name",
                structure(vec![("firstName", strings(&[Some("Ada-Lou"), None, None]))]),
            )]),
        ),
        (
            "loyalty",
            structure(vec![(
                "points",
                Arc::new(Float64Array::from(vec![20.0, 1.0, 3.0])) as ArrayRef,
            )]),
        ),
    ]);
    let (b2, b) = env
        .ingest_into(
            UPSERT,
            json!({"format": "parquet"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 50}),
            &[("day2.parquet", second)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["failedRecordCount"], 1);
    error_for(&b, "INGEST-1555-400", "/crmId");

    let (s, view) = current(&env, UPSERT, "").await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["_page"]["total"], 3);
    let by_id: std::collections::HashMap<&str, &Value> = view["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["identity"].as_str().unwrap(), &r["record"]))
        .collect();
    // c1: the fields batch 2 carried changed, the others stayed.
    assert_eq!(
        *by_id["c1"],
        json!({"crmId": "c1", "person": {"name": {"firstName": "Ada-Lou", "lastName": "Doe"}},
               "loyalty": {"points": 20.0, "tier": "silver"}})
    );
    // c2: untouched by batch 2.
    assert_eq!(by_id["c2"]["person"]["name"]["firstName"], "Bob");
    assert_eq!(by_id["c2"]["loyalty"]["points"], 5.0);
    // c3: only what batch 2 carried.
    assert_eq!(
        *by_id["c3"],
        json!({"crmId": "c3", "person": {"name": {}}, "loyalty": {"points": 1.0}})
    );
    let (_, one) = current(&env, UPSERT, "?identity=c1").await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["lastBatchId"], b2.as_str());
    let (_, page) = current(&env, UPSERT, "?limit=2&start=2").await;
    assert_eq!(page["data"][0]["identity"], "c3");

    // Only Parquet goes into an upsert dataset.
    let (_, b) = env
        .ingest_into(
            UPSERT,
            json!({"format": "json"}),
            DIAG(),
            &[("rows.json", jsonl(&[good_profile(1)]))],
        )
        .await;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["errors"][0]["code"], "INGEST-1560-400");
    let d = b["errors"][0]["description"].as_str().unwrap();
    assert!(d.contains("Parquet") && d.contains("upsert"), "{d}");
    let (_, view) = current(&env, UPSERT, "?identity=c1").await;
    assert_eq!(view["data"][0]["record"]["loyalty"]["points"], 20.0);
    // A dataset that is not an upsert dataset has no current view.
    let (s, e) = current(&env, PROFILES, "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("not an upsert"));
}

#[tokio::test]
async fn upsert_datasets_created_through_the_catalog_take_the_schemas_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = schema_config(dir.path());
    config.schemas[0].identity_field = "/personalEmail/address".into();
    let env = start(config).await;
    let r = env
        .req(Method::POST, &format!("{CATALOG}/dataSets"))
        .json(&json!({"name": "profiles", "schemaRef": {"id": PROFILE_ID,
                      "contentType": "application/vnd.adobe.xed-full+json;version=1"},
                      "tags": {"unifiedProfile": ["enabled:true", "isUpsert:true"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let ds = v[0].as_str().unwrap().trim_start_matches("@/dataSets/");
    let rows = |points: f64| {
        parquet_of(vec![
            (
                "personalEmail",
                structure(vec![("address", strings(&[Some("a@x.io")]))]),
            ),
            (
                "loyalty",
                structure(vec![(
                    "points",
                    Arc::new(Float64Array::from(vec![points])) as ArrayRef,
                )]),
            ),
        ])
    };
    for points in [1.0, 2.0] {
        let (_, b) = env
            .ingest_into(
                ds,
                json!({"format": "parquet"}),
                DIAG(),
                &[("p.parquet", rows(points))],
            )
            .await;
        assert_eq!(b["status"], "success", "{b:#}");
    }
    let (_, view) = current(&env, ds, "").await;
    assert_eq!(view["_page"]["total"], 1);
    assert_eq!(view["data"][0]["identity"], "a@x.io");
    assert_eq!(view["data"][0]["record"]["loyalty"]["points"], 2.0);

    // The flat schema names EMAIL as its identity field.
    let create_upsert = |schema: &str| {
        env.req(Method::POST, &format!("{CATALOG}/dataSets"))
            .json(&json!({"name": "u", "schemaRef": {"id": schema},
                          "tags": {"unifiedProfile": ["enabled:true", "isUpsert:true"]}}))
            .send()
    };
    let v: Value = create_upsert(FLAT_ID).await.unwrap().json().await.unwrap();
    let flat = v[0]
        .as_str()
        .unwrap()
        .trim_start_matches("@/dataSets/")
        .to_owned();
    let data = parquet_of(vec![
        ("EMAIL", strings(&[Some("a@x.io")])),
        ("L_NAME", strings(&[Some("Doe")])),
    ]);
    let (_, b) = env
        .ingest_into(
            &flat,
            json!({"format": "parquet"}),
            DIAG(),
            &[("f.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    let (_, view) = current(&env, &flat, "").await;
    assert_eq!(view["data"][0]["identity"], "a@x.io");

    // An upsert dataset whose schema names no identity field: the batch fails saying how to
    // fix it.
    env.emu()
        .register_schema(
            "urn:no-identity",
            &json!({"type": "object", "properties": {"a": {"type": "string"}}}),
        )
        .await
        .unwrap();
    let v: Value = create_upsert("urn:no-identity")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let none = v[0]
        .as_str()
        .unwrap()
        .trim_start_matches("@/dataSets/")
        .to_owned();
    let data = parquet_of(vec![("a", strings(&[Some("x")]))]);
    let (_, b) = env
        .ingest_into(
            &none,
            json!({"format": "parquet"}),
            DIAG(),
            &[("a.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    assert_eq!(b["errors"][0]["code"], "INGEST-1560-400");
    let d = b["errors"][0]["description"].as_str().unwrap();
    assert!(d.contains("identity_field"), "{d}");
}
