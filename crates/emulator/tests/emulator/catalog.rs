//! Catalog: batches and datasets, maps keyed by id, filters and paging.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

async fn get_json(env: &Env, path: &str) -> (StatusCode, Value) {
    let r = env.req(Method::GET, path).send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A Catalog list's answer to `query`: its status, the ids in the order the answer sends them
/// (a parsed map would sort them), and the answer.
async fn listed(env: &Env, query: &str) -> (StatusCode, Vec<String>, Value) {
    let r = env
        .req(Method::GET, &format!("{CATALOG}/{query}"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let mut ids: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    ids.sort_by_key(|id| text.find(&format!("\"{id}\":")));
    (status, ids, v)
}

#[tokio::test]
async fn datasets_are_created_and_read_back() {
    let env = start(cfg()).await;
    let r = env
        .req(Method::POST, &format!("{CATALOG}/dataSets"))
        .json(&json!({
            "name": "CRM profiles",
            "schemaRef": {"id": "https://ns.adobe.com/tenant/schemas/abc", "contentType": "application/vnd.adobe.xed+json;version=1"},
            "tags": {"unifiedProfile": ["enabled:true", "isUpsert:true"]},
            "description": "from the guide",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let reference = v[0].as_str().unwrap();
    let id = reference.strip_prefix("@/dataSets/").unwrap();
    assert_eq!(id.len(), 24);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    let (s, v) = get_json(&env, &format!("{CATALOG}/dataSets/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    let d = &v[id];
    assert_eq!(d["name"], "CRM profiles");
    assert_eq!(
        d["schemaRef"]["id"],
        "https://ns.adobe.com/tenant/schemas/abc"
    );
    assert_eq!(
        d["tags"]["unifiedProfile"],
        json!(["enabled:true", "isUpsert:true"])
    );
    assert_eq!(d["description"], "from the guide");
    assert!(d["created"].as_i64().unwrap() > 1_600_000_000_000);
    // ensure_dataset: exactly this id, idempotent.
    env.emu()
        .ensure_dataset("folder-orders", "orders")
        .await
        .unwrap();
    env.emu()
        .ensure_dataset("folder-orders", "orders")
        .await
        .unwrap();
    assert!(env.emu().ensure_dataset("bad/id", "x").await.is_err());
    let (_, v) = get_json(&env, &format!("{CATALOG}/dataSets")).await;
    let ids: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(ids.len(), 2);
    let (_, v) = get_json(&env, &format!("{CATALOG}/dataSets?name=orders")).await;
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["folder-orders"]
    );
    // Batches can target it.
    env.create_batch("folder-orders", json!({"format": "json"}))
        .await;
    // Refusals.
    assert_eq!(
        get_json(
            &env,
            &format!("{CATALOG}/dataSets/000000000000000000000000")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    for body in [
        json!({"name": "x"}),
        json!({"schemaRef": {"id": "s"}}),
        json!({"name": "x", "schemaRef": {"id": "s"}, "tags": {"a": 1}}),
    ] {
        let r = env
            .req(Method::POST, &format!("{CATALOG}/dataSets"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
}

#[tokio::test]
async fn batches_are_listed_with_filters_and_pages() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let other = env.dataset().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let (s, b) = env
            .create_batch_raw(json!({"datasetId": ds, "inputFormat": {"format": "json"}, "externalId": format!("ext-{i}")}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        ids.push(b["id"].as_str().unwrap().to_owned());
    }
    let lone = env.create_batch(&other, json!({"format": "json"})).await;
    env.action(&ids[0], "ABORT").await;

    let (s, v) = get_json(&env, &format!("{CATALOG}/batches?dataSet={ds}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_object().unwrap().len(), 20, "default page is 20");
    let (_, v) = get_json(&env, &format!("{CATALOG}/batches?dataSet={ds}&limit=100")).await;
    assert_eq!(v.as_object().unwrap().len(), 25);
    let (_, v) = get_json(&env, &format!("{CATALOG}/batches?limit=1000")).await;
    assert_eq!(v.as_object().unwrap().len(), 26, "limit is capped at 100");
    // Newest first by default and with desc:created; paging with start.
    let (_, v) = get_json(
        &env,
        &format!("{CATALOG}/batches?dataSet={ds}&limit=5&orderBy=desc:created"),
    )
    .await;
    let mut got: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    got.sort();
    let mut want: Vec<String> = ids[20..].to_vec();
    want.sort();
    assert_eq!(got, want);
    let (_, v) = get_json(
        &env,
        &format!("{CATALOG}/batches?dataSet={ds}&limit=5&start=5&orderBy=asc:created"),
    )
    .await;
    let mut got: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    got.sort();
    assert_eq!(got, ids[5..10].to_vec());
    // The keys come in the requested order on the wire.
    let text = env
        .req(
            Method::GET,
            &format!("{CATALOG}/batches?dataSet={ds}&limit=3&orderBy=desc:created"),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let positions: Vec<usize> = [&ids[24], &ids[23], &ids[22]]
        .iter()
        .map(|id| text.find(&format!("\"{id}\":{{")).expect("key present"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    // Filters.
    let (_, v) = get_json(&env, &format!("{CATALOG}/batches?externalId=ext-7")).await;
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&ids[7]]
    );
    assert_eq!(v[&ids[7]]["externalId"], "ext-7");
    let (_, v) = get_json(&env, &format!("{CATALOG}/batches?status=aborted")).await;
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&ids[0]]
    );
    let (_, v) = get_json(
        &env,
        &format!("{CATALOG}/batches?dataSet={other}&status=loading"),
    )
    .await;
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&lone]
    );
    let (_, v) = get_json(
        &env,
        &format!("{CATALOG}/batches?dataSet={other}&status=success"),
    )
    .await;
    assert_eq!(v, json!({}));
    // Refusals.
    assert_eq!(
        get_json(&env, &format!("{CATALOG}/batches?orderBy=sideways:created"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get_json(&env, &format!("{CATALOG}/batches?limit=0"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get_json(
            &env,
            &format!("{CATALOG}/batches/01HZZZZZZZZZZZZZZZZZZZZZZZ")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

/// Issue #18 item 3: the fields clients read on batches and datasets.
#[tokio::test]
async fn batches_and_datasets_carry_the_fields_clients_read() {
    let env = start(cfg()).await;
    let r = env
        .req(Method::POST, &format!("{CATALOG}/dataSets"))
        .json(&json!({
            "name": "spelled as the docs do",
            "schemaRef": {"id": "https://ns.adobe.com/tenant/schemas/abc", "contentType": "application/vnd.adobe.xed+json;version=1"},
            "tags": {"unifiedProfile": ["enabled: true", "isUpsert: true"]},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let ds = v[0]
        .as_str()
        .unwrap()
        .strip_prefix("@/dataSets/")
        .unwrap()
        .to_owned();

    let (_, v) = get_json(&env, &format!("{CATALOG}/dataSets/{ds}")).await;
    let d = &v[&ds];
    assert_eq!(d["createdClient"], "test-key", "{d}");
    assert_eq!(d["createdUser"], "test-key@AdobeID", "{d}");
    assert_eq!(d["classification"]["managedBy"], "CUSTOMER", "{d}");
    assert!(d["classification"]["dataBehavior"].is_string(), "{d}");
    assert_eq!(d["viewId"].as_str().map(str::len), Some(24), "{d}");
    assert_eq!(d["files"], format!("@/dataSetFiles?dataSetId={ds}"), "{d}");
    assert!(d.get("lastBatchId").is_none(), "no batch yet: {d}");

    // Upsert tags with the space are recognised: a JSON batch is refused as it is for
    // the spelling without the space.
    let (status, created) = env
        .create_batch_raw(json!({"datasetId": ds, "inputFormat": {"format": "json"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let batch = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["externalId"], batch.as_str(), "defaults to the id");
    assert_eq!(created["createdClient"], "test-key");
    assert!(
        created["sandboxId"].as_str().is_some_and(|s| s.len() == 36),
        "{created}"
    );
    let first_version = created["version"].clone();
    assert_eq!(
        env.put(&batch, &ds, "a.json", b"{\"a\":1}\n".to_vec())
            .await,
        StatusCode::OK
    );
    let (s, _) = env.action(&batch, "COMPLETE").await;
    assert_eq!(s, StatusCode::OK);
    let b = env.wait_status(&batch, &["success", "failed"]).await;
    assert_eq!(
        b["status"], "failed",
        "an upsert dataset takes Parquet only: {b}"
    );
    assert!(b["errors"].to_string().contains("upsert"), "{b}");
    assert_ne!(b["version"], first_version, "the version moves: {b}");

    let (_, v) = get_json(&env, &format!("{CATALOG}/dataSets/{ds}")).await;
    assert_eq!(v[&ds]["lastBatchId"], batch.as_str());
    assert_eq!(v[&ds]["lastBatchStatus"], "failed");
    let (_, listed) = get_json(&env, &format!("{CATALOG}/dataSets")).await;
    assert_eq!(listed[&ds]["lastBatchId"], batch.as_str());

    // A client's own externalId is kept.
    let (_, own) = env
        .create_batch_raw(
            json!({"datasetId": ds, "inputFormat": {"format": "parquet"}, "externalId": "mine"}),
        )
        .await;
    assert_eq!(own["externalId"], "mine");
    assert_eq!(
        own["sandboxId"], created["sandboxId"],
        "one sandbox, one id"
    );
}

/// Issue #18 item 4: Catalog lists honour the documented filters (any top-level field, comma
/// lists, `!` negation, `property=` comparisons, `properties=`, `tags=` with `*`, several
/// `orderBy` fields), and refuse what they cannot read rather than ignore it (ignoring would
/// answer the whole collection as if it were the filtered one).
#[tokio::test]
async fn catalog_lists_honour_the_documented_filters() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let other = env.dataset().await;
    let loading = env.create_batch(&ds, json!({"format": "json"})).await;
    let (done, _) = env
        .ingest_into(
            &other,
            json!({"format": "json"}),
            json!({}),
            &[("a.json", b"{\"a\":1}\n".to_vec())],
        )
        .await;
    for (query, expected) in [
        (
            format!("batches?status=!success&dataSet={ds},{other}"),
            vec![loading.clone()],
        ),
        (format!("batches?dataSet=!{ds}"), vec![done.clone()]),
        (
            format!("batches?property=status==success&dataSet={other}"),
            vec![done.clone()],
        ),
        (
            format!("batches?property=status!=success&dataSet={ds}"),
            vec![loading.clone()],
        ),
        (
            format!("batches?property=metrics.inputRecordCount>=1&dataSet={ds},{other}"),
            vec![done.clone()],
        ),
        (
            format!("batches?property=externalId~^{}$", &loading[..]),
            vec![loading.clone()],
        ),
        (format!("batches?batch={done}"), vec![done.clone()]),
        (
            format!("batches?dataSet={ds},{other}&orderBy=asc:created"),
            vec![loading.clone(), done.clone()],
        ),
        (
            format!("batches?dataSet={ds},{other}&orderBy=desc:status,created"),
            vec![done.clone(), loading.clone()],
        ),
        (
            format!("batches?dataSet={ds},{other}&orderBy=asc:created&start=1&limit=1"),
            vec![done.clone()],
        ),
        (format!("dataSets?property=id=={ds}"), vec![ds.clone()]),
        (
            format!("dataSets?id={ds},{other}&property=lastBatchStatus==success"),
            vec![other.clone()],
        ),
        (
            format!("dataSets?id={ds},{other}&property=!lastBatchStatus"),
            vec![],
        ),
    ] {
        let (s, ids, v) = listed(&env, &query).await;
        assert_eq!(s, StatusCode::OK, "{query}: {v}");
        assert_eq!(ids, expected, "{query}");
    }
    // dataSetFiles: the files of successful batches, by dataset or batch.
    let (s, files, v) = listed(&env, &format!("dataSetFiles?dataSetId={other}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(files.len(), 1, "{v}");
    let file = &v[&files[0]];
    assert_eq!(file["batchId"], done.as_str());
    assert_eq!(file["name"], "a.json");
    assert_eq!(file["records"], 1);
    let (_, files, _) = listed(&env, &format!("dataSetFiles?dataSetId={ds}")).await;
    assert!(files.is_empty(), "a loading batch has no dataset files yet");
    let (_, files, _) = listed(
        &env,
        &format!("dataSetFiles?batchId={done}&property=records>=1"),
    )
    .await;
    assert_eq!(files.len(), 1);
    // properties= trims each object to the fields named.
    let (_, v) = get_json(
        &env,
        &format!("{CATALOG}/batches?batch={done}&properties=status,externalId"),
    )
    .await;
    assert_eq!(v[&done], json!({"status": "success", "externalId": done}));
    // tags= with *: a dataset switched to Profile is found by its tag.
    let r = env
        .req(Method::PATCH, &format!("{CATALOG}/dataSets/{other}"))
        .header("Content-Type", "application/json")
        .body(json!({"tags": {"unifiedProfile": ["enabled:true"]}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for (query, expected) in [
        ("dataSets?tags=unifiedProfile:*", vec![other.clone()]),
        ("dataSets?tags=unifiedProfile:enabled*", vec![other.clone()]),
        ("dataSets?tags=unifiedProfile:disabled*", vec![]),
    ] {
        let (s, ids, v) = listed(&env, query).await;
        assert_eq!(s, StatusCode::OK, "{query}: {v}");
        assert_eq!(ids, expected, "{query}");
    }
    // What cannot be read is refused with a reason.
    for query in [
        "batches?property=status=failed",
        "batches?property=name~(",
        "batches?orderBy=up:created",
        "batches?tags=nonamespace",
        "batches?createdAfter=yesterday",
        "dataSets?limit=0",
    ] {
        let (s, v) = get_json(&env, &format!("{CATALOG}/{query}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert!(
            v["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{query}: {v}"
        );
    }
}

/// Issue #18 item 4: `PATCH /catalog/dataSets/{id}`, as JSON Patch (the docs' way of switching
/// Profile and upsert on) and as a merge.
#[tokio::test]
async fn datasets_are_patched_with_json_patch_and_merge() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let patch = |content_type: &'static str, body: Value| {
        env.req(Method::PATCH, &format!("{CATALOG}/dataSets/{ds}"))
            .header("Content-Type", content_type)
            .body(body.to_string())
            .send()
    };
    // The spec's own example.
    let r = patch(
        "application/json-patch+json",
        json!([
            {"op": "add", "path": "/tags/unifiedProfile", "value": ["enabled: true", "isUpsert: true"]},
            {"op": "add", "path": "/tags/unifiedIdentity", "value": ["enabled:true"]},
        ]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!([format!("@/dataSets/{ds}")]));
    let (_, v) = get_json(&env, &format!("{CATALOG}/dataSets/{ds}")).await;
    assert_eq!(
        v[&ds]["tags"]["unifiedProfile"],
        json!(["enabled: true", "isUpsert: true"])
    );
    // Upsert is now on: a JSON batch is refused at processing.
    let (batch, b) = env
        .ingest_into(
            &ds,
            json!({"format": "json"}),
            json!({}),
            &[("a.json", b"{\"a\":1}\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "failed", "{batch}: {b}");
    assert!(b["errors"].to_string().contains("upsert"), "{b}");

    // A merge: the name changes, a field goes, the tags merge by namespace.
    let r = patch(
        "application/json",
        json!({"name": "renamed", "description": "d", "tags": {"unifiedIdentity": null}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, v) = get_json(&env, &format!("{CATALOG}/dataSets/{ds}")).await;
    let d = &v[&ds];
    assert_eq!(d["name"], "renamed");
    assert_eq!(d["description"], "d");
    assert!(d["tags"].get("unifiedIdentity").is_none(), "{d}");
    assert!(d["tags"].get("unifiedProfile").is_some(), "{d}");

    // Refused: what cannot change, what cannot be done, what does not exist.
    for (content_type, body) in [
        ("application/json", json!({"schemaRef": {"id": "x"}})),
        ("application/json", json!({"name": ""})),
        (
            "application/json-patch+json",
            json!([{"op": "move", "from": "/name", "path": "/x"}]),
        ),
        (
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/nothing", "value": 1}]),
        ),
        ("application/json-patch+json", json!({"op": "add"})),
        ("application/json", json!({"tags": {"x": "not a list"}})),
    ] {
        let r = patch(content_type, body.clone()).await.unwrap();
        let s = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["detail"].as_str().unwrap().contains(&ds), "{v}");
    }
    let r = env
        .req(
            Method::PATCH,
            &format!("{CATALOG}/dataSets/0123456789abcdef01234567"),
        )
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Issue #18 item 8, in part: a method a known path does not take answers the platform's JSON
/// error shape, not an empty 405.
#[tokio::test]
async fn an_unsupported_method_answers_a_json_error() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    for (method, path) in [
        (Method::PUT, format!("{CATALOG}/dataSets/{ds}")),
        (Method::DELETE, format!("{CATALOG}/batches")),
        (Method::GET, format!("{IMPORT}/batches")),
    ] {
        let r = env.req(method.clone(), &path).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], 405, "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains(method.as_str()),
            "{v}"
        );
        assert!(v["title"].is_string() && v["type"].is_string(), "{v}");
    }
}

/// Issue #18 item 4: `/catalog/lastBatches`, per dataset its last, last successful and last
/// failed batch.
#[tokio::test]
async fn last_batches_name_each_datasets_last_good_and_bad_batch() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let idle = env.dataset().await;
    let (good, b) = env
        .ingest_into(
            &ds,
            json!({"format": "json"}),
            json!({}),
            &[("a.json", b"{\"a\":1}\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b}");
    let (bad, b) = env
        .ingest_into(
            &ds,
            json!({"format": "json"}),
            json!({}),
            &[("b.json", b"not json\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b}");
    let loading = env.create_batch(&ds, json!({"format": "json"})).await;

    let (s, v) = get_json(&env, &format!("{CATALOG}/lastBatches")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let last = &v[&ds];
    assert_eq!(last["lastBatchId"], loading.as_str(), "{v}");
    assert_eq!(last["lastBatchStatus"], "loading", "{v}");
    assert_eq!(last["lastSuccessfulBatchId"], good.as_str(), "{v}");
    assert_eq!(last["lastFailedBatchId"], bad.as_str(), "{v}");
    assert!(
        v.get(&idle).is_none(),
        "a dataset without batches is left out: {v}"
    );

    let (s, v) = get_json(&env, &format!("{CATALOG}/lastBatches?dataSetId={idle}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({}));
    let (s, _) = get_json(
        &env,
        &format!("{CATALOG}/lastBatches?lastBatchStatus=failed"),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "an unsupported filter is refused"
    );
}

/// A dataset's files walked a page at a time (the store reads only the page asked for) are
/// every file once, newest first: the list one answer gives when it is filtered and sorted
/// whole (an `orderBy` equal to the default order takes that path).
#[tokio::test]
async fn dataset_files_walked_page_by_page_are_each_file_once_newest_first() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let other = env.dataset().await;
    let row = || b"{\"a\":1}\n".to_vec();
    for names in [
        &["a.json", "b.json", "c.json"][..],
        &["d.json", "e.json"][..],
    ] {
        let files: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (*n, row())).collect();
        env.ingest_into(&ds, json!({"format": "json"}), json!({}), &files)
            .await;
    }
    env.ingest_into(
        &other,
        json!({"format": "json"}),
        json!({}),
        &[("f.json", row())],
    )
    .await;

    let mut walked = Vec::new();
    for start in (0..).step_by(2) {
        let query = format!("dataSetFiles?dataSetId={ds}&limit=2&start={start}");
        let (status, ids, v) = listed(&env, &query).await;
        assert_eq!(status, StatusCode::OK, "{query}: {v}");
        if ids.is_empty() {
            break;
        }
        walked.extend(ids);
    }
    let (_, whole, v) = listed(
        &env,
        &format!("dataSetFiles?dataSetId={ds}&orderBy=desc:created&limit=100"),
    )
    .await;
    assert_eq!(whole.len(), 5, "{v}");
    assert_eq!(
        walked, whole,
        "the pages, one after another, are the whole list"
    );
    let created: Vec<i64> = whole
        .iter()
        .map(|id| v[id]["created"].as_i64().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );
    // Without a dataset, every dataset's files; trimmed by properties= as any page.
    let (_, all, v) = listed(&env, "dataSetFiles?limit=100&properties=name").await;
    let mut names: Vec<&str> = all
        .iter()
        .map(|id| match v[id].as_object() {
            Some(o) if o.len() == 1 => o["name"].as_str().unwrap(),
            _ => panic!("not trimmed to its name: {}", v[id]),
        })
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["a.json", "b.json", "c.json", "d.json", "e.json", "f.json"]
    );
}
