//! The API client's tests: its URLs, a body that must match its length, batches sorted as asked.

use super::setup::config;
use super::*;
use crate::api::types::BatchStatus;

#[test]
fn urls() {
    let client = ApiClient::new(config("http://127.0.0.1:8089/")).unwrap();
    assert_eq!(
        client
            .file_url("op", "01H X", "D/1", "a b/c#.json", Some("COMPLETE"))
            .unwrap(),
        "http://127.0.0.1:8089/data/foundation/import/batches/01H%20X/datasets/D%2F1/files/a%20b/c%23.json?action=COMPLETE"
    );
    assert_eq!(
        client.url(
            Service::Catalog,
            "batches",
            &[("dataSet", "d"), ("externalId", "a&b=c d")]
        ),
        "http://127.0.0.1:8089/data/foundation/catalog/batches?dataSet=d&externalId=a%26b%3Dc%20d"
    );
    let e = client
        .file_url("PUT file ../x into batch B", "B", "D", "../x", None)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert!(e.to_string().contains("\"..\" segment"), "{e}");
}

#[test]
fn body_length_must_match() {
    let body = Body::from(vec![0u8; 10]);
    assert!(check_body_len("op", &body, 10).is_ok());
    assert!(check_body_len("op", &body, 11).is_err());
    let stream = Body::stream(futures::stream::empty::<Result<Vec<u8>, std::io::Error>>());
    assert!(
        check_body_len("op", &stream, 11).is_ok(),
        "a stream's length is unknown"
    );
}

fn batch(id: &str, created: Option<i64>) -> BatchInfo {
    BatchInfo {
        id: id.into(),
        status: BatchStatus::Loading,
        external_id: None,
        dataset_id: None,
        created,
        updated: None,
        started: None,
        completed: None,
        metrics: Default::default(),
        errors: vec![],
        replay: None,
        tags: Default::default(),
        raw: Value::Null,
    }
}

#[test]
fn sorting_follows_order_by() {
    let mut list = vec![
        batch("A", Some(2)),
        batch("B", Some(3)),
        batch("C", Some(1)),
    ];
    sort_batches(&mut list, "desc:created");
    let ids: Vec<_> = list.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["B", "A", "C"]);
    sort_batches(&mut list, "created");
    let ids: Vec<_> = list.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["C", "A", "B"]);
    sort_batches(&mut list, "desc:name");
    let ids: Vec<_> = list.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["C", "A", "B"], "unknown fields leave the order alone");
}
