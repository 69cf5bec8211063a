//! Data Access: listing a batch's files, downloading them, failed rows; data of inactive and
//! deleted batches disappears.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

async fn get_json(env: &Env, path: &str) -> (StatusCode, Value) {
    let r = env.req(Method::GET, path).send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn files_are_listed_downloaded_and_disappear_after_revert() {
    let env = start(cfg()).await;
    let a = b"{\"a\":1}\n{\"a\":2}\n".to_vec();
    let c = read(&fixture("CRM_profiles.csv"));
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "csv"})).await;
    assert_eq!(
        env.put(&batch, &ds, "x/CRM_profiles.csv", c.clone()).await,
        StatusCode::OK
    );
    assert_eq!(
        env.put(&batch, &ds, "small.csv", b"h\n1\n2\n".to_vec())
            .await,
        StatusCode::OK
    );
    // Before success: nothing to read.
    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!([]));
    env.action(&batch, "COMPLETE").await;
    env.wait_status(&batch, &["success"]).await;

    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files")).await;
    assert_eq!(s, StatusCode::OK);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let f = &data[1];
    assert_eq!(f["name"], "x/CRM_profiles.csv");
    assert_eq!(f["dataSetId"], ds);
    assert_eq!(f["records"], "259");
    assert_eq!(f["size"], c.len().to_string());
    assert_eq!(data[0]["records"], "2");
    let id = f["dataSetFileId"].as_str().unwrap();
    let href = f["_links"]["self"]["href"].as_str().unwrap();
    assert_eq!(href, format!("{}{EXPORT}/files/{id}", env.base));
    // Without ?path=: the listing of the file's parts, each with its download link.
    let (s, listing) = get_json(&env, &format!("{EXPORT}/files/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{listing}");
    assert_eq!(listing["data"][0]["name"], "x/CRM_profiles.csv");
    assert_eq!(listing["data"][0]["length"], c.len().to_string());
    let part = listing["data"][0]["_links"]["self"]["href"]
        .as_str()
        .unwrap();
    assert_eq!(
        part,
        format!("{}{EXPORT}/files/{id}?path=x/CRM_profiles.csv", env.base)
    );
    let part = part.strip_prefix(&env.base).unwrap();
    let r = env.req(Method::GET, part).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], c.len().to_string().as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), c.as_slice());
    // A range: 206 with Content-Range, exactly those bytes.
    let r = env
        .req(Method::GET, part)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 10-19/{}", c.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &c[10..20]);
    // A suffix range, and one past the end (416, saying the size).
    let r = env
        .req(Method::GET, part)
        .header("Range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &c[c.len() - 5..]);
    let r = env
        .req(Method::GET, part)
        .header("Range", format!("bytes={}-", c.len() + 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{}", c.len()).as_str()
    );
    // HEAD of a part: its length and that ranges are accepted, no body.
    let r = env.req(Method::HEAD, part).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], c.len().to_string().as_str());
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert!(r.bytes().await.unwrap().is_empty());
    // A part the file does not have, and HEAD without ?path=.
    let (s, _) = get_json(&env, &format!("{EXPORT}/files/{id}?path=other.csv")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let r = env
        .req(Method::HEAD, &format!("{EXPORT}/files/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/failed")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["data"],
        json!([]),
        "a successful batch without failed rows"
    );

    // Unknown batches: no files and no failed rows (the spec documents no 404 for these lists);
    // an unknown dataset file is 404.
    for list in ["files", "failed"] {
        let (s, v) = get_json(
            &env,
            &format!("{EXPORT}/batches/01HZZZZZZZZZZZZZZZZZZZZZZZ/{list}"),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{list}: {v}");
        assert_eq!(v["data"], json!([]), "{list}");
    }
    assert_eq!(
        get_json(&env, &format!("{EXPORT}/files/nope")).await.0,
        StatusCode::NOT_FOUND
    );

    // Revert: gone from Data Access at once.
    assert_eq!(env.action(&batch, "REVERT").await.0, StatusCode::OK);
    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!([]));
    assert_eq!(
        get_json(&env, &format!("{EXPORT}/files/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    env.wait_status(&batch, &["deleted"]).await;
    assert_eq!(
        get_json(&env, &format!("{EXPORT}/files/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let _ = a;
}

#[tokio::test]
async fn failed_batches_expose_no_files_but_their_failed_rows() {
    let env = start(cfg()).await;
    let (_, batch, b) = env
        .ingest(
            json!({"format": "json"}),
            &[("a.json", b"{\"a\":1}\n{oops\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "failed");
    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!([]));
    // /failed lists the failed files (the spec's `files` shape); ?path= gives each one's failed
    // records as JSON Lines with their errors attached.
    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/failed")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["data"][0]["name"], "a.json");
    assert_eq!(v["_page"]["count"], 1);
    let href = v["data"][0]["_links"]["self"]["href"].as_str().unwrap();
    assert_eq!(
        href,
        format!("{}{EXPORT}/batches/{batch}/failed?path=a%2Ejson", env.base)
    );
    let r = env
        .req(Method::GET, href.strip_prefix(&env.base).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert_eq!(v["data"][0]["length"], text.len().to_string());
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["_row"], 2);
    assert_eq!(lines[0]["_corrupt_record"], "{oops");
    assert_eq!(lines[0]["_filename"], "a.json");
    assert!(lines[0]["_errors"][0]["code"].as_str().is_some(), "{text}");
    // A name the listing does not have: no failed records (the spec documents no 404 here).
    let r = env
        .req(
            Method::GET,
            &format!("{EXPORT}/batches/{batch}/failed?path=other.json"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn preview_shows_the_first_rows() {
    let env = start(cfg()).await;
    let (ds, batch, _) = env
        .ingest(
            json!({"format": "csv"}),
            &[("a.csv", read(&fixture("CRM_profiles.csv")))],
        )
        .await;
    let (s, v) = get_json(
        &env,
        &format!("{IMPORT}/batches/{batch}/datasets/{ds}/preview?format=csv&nrow=3"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The spec's PreviewResponse: the format parameters, the columns, rows keyed by column id.
    assert_eq!(v["formatParams"]["format"], "csv");
    assert_eq!(v["formatParams"]["header"], true);
    let columns = v["preview"]["columns"].as_array().unwrap();
    let first_name = columns
        .iter()
        .find(|c| c["name"] == "F_NAME")
        .expect("an F_NAME column");
    let cid = first_name["cid"].as_str().unwrap();
    let rows = v["preview"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][cid], "Ewart");
    // nrow=0 is the spec's default: the default number of rows, not none.
    let (s, v) = get_json(
        &env,
        &format!("{IMPORT}/batches/{batch}/datasets/{ds}/preview?nrow=0"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["preview"]["rows"].as_array().unwrap().len(), 5);
    let (ds, batch, _) = env
        .ingest(
            json!({"format": "parquet"}),
            &[("p.parquet", parquet_bytes(10))],
        )
        .await;
    let (_, v) = get_json(
        &env,
        &format!("{IMPORT}/batches/{batch}/datasets/{ds}/preview?nrow=2"),
    )
    .await;
    assert_eq!(
        v["preview"],
        json!({"columns": [{"cid": "0", "name": "id"}, {"cid": "1", "name": "name"}],
               "rows": [{"0": "0", "1": "name-0"}, {"0": "1", "1": "name-1"}]})
    );
}

/// The text of a `meta?path=` download.
async fn get_text(env: &Env, path: &str) -> (StatusCode, String) {
    let r = env.req(Method::GET, path).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn row_errors_and_input_files_live_in_the_batch_meta_without_input_names() {
    let env = start(cfg()).await;
    let rows = b"{\"a\":1}\nnot json\n{\"a\":3}\n".to_vec();
    let (_, batch, b) = env
        .ingest_with(
            json!({"format": "json"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 50}),
            &[
                ("secret-name.json", rows.clone()),
                ("ok.json", b"{\"a\":1}\n".to_vec()),
            ],
        )
        .await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["errors"][0]["code"], "INGEST-1212-400");
    assert_eq!(
        b["errors"][0]["description"],
        "Encountered 1 errors in the data. Successfully ingested 3 rows. Please review the associated diagnostic files for more details."
    );
    let meta = format!("{EXPORT}/batches/{batch}/meta");
    let (s, v) = get_json(&env, &format!("{meta}?path=row_errors")).await;
    assert_eq!(s, StatusCode::OK);
    let listed = v["data"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{v}");
    assert_eq!(listed[0]["name"], "parsing_errors_0.json");
    let (_, text) = get_text(
        &env,
        &format!("{meta}?path=row_errors/parsing_errors_0.json"),
    )
    .await;
    assert_eq!(listed[0]["length"], text.len().to_string());
    assert!(
        listed[0]["_links"]["self"]["href"]
            .as_str()
            .unwrap()
            .ends_with("meta?path=row_errors%2Fparsing_errors_0.json")
    );
    let record: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(record["_corrupt_record"], "not json");
    assert_eq!(record["_errors"][0]["code"], "1401");
    assert_eq!(record["_filename"], "parsing_errors_0.json");
    assert!(!text.contains("secret-name"), "{text}");
    // The input files, one metadata file each.
    let (_, v) = get_json(&env, &format!("{meta}?path=input_files")).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
    let (_, text) = get_text(&env, &format!("{meta}?path=input_files/input_file_1.json")).await;
    assert_eq!(text, "{\"path\":\"secret-name.json\"}\n");
    // A path that is not there.
    let (s, _) = get_json(&env, &format!("{meta}?path=nothing")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get_json(&env, &format!("{meta}?path=row_errors/x.json")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Without diagnostics there are no row errors, and one terse error.
    let (_, batch, b) = env
        .ingest(json!({"format": "json"}), &[("secret-name.json", rows)])
        .await;
    assert_eq!(b["status"], "failed");
    assert!(
        !b["errors"][0]["description"]
            .to_string()
            .contains("secret-name")
    );
    let (_, v) = get_json(
        &env,
        &format!("{EXPORT}/batches/{batch}/meta?path=row_errors"),
    )
    .await;
    assert_eq!(v["data"], json!([]));
}

#[tokio::test]
async fn batch_file_lists_page_and_datasets_preview_their_rows() {
    let env = start(cfg()).await;
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                format!("f{i}.json"),
                format!("{{\"n\":{i}}}\n").into_bytes(),
            )
        })
        .collect();
    let named: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let (ds, batch, _) = env.ingest(json!({"format": "json"}), &named).await;

    // Two per page: three pages, `_links.next` until the last.
    let mut seen = Vec::new();
    let mut path = format!("{EXPORT}/batches/{batch}/files?limit=2");
    loop {
        let (s, v) = get_json(&env, &path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["_page"]["limit"], 2);
        for f in v["data"].as_array().unwrap() {
            assert_eq!(f["dataSetId"], ds);
            assert!(
                f["dataSetViewId"].as_str().is_some_and(|s| !s.is_empty()),
                "{f}"
            );
            seen.push(f["name"].as_str().unwrap().to_owned());
        }
        match v["_links"]["next"]["href"].as_str() {
            Some(next) => path = next.strip_prefix(&env.base).unwrap().to_owned(),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["f0.json", "f1.json", "f2.json", "f3.json", "f4.json"]
    );
    // A page that ends exactly at the last file has no next; one that ends before it does.
    for (query, names, next) in [
        ("limit=5", 5, false),
        ("limit=4", 4, true),
        ("start=4&limit=1", 1, false),
        ("start=5", 0, false),
    ] {
        let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files?{query}")).await;
        assert_eq!(s, StatusCode::OK, "{query}");
        assert_eq!(v["data"].as_array().unwrap().len(), names, "{query}: {v}");
        assert_eq!(v["_links"]["next"].is_object(), next, "{query}: {v}");
    }
    // A limit over 100 is capped; 0 and garbage are the default (the spec documents no 400).
    for (query, limit) in [
        ("limit=500", 100),
        ("limit=0", 100),
        ("limit=x", 100),
        ("limit=3", 3),
    ] {
        let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files?{query}")).await;
        assert_eq!(s, StatusCode::OK, "{query}");
        assert_eq!(v["_page"]["limit"], limit, "{query}");
    }
    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files?start=-1")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        5,
        "start=-1 reads from the first"
    );

    // The dataset preview: the dataset's rows, from its successful batches.
    let (s, v) = get_json(&env, &format!("{EXPORT}/datasets/{ds}/preview")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut numbers: Vec<i64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["n"].as_i64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, [0, 1, 2, 3, 4]);
    let (s, _) = get_json(
        &env,
        &format!("{EXPORT}/datasets/000000000000000000000000/preview"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
