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
    assert_eq!(v["data"], json!([]));

    // Unknown ids.
    assert_eq!(
        get_json(
            &env,
            &format!("{EXPORT}/batches/01HZZZZZZZZZZZZZZZZZZZZZZZ/files")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get_json(
            &env,
            &format!("{EXPORT}/batches/01HZZZZZZZZZZZZZZZZZZZZZZZ/failed")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
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
    let (_, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/failed")).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["row"], 2);
    assert!(
        v["data"][0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("a.json")
    );
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
    // A limit over 100 is capped; 0 and garbage are refused.
    let (_, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files?limit=500")).await;
    assert_eq!(v["_page"]["limit"], 100);
    for bad in ["limit=0", "limit=x", "start=-1"] {
        let (s, _) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }

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
