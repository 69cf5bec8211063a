//! Records checked against their schema in every format: every rule broken, with its field
//! and code, CSV cells converted, Parquet columns checked; partial ingestion under and over
//! its threshold.

use super::*;

#[tokio::test]
async fn the_fixtures_pass_their_schemas_in_every_format() {
    let (env, _schemas) = start_with_schemas().await;
    // The multi-line JSON fixture, and the same profiles as JSON Lines.
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json", "isMultiLineJson": true}),
            DIAG(),
            &[("CRM_profiles.json", read(&fixture("CRM_profiles.json")))],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 16);
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json"}),
            DIAG(),
            &[("profiles.json", crm_jsonl())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 16);
    // The CSV fixture against its flat schema.
    let (_, b) = env
        .ingest_into(
            FLAT,
            json!({"format": "csv"}),
            DIAG(),
            &[("CRM_profiles.csv", read(&fixture("CRM_profiles.csv")))],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 259);
    // Parquet carrying a subset of the fields, nested.
    let data = parquet_of(vec![
        ("crmId", strings(&[Some("c1"), Some("c2")])),
        (
            "person",
            structure(vec![(
                "name",
                structure(vec![("lastName", strings(&[Some("Doe"), Some("Roe")]))]),
            )]),
        ),
        (
            "optIn",
            Arc::new(BooleanArray::from(vec![true, false])) as ArrayRef,
        ),
    ]);
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            DIAG(),
            &[("p.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 2);
    // A dataset without a schema still takes any well-formed record.
    let (_, _, b) = env
        .ingest(
            json!({"format": "json"}),
            &[("any.json", b"{\"person\": 5}\n{}\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
}

#[tokio::test]
async fn every_rule_broken_in_json_is_reported_with_its_field() {
    let (env, _schemas) = start_with_schemas().await;
    let mut rows = vec![good_profile(0)];
    // The platform's conversions: these are all good.
    let mut converted = good_profile(1);
    converted["crmId"] = json!(12345); // number → string
    converted["person"]["birthYear"] = json!("1987"); // string → integer
    converted["loyalty"]["points"] = json!("12.5"); // string → number
    converted["loyalty"]["joined"] = json!(1_700_000_000_000i64); // long → date-time
    converted["homeAddress"] = json!({"_schema": {"latitude": 45, "longitude": "-80.5"}}); // int → double
    converted["unknownField"] = json!({"ignored": true}); // not in the schema: ignored
    rows.push(converted);
    // One broken rule per row: (pointer, code).
    type Breaker = Box<dyn Fn(&mut Value)>;
    let broken: Vec<(&str, &str, Breaker)> = vec![
        (
            "/person/name/lastName",
            "INGEST-1555-400",
            Box::new(|r| {
                r["person"]["name"]
                    .as_object_mut()
                    .unwrap()
                    .remove("lastName");
            }),
        ),
        (
            "/person",
            "INGEST-1555-400",
            Box::new(|r| r["person"] = Value::Null),
        ),
        (
            "/person/birthYear",
            "INGEST-1542-400",
            Box::new(|r| r["person"]["birthYear"] = json!("nineteen")),
        ),
        (
            "/person/birthYear",
            "INGEST-1542-400",
            Box::new(|r| r["person"]["birthYear"] = json!(1990.5)),
        ),
        (
            "/person/birthYear",
            "INGEST-1543-400",
            Box::new(|r| r["person"]["birthYear"] = json!(40000)),
        ),
        (
            "/optIn",
            "INGEST-1542-400",
            Box::new(|r| r["optIn"] = json!("true")),
        ),
        (
            "/crmId",
            "INGEST-1542-400",
            Box::new(|r| r["crmId"] = json!(["c", "d"])),
        ),
        (
            "/interests",
            "INGEST-1542-400",
            Box::new(|r| r["interests"] = json!("golf")),
        ),
        (
            "/interests",
            "INGEST-1543-400",
            Box::new(|r| r["interests"] = json!(["a", "b", "c", "d"])),
        ),
        (
            "/person/gender",
            "INGEST-1543-400",
            Box::new(|r| r["person"]["gender"] = json!("robot")),
        ),
        (
            "/personalEmail/address",
            "INGEST-1543-400",
            Box::new(|r| r["personalEmail"]["address"] = json!("not-an-email")),
        ),
        (
            "/person/birthDate",
            "INGEST-1543-400",
            Box::new(|r| r["person"]["birthDate"] = json!("1990-02-30")),
        ),
        (
            "/loyalty/joined",
            "INGEST-1543-400",
            Box::new(|r| r["loyalty"]["joined"] = json!("last tuesday")),
        ),
        (
            "/website",
            "INGEST-1543-400",
            Box::new(|r| r["website"] = json!("www.example.com")),
        ),
        (
            "/person/name/firstName",
            "INGEST-1543-400",
            Box::new(|r| r["person"]["name"]["firstName"] = json!("x".repeat(31))),
        ),
        (
            "/loyalty/points",
            "INGEST-1543-400",
            Box::new(|r| r["loyalty"]["points"] = json!(-1)),
        ),
        (
            "/identityMap/CRMID/0/id",
            "INGEST-1555-400",
            Box::new(|r| r["identityMap"]["CRMID"] = json!([{"primary": true}])),
        ),
    ];
    for (i, (_, _, f)) in broken.iter().enumerate() {
        let mut r = good_profile(100 + i);
        f(&mut r);
        rows.push(r);
    }
    let mut data = jsonl(&rows);
    data.extend_from_slice(b"{\"person\": {\"name\": \n"); // unparsable
    let total = rows.len() + 1;
    let bad = broken.len() + 1;

    for (format, name, bytes) in [
        (json!({"format": "json"}), "rows.json", data.clone()),
        (
            json!({"format": "json", "isMultiLineJson": true}),
            "rows-array.json",
            serde_json::to_vec_pretty(&rows).unwrap(),
        ),
    ] {
        let multi = format["isMultiLineJson"] == true;
        let (batch, b) = env
            .ingest_into(PROFILES, format, DIAG(), &[(name, bytes)])
            .await;
        let (total, bad) = if multi {
            (rows.len(), broken.len())
        } else {
            (total, bad)
        };
        assert_eq!(b["status"], "failed", "{b:#}");
        assert_eq!(b["metrics"]["inputRecordCount"], total, "{b:#}");
        assert_eq!(b["metrics"]["failedRecordCount"], bad, "{b:#}");
        assert_eq!(b["metrics"]["outputRecordCount"], 0);
        for (pointer, code, _) in &broken {
            assert!(count_for(&b, code, pointer) >= 1);
            let d = error_for(&b, code, pointer);
            assert!(d.contains(name) && d.contains("row "), "{d}");
        }
        assert_eq!(count_for(&b, "INGEST-1542-400", "/person/birthYear"), 2);
        if !multi {
            assert_eq!(errors_with(&b, "INGEST-1401-400")[0]["recordCount"], 1);
        }
        // The failed rows, each with its reasons and the field's pointer.
        let failed = env.failed_rows(&batch).await;
        assert_eq!(failed.len(), bad);
        for (i, (pointer, code, _)) in broken.iter().enumerate() {
            let row = &failed[i];
            assert_eq!(row["name"], name);
            let errs = row["errors"].as_array().unwrap();
            assert!(
                errs.iter()
                    .any(|e| e["code"] == *code && e["path"] == *pointer),
                "row {i}: {row:#}"
            );
            let record = row["record"].as_str().unwrap();
            assert!(record.contains(&format!("c{}", 100 + i)), "{record}");
        }
        if !multi {
            assert_eq!(failed[bad - 1]["errors"][0]["code"], "INGEST-1401-400");
            assert_eq!(failed[bad - 1]["row"], total);
        }
    }
}

#[tokio::test]
async fn every_rule_broken_in_csv_is_reported_and_cells_convert() {
    let (env, _schemas) = start_with_schemas().await;
    // The fixture with some cells broken.
    let text = String::from_utf8(read(&fixture("CRM_profiles.csv"))).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let set = |lines: &mut Vec<String>, row: usize, col: usize, v: &str| {
        let mut cells: Vec<String> = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(lines[row].as_bytes())
            .records()
            .next()
            .unwrap()
            .unwrap()
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect();
        cells[col] = format!("\"{v}\"");
        lines[row] = cells.join(",");
    };
    // Columns: 2 L_NAME, 3 GENDER, 5 DOB, 6 YOB, 7 EMAIL, 17 COUNTRY, 19 LAT.
    set(&mut lines, 2, 6, "abc"); // YOB → integer
    set(&mut lines, 3, 7, "nobody"); // EMAIL format
    set(&mut lines, 4, 2, ""); // L_NAME required (an empty cell is absent)
    set(&mut lines, 5, 3, "robot"); // GENDER enum
    set(&mut lines, 6, 19, "91.5"); // LAT maximum
    set(&mut lines, 7, 5, "31/12/1999"); // DOB date
    set(&mut lines, 8, 17, "USA"); // COUNTRY maxLength
    set(&mut lines, 9, 6, "1850"); // YOB minimum
    let data = (lines.join("\n") + "\n").into_bytes();
    let (batch, b) = env
        .ingest_into(FLAT, json!({"format": "csv"}), DIAG(), &[("crm.csv", data)])
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    assert_eq!(b["metrics"]["inputRecordCount"], 259);
    assert_eq!(b["metrics"]["failedRecordCount"], 8);
    for (code, pointer) in [
        ("INGEST-1542-400", "/YOB"),
        ("INGEST-1543-400", "/EMAIL"),
        ("INGEST-1555-400", "/L_NAME"),
        ("INGEST-1543-400", "/GENDER"),
        ("INGEST-1543-400", "/LAT"),
        ("INGEST-1543-400", "/DOB"),
        ("INGEST-1543-400", "/COUNTRY"),
    ] {
        error_for(&b, code, pointer);
    }
    assert_eq!(count_for(&b, "INGEST-1543-400", "/YOB"), 1);
    let failed = env.failed_rows(&batch).await;
    assert_eq!(failed.len(), 8);
    assert_eq!(failed[0]["row"], 3, "CSV rows count lines, header included");
    assert_eq!(failed[0]["errors"][0]["path"], "/YOB");
    assert!(
        failed[0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("\"abc\" cannot be converted to an integer"),
        "{:#}",
        failed[0]
    );

    // Headers with dots map to nested fields; cells are text that converts, booleans too.
    let csv = b"crmId,person.name.lastName,person.birthYear,optIn,loyalty.joined\n\
                c1,Doe,1990,true,2024-05-01T00:00:00Z\n\
                c2,Roe,,FALSE,\n\
                c3,Poe,1990,yes,\n\
                c4,,1990,true,\n"
        .to_vec();
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "csv"}),
            DIAG(),
            &[("nested.csv", csv)],
        )
        .await;
    assert_eq!(b["metrics"]["failedRecordCount"], 2, "{b:#}");
    error_for(&b, "INGEST-1542-400", "/optIn");
    // c4 carries no name at all (its only name cell is empty).
    error_for(&b, "INGEST-1555-400", "/person/name");
    let failed = env.failed_rows(&batch).await;
    assert_eq!(failed[0]["row"], 4);
    assert_eq!(failed[1]["row"], 5);
}

#[tokio::test]
async fn parquet_columns_are_checked_against_the_schema() {
    let (env, _schemas) = start_with_schemas().await;
    let last = strings(&[Some("Doe"), None, Some("Poe"), Some("Zoe")]);
    let data = parquet_of(vec![
        (
            "crmId",
            strings(&[Some("c1"), Some("c2"), Some("c3"), Some("c4")]),
        ),
        (
            "person",
            structure(vec![
                ("name", structure(vec![("lastName", last)])),
                (
                    "gender",
                    strings(&[Some("male"), Some("female"), Some("robot"), None]),
                ),
                (
                    "birthYear",
                    Arc::new(Int64Array::from(vec![1990, 1991, 1992, 99_999])) as ArrayRef,
                ),
            ]),
        ),
        (
            "loyalty",
            structure(vec![(
                "points",
                Arc::new(Float64Array::from(vec![1.5, 2.0, 3.0, 4.0])) as ArrayRef,
            )]),
        ),
    ]);
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            DIAG(),
            &[("p.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    assert_eq!(b["metrics"]["inputRecordCount"], 4);
    assert_eq!(b["metrics"]["failedRecordCount"], 3);
    error_for(&b, "INGEST-1555-400", "/person/name/lastName");
    error_for(&b, "INGEST-1543-400", "/person/gender");
    error_for(&b, "INGEST-1543-400", "/person/birthYear");
    let failed = env.failed_rows(&batch).await;
    assert_eq!(
        failed.iter().map(|f| f["row"].clone()).collect::<Vec<_>>(),
        vec![json!(2), json!(3), json!(4)]
    );
    assert!(failed[1]["record"].as_str().unwrap().contains("robot"));

    // Booleans never convert: a boolean column into an integer field fails its rows.
    let data = parquet_of(vec![(
        "person",
        structure(vec![
            (
                "name",
                structure(vec![("lastName", strings(&[Some("Doe")]))]),
            ),
            (
                "birthYear",
                Arc::new(BooleanArray::from(vec![true])) as ArrayRef,
            ),
        ]),
    )]);
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            DIAG(),
            &[("bool.parquet", data)],
        )
        .await;
    error_for(&b, "INGEST-1542-400", "/person/birthYear");

    // A column the schema lacks refuses the file, naming it.
    let data = parquet_of(vec![
        ("crmId", strings(&[Some("c1")])),
        (
            "person",
            structure(vec![
                (
                    "name",
                    structure(vec![("lastName", strings(&[Some("Doe")]))]),
                ),
                ("shoeSize", Arc::new(Int64Array::from(vec![42])) as ArrayRef),
            ]),
        ),
    ]);
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            DIAG(),
            &[("extra.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    let d = details(&b["errors"][0]);
    assert!(
        d.contains("extra.parquet") || d.contains("person.shoeSize"),
        "{d}"
    );
    assert!(d.contains("person.shoeSize") && d.contains("subset"), "{d}");
}

#[tokio::test]
async fn partial_ingestion_under_and_over_its_threshold() {
    let (env, _schemas) = start_with_schemas().await;
    // 100 rows, 3 bad (3%).
    let rows: Vec<Value> = (0..100)
        .map(|i| {
            let mut r = good_profile(i);
            if i % 33 == 32 {
                r["person"]["gender"] = json!("robot");
            }
            r
        })
        .collect();
    let data = jsonl(&rows);

    // Under the threshold: success, the good rows only.
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 5}),
            &[("p.json", data.clone())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(
        b["metrics"],
        json!({"inputFileCount": 1, "inputByteSize": data.len(), "inputRecordCount": 100,
               "outputRecordCount": 97, "failedRecordCount": 3})
    );
    let summary = &b["errors"][0];
    assert_eq!(summary["code"], "INGEST-1212-400", "{b:#}");
    let d = summary["description"].as_str().unwrap();
    assert!(d.contains("3 errors") && d.contains("97 rows"), "{d}");
    assert_eq!(count_for(&b, "INGEST-1543-400", "/person/gender"), 3);
    let failed = env.failed_rows(&batch).await;
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0]["row"], 33);
    assert!(
        failed[0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("robot")
    );
    // Data Access serves the good rows: records and content.
    let files = download_files(&env, &batch).await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0["records"], "97");
    let served = String::from_utf8(files[0].1.clone()).unwrap();
    assert_eq!(files[0].0["size"], served.len().to_string());
    assert_eq!(served.lines().count(), 97);
    assert!(!served.contains("robot"));
    assert!(served.contains("\"c0\"") && served.contains("\"c99\""));

    // Over the threshold (the other spelling of the option): failed, nothing ingested.
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercent": 2}),
            &[("p.json", data.clone())],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 0);
    assert_eq!(b["metrics"]["failedRecordCount"], 3);
    assert!(errors_with(&b, "INGEST-1212-400").is_empty(), "{b:#}");
    assert_eq!(count_for(&b, "INGEST-1543-400", "/person/gender"), 3);
    assert!(download_files(&env, &batch).await.is_empty());

    // Without partial ingestion one bad row fails the batch; without diagnostics the errors
    // are the platform's one summary.
    let one_bad = jsonl(&rows[..33]);
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json"}),
            json!({}),
            &[("p.json", one_bad)],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b:#}");
    assert_eq!(b["metrics"]["failedRecordCount"], 1);
    assert_eq!(b["errors"].as_array().unwrap().len(), 1);
    assert_eq!(b["errors"][0]["code"], "INGEST-1211-400");
    // Partial ingestion without diagnostics: success, and the summary says to turn them on.
    let (_, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json"}),
            json!({"partialIngestionPercentage": 5}),
            &[("p.json", data)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["failedRecordCount"], 3);
    assert_eq!(b["errors"][0]["code"], "INGEST-1211-400");

    // CSV and Parquet: the good rows are served in the file's own format.
    let csv = b"crmId,person.name.lastName,person.gender\nc1,Doe,male\nc2,Roe,robot\nc3,\"Poe, Jr\",female\n"
        .to_vec();
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "csv"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 50}),
            &[("p.csv", csv)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    let files = download_files(&env, &batch).await;
    assert_eq!(files[0].0["records"], "2");
    assert_eq!(
        String::from_utf8(files[0].1.clone()).unwrap(),
        "crmId,person.name.lastName,person.gender\nc1,Doe,male\nc3,\"Poe, Jr\",female\n"
    );
    let data = parquet_of(vec![
        (
            "crmId",
            strings(&[Some("c1"), Some("c2"), Some("c3"), Some("c4")]),
        ),
        (
            "person",
            structure(vec![
                (
                    "name",
                    structure(vec![(
                        "lastName",
                        strings(&[Some("A"), Some("B"), None, Some("D")]),
                    )]),
                ),
                (
                    "gender",
                    strings(&[Some("male"), Some("robot"), Some("male"), Some("male")]),
                ),
            ]),
        ),
    ]);
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 50}),
            &[("p.parquet", data)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 2);
    let files = download_files(&env, &batch).await;
    assert_eq!(files[0].0["records"], "2");
    assert_eq!(parquet_rows(files[0].1.clone()), 2);
    // A multi-line JSON array is served as an array of its good elements.
    let arr = serde_json::to_vec_pretty(&rows[..34]).unwrap();
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "json", "isMultiLineJson": true}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 5}),
            &[("arr.json", arr)],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    let files = download_files(&env, &batch).await;
    let served: Vec<Value> = serde_json::from_slice(&files[0].1).unwrap();
    assert_eq!(served.len(), 33);
    assert_eq!(served[32]["crmId"], "c33");
}
