//! `ApiClient`: one async fn per platform endpoint (Import, Catalog, Data Access; the Schema
//! Registry's lookup is `registry.rs`'s), over one
//! pooled `reqwest::Client`. It owns URLs (percent-encoding every path segment), the common
//! headers, token renewal on 401, per-request debug logs and turning answers into
//! `ApiError`s. It does not retry (apart from the single retry after a token renewal) and
//! keeps no state about batches: retry policy and bookkeeping are the daemon's. It never logs
//! headers and never puts a credential into a URL, a log line or an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use percent_encoding::utf8_percent_encode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, RANGE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::answer::{Answer, discard, read_body, read_error, read_json};
use super::auth::{Auth, Secret};
use super::body::Body;
use super::error::{ApiError, ErrorKind};
use super::meta::{self, MetaDir, MetaFile, RowError};
use super::paths::{ENCODE, content_range, encode_file_path, received_from_range, segment};
use super::setup::{self, ClientConfig, check_url};
use super::types::{
    BatchAction, BatchInfo, BatchQuery, CreateBatch, DataSetFile, Dataset, SchemaRef,
};
use super::wire;

/// The platform's API. Cheap to clone: clones share one connection pool and one token cache.
#[derive(Clone)]
pub struct ApiClient {
    pub(super) inner: Arc<Inner>,
    /// x-api-key, x-gw-ims-org-id, x-sandbox-name: sent on every platform call (not to IMS).
    /// Apart from `inner` so that a client for another sandbox shares the connections and
    /// the token ([`ApiClient::in_sandbox`]).
    pub(super) headers: Arc<HeaderMap>,
}

pub(super) struct Inner {
    /// For the platform's endpoint.
    http: reqwest::Client,
    /// For the IMS token URL: the same client, unless only one of the two is on loopback.
    ims_http: reqwest::Client,
    /// Without a trailing slash.
    endpoint: String,
    auth: Auth,
    request_timeout: Duration,
}

#[derive(Clone, Copy)]
pub(super) enum Service {
    Import,
    Catalog,
    Export,
    SchemaRegistry,
}

impl Service {
    fn base(self) -> &'static str {
        match self {
            Service::Import => "/data/foundation/import",
            Service::Catalog => "/data/foundation/catalog",
            Service::Export => "/data/foundation/export",
            Service::SchemaRegistry => "/data/foundation/schemaregistry",
        }
    }
}

/// The slowest upload rate that is still not a stall. A whole 256 MB file at this rate takes
/// about 17 minutes; a fixed timeout sized for JSON calls would cut every large upload.
const MIN_UPLOAD_BYTES_PER_SEC: u64 = 256 * 1024;

const OCTET_STREAM: &str = "application/octet-stream";

/// How many pages of a batch's Data Access listing are asked at once after its first: on the
/// platform each is a round trip of tens of ms, and a batch of 1,500 files has 15 of them.
/// Eight keeps the pages asked past the end (empty answers) few.
const LISTING_PAGES_AT_ONCE: usize = 8;

impl ApiClient {
    /// Checks the configuration and builds the connection pool. Fails (with
    /// [`ApiError::is_config`]) on an empty org/sandbox/api key/token, a non-https endpoint off
    /// loopback, or an unreadable or empty CA file. Makes no network call.
    pub fn new(cfg: ClientConfig) -> Result<ApiClient, ApiError> {
        const OP: &str = "set up the platform client";
        let endpoint = cfg.endpoint.trim().trim_end_matches('/').to_string();
        check_url(OP, "endpoint", &endpoint)?;
        let headers = setup::platform_headers(OP, &cfg)?;
        setup::check_token(OP, &cfg.token)?;
        let (http, ims_http) = setup::http_clients(OP, &cfg, &endpoint)?;
        Ok(ApiClient {
            inner: Arc::new(Inner {
                http,
                ims_http,
                endpoint,
                auth: Auth::new(cfg.token),
                request_timeout: cfg.request_timeout,
            }),
            headers: Arc::new(headers),
        })
    }

    // ---- Import ---------------------------------------------------------------------------

    /// `POST /batches`. Not idempotent: after an uncertain failure, look the batch up with
    /// [`ApiClient::find_batch_by_external_id`] before creating another.
    pub async fn create_batch(&self, req: &CreateBatch) -> Result<BatchInfo, ApiError> {
        let op = match &req.external_id {
            Some(x) => format!(
                "create a batch for dataset {} (externalId {x})",
                req.dataset_id
            ),
            None => format!("create a batch for dataset {}", req.dataset_id),
        };
        if req.partial_ingestion_percent.is_some_and(|p| p > 100) {
            return Err(ApiError::invalid_request(
                op,
                "partial ingestion percent must be between 0 and 100",
            ));
        }
        let url = self.url(Service::Import, "batches", &[]);
        let builder = self
            .request(Method::POST, url)
            .json(&wire::CreateBatchBody::new(req));
        let resp = self.execute(&op, builder).await?;
        let v = read_json(&op, resp, Answer::Platform).await?;
        wire::batch_from_response(&v)
            .and_then(|b| b.ok_or_else(|| "no batch in the answer".to_string()))
            .map_err(|msg| ApiError::invalid_response(op, msg))
    }

    /// `PUT …/files/{file_path}`: a whole file (≤ 256 MB) in one request. `body` is streamed and
    /// must yield exactly `len` bytes. Idempotent: it replaces the file at that path.
    pub async fn put_file(
        &self,
        batch_id: &str,
        dataset_id: &str,
        file_path: &str,
        body: Body,
        len: u64,
    ) -> Result<(), ApiError> {
        let op = format!("PUT file {file_path} into batch {batch_id}");
        check_body_len(&op, &body, len)?;
        let url = self.file_url(&op, batch_id, dataset_id, file_path, None)?;
        let builder = self
            .request(Method::PUT, url)
            .header(CONTENT_TYPE, OCTET_STREAM)
            // Set by hand: a streamed body has no known length, and without this reqwest would
            // send it chunked.
            .header(CONTENT_LENGTH, len)
            .timeout(self.upload_timeout(len))
            .body(body.into_inner());
        let resp = self.execute(&op, builder).await?;
        discard(resp).await;
        Ok(())
    }

    /// `POST …/files/{file_path}?action=INITIALIZE`: starts a large (chunked) file.
    pub async fn initialize_file(
        &self,
        batch_id: &str,
        dataset_id: &str,
        file_path: &str,
    ) -> Result<(), ApiError> {
        let op = format!("INITIALIZE large file {file_path} in batch {batch_id}");
        self.file_action(&op, batch_id, dataset_id, file_path, "INITIALIZE")
            .await
    }

    /// `PATCH …/files/{file_path}` with `Content-Range: bytes {start}-{start+len-1}/{total}`.
    /// Re-sending a chunk with the same range and bytes is harmless.
    #[allow(clippy::too_many_arguments)] // one per part of the request; a struct would only rename them
    pub async fn patch_chunk(
        &self,
        batch_id: &str,
        dataset_id: &str,
        file_path: &str,
        start: u64,
        len: u64,
        total: u64,
        body: Body,
    ) -> Result<(), ApiError> {
        let op =
            format!("PATCH bytes {start}+{len} of {total} of file {file_path} in batch {batch_id}");
        let range =
            content_range(start, len, total).map_err(|m| ApiError::invalid_request(&op, m))?;
        check_body_len(&op, &body, len)?;
        let url = self.file_url(&op, batch_id, dataset_id, file_path, None)?;
        let builder = self
            .request(Method::PATCH, url)
            .header(CONTENT_TYPE, OCTET_STREAM)
            .header(CONTENT_LENGTH, len)
            .header("content-range", range)
            .timeout(self.upload_timeout(len))
            .body(body.into_inner());
        // The answer ({"name", "sizeInBytes"}) adds nothing to the 200 itself.
        let resp = self.execute(&op, builder).await?;
        discard(resp).await;
        Ok(())
    }

    /// `HEAD …/files/{file_path}`: how many bytes of a large file have arrived, as a contiguous
    /// prefix (`Range: bytes=0-{n-1}` → n; no header → 0). Resume uploading from there.
    pub async fn received_prefix(
        &self,
        batch_id: &str,
        dataset_id: &str,
        file_path: &str,
    ) -> Result<u64, ApiError> {
        let op = format!("HEAD file {file_path} in batch {batch_id} (bytes received)");
        let url = self.file_url(&op, batch_id, dataset_id, file_path, None)?;
        let resp = self.execute(&op, self.request(Method::HEAD, url)).await?;
        let header = match resp.headers().get(RANGE) {
            None => return Ok(0),
            Some(v) => v
                .to_str()
                .map_err(|_| ApiError::invalid_response(&op, "Range header is not ASCII"))?,
        };
        received_from_range(header).map_err(|m| ApiError::invalid_response(op, m))
    }

    /// `POST …/files/{file_path}?action=COMPLETE`: all chunks sent (201, or 200 per the spec).
    /// Gaps or conflicting overlaps are reported here (400).
    pub async fn complete_file(
        &self,
        batch_id: &str,
        dataset_id: &str,
        file_path: &str,
    ) -> Result<(), ApiError> {
        let op = format!("COMPLETE large file {file_path} in batch {batch_id}");
        self.file_action(&op, batch_id, dataset_id, file_path, "COMPLETE")
            .await
    }

    /// `POST /batches/{id}?action=…`. A 2xx means *accepted*; poll Catalog for the outcome.
    /// COMPLETE is safe to repeat. The answer's body (empty, a Batch, or `1`) is ignored.
    pub async fn batch_action(&self, batch_id: &str, action: BatchAction) -> Result<(), ApiError> {
        let op = format!("{action} batch {batch_id}");
        let url = self.url(
            Service::Import,
            &format!("batches/{}", segment(batch_id)),
            &[("action", action.as_str())],
        );
        let builder = self.request(Method::POST, url).header(CONTENT_LENGTH, 0);
        let resp = self.execute(&op, builder).await?;
        discard(resp).await;
        Ok(())
    }

    // ---- Catalog --------------------------------------------------------------------------

    /// `GET {catalog}/batches/{id}`; `None` when the batch does not exist.
    pub async fn get_batch(&self, batch_id: &str) -> Result<Option<BatchInfo>, ApiError> {
        let op = format!("GET batch {batch_id} from Catalog");
        let url = self.url(
            Service::Catalog,
            &format!("batches/{}", segment(batch_id)),
            &[],
        );
        let Some(v) = self.get_json_or_none(&op, url).await? else {
            return Ok(None);
        };
        wire::batch_from_response(&v).map_err(|msg| ApiError::invalid_response(op, msg))
    }

    /// `GET {catalog}/batches?…`. Results are re-sorted by `created`/`updated` when
    /// `order_by` names one of them (the map Catalog answers with carries no order).
    pub async fn find_batches(&self, query: &BatchQuery) -> Result<Vec<BatchInfo>, ApiError> {
        let limit = query.limit.map(|l| l.to_string());
        let start = query.start.map(|s| s.to_string());
        let params: Vec<(&str, &str)> = [
            ("dataSet", query.dataset_id.as_deref()),
            ("externalId", query.external_id.as_deref()),
            ("status", query.status.as_ref().map(|s| s.as_str())),
            ("limit", limit.as_deref()),
            ("start", start.as_deref()),
            ("orderBy", query.order_by.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        let described: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let op = format!("list batches in Catalog ({})", described.join(", "));
        let url = self.url(Service::Catalog, "batches", &params);
        let resp = self.execute(&op, self.request(Method::GET, url)).await?;
        let v = read_json(&op, resp, Answer::Platform).await?;
        let mut batches =
            wire::batches_from_map(&v).map_err(|msg| ApiError::invalid_response(&op, msg))?;
        if let Some(order) = &query.order_by {
            sort_batches(&mut batches, order);
        }
        Ok(batches)
    }

    /// The newest batch of `dataset_id` whose externalId is `external_id`, if any. Filters
    /// again on our side in case the platform ignores the `externalId` parameter.
    pub async fn find_batch_by_external_id(
        &self,
        dataset_id: &str,
        external_id: &str,
    ) -> Result<Option<BatchInfo>, ApiError> {
        let query = BatchQuery {
            dataset_id: Some(dataset_id.to_string()),
            external_id: Some(external_id.to_string()),
            limit: Some(100),
            order_by: Some("desc:created".to_string()),
            ..BatchQuery::default()
        };
        let batches = self.find_batches(&query).await?;
        Ok(batches.into_iter().find(|b| {
            b.external_id.as_deref() == Some(external_id)
                && b.dataset_id.as_deref().is_none_or(|d| d == dataset_id)
        }))
    }

    /// `POST {catalog}/dataSets`; returns the new dataset's id.
    pub async fn create_dataset(
        &self,
        name: &str,
        schema_ref: Option<&SchemaRef>,
        tags: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Result<String, ApiError> {
        let op = format!("create dataset {name:?}");
        let body = wire::CreateDatasetBody {
            name,
            schema_ref: schema_ref.map(|s| wire::SchemaRefBody {
                id: &s.id,
                content_type: &s.content_type,
            }),
            tags,
        };
        let url = self.url(Service::Catalog, "dataSets", &[]);
        let resp = self
            .execute(&op, self.request(Method::POST, url).json(&body))
            .await?;
        let v = read_json(&op, resp, Answer::Platform).await?;
        wire::dataset_id_from_create(&v).map_err(|msg| ApiError::invalid_response(op, msg))
    }

    /// `GET {catalog}/dataSets/{id}`; `None` when it does not exist.
    pub async fn get_dataset(&self, dataset_id: &str) -> Result<Option<Dataset>, ApiError> {
        let op = format!("GET dataset {dataset_id} from Catalog");
        let url = self.url(
            Service::Catalog,
            &format!("dataSets/{}", segment(dataset_id)),
            &[],
        );
        let Some(v) = self.get_json_or_none(&op, url).await? else {
            return Ok(None);
        };
        wire::dataset_from_response(&v).map_err(|msg| ApiError::invalid_response(op, msg))
    }

    /// `DELETE {catalog}/dataSets/{id}`. batchdrop never deletes a dataset itself; operators'
    /// tools and tests do.
    pub async fn delete_dataset(&self, dataset_id: &str) -> Result<(), ApiError> {
        let op = format!("DELETE dataset {dataset_id} from Catalog");
        let url = self.url(
            Service::Catalog,
            &format!("dataSets/{}", segment(dataset_id)),
            &[],
        );
        let resp = self.execute(&op, self.request(Method::DELETE, url)).await?;
        discard(resp).await;
        Ok(())
    }

    // ---- Data Access ----------------------------------------------------------------------

    /// `GET {export}/batches/{id}/files`: the dataset files a batch produced, every page of
    /// them (Data Access answers at most 100 per request).
    ///
    /// The first page is asked alone (most batches fit in it); after a full one, the next
    /// pages are asked [`LISTING_PAGES_AT_ONCE`] at a time, each by its `start`: a batch of
    /// thousands of files is listed in a few round trips instead of one per hundred files,
    /// and its files are archived that much sooner. A wave ends the listing at its first page
    /// that is not full; the pages asked beyond it are dropped.
    pub async fn list_batch_files(&self, batch_id: &str) -> Result<Vec<DataSetFile>, ApiError> {
        const PAGE: usize = 100;
        // A batch holds at most 25,000 files: more pages than that is a server looping.
        const MAX_PAGES: usize = 25_000 / PAGE + 1;
        let mut files = Vec::new();
        let mut page = 0;
        while page < MAX_PAGES {
            let wave = if page == 0 {
                1
            } else {
                LISTING_PAGES_AT_ONCE.min(MAX_PAGES - page)
            };
            let pages = futures::future::try_join_all(
                (page..page + wave).map(|n| self.batch_files_page(batch_id, n * PAGE, PAGE)),
            )
            .await?;
            for got in pages {
                let full = got.len() >= PAGE;
                files.extend(got);
                if !full {
                    return Ok(files);
                }
            }
            page += wave;
        }
        Err(ApiError::invalid_response(
            format!("list the dataset files of batch {batch_id}"),
            format!("more than {MAX_PAGES} pages of {PAGE} files, beyond a batch's limit"),
        ))
    }

    /// One page of [`ApiClient::list_batch_files`]: up to `limit` dataset files from `start`.
    async fn batch_files_page(
        &self,
        batch_id: &str,
        start: usize,
        limit: usize,
    ) -> Result<Vec<DataSetFile>, ApiError> {
        let (start, limit) = (start.to_string(), limit.to_string());
        let op = format!("list the dataset files of batch {batch_id} (from {start})");
        let url = self.url(
            Service::Export,
            &format!("batches/{}/files", segment(batch_id)),
            &[("start", &start), ("limit", &limit)],
        );
        let resp = self.execute(&op, self.request(Method::GET, url)).await?;
        let v = read_json(&op, resp, Answer::Platform).await?;
        wire::dataset_files(&v).map_err(|msg| ApiError::invalid_response(op, msg))
    }

    /// `GET {export}/files/{id}`: the file's content as the platform sends it (the data, or a
    /// JSON listing of its parts; see [`ApiClient::download_file_part`]).
    pub async fn download_file(&self, data_set_file_id: &str) -> Result<bytes::Bytes, ApiError> {
        let op = format!("download dataset file {data_set_file_id}");
        let url = self.url(
            Service::Export,
            &format!("files/{}", segment(data_set_file_id)),
            &[],
        );
        self.get_bytes(&op, url).await
    }

    /// `GET {export}/files/{id}?path={part}`: one part named in a file's listing.
    pub async fn download_file_part(
        &self,
        data_set_file_id: &str,
        part: &str,
    ) -> Result<bytes::Bytes, ApiError> {
        let op = format!("download part {part} of dataset file {data_set_file_id}");
        let url = self.url(
            Service::Export,
            &format!("files/{}", segment(data_set_file_id)),
            &[("path", part)],
        );
        self.get_bytes(&op, url).await
    }

    /// `GET {export}/batches/{id}/failed`, then each listed file by `?path=`: the failed
    /// records, one JSON object per line as the platform writes them (`_corrupt_record`,
    /// `_errors` and so on), in the listing's order.
    pub async fn failed_rows(&self, batch_id: &str) -> Result<Vec<Value>, ApiError> {
        let op = format!("list the failed files of batch {batch_id}");
        let url = self.url(
            Service::Export,
            &format!("batches/{}/failed", segment(batch_id)),
            &[("limit", "100")],
        );
        let resp = self.execute(&op, self.request(Method::GET, url)).await?;
        let listing = read_json(&op, resp, Answer::Platform).await?;
        let mut rows = Vec::new();
        for file in listing["data"].as_array().into_iter().flatten() {
            let Some(name) = file["name"].as_str() else {
                continue;
            };
            let op = format!("download failed file {name} of batch {batch_id}");
            let url = self.url(
                Service::Export,
                &format!("batches/{}/failed", segment(batch_id)),
                &[("path", name)],
            );
            let bytes = self.get_bytes(&op, url).await?;
            for line in String::from_utf8_lossy(&bytes).lines() {
                if line.trim().is_empty() {
                    continue;
                }
                let row = serde_json::from_str::<Value>(line)
                    .map_err(|e| ApiError::invalid_response(op.clone(), e.to_string()))?;
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// `GET {export}/batches/{id}/meta?path={dir}`: the files of one of the batch's meta
    /// directories (error diagnostics, input files); none when the platform has none.
    pub async fn batch_meta_listing(
        &self,
        batch_id: &str,
        dir: MetaDir,
    ) -> Result<Vec<MetaFile>, ApiError> {
        let op = format!("list the {} of batch {batch_id}", dir.as_str());
        let url = self.url(
            Service::Export,
            &format!("batches/{}/meta", segment(batch_id)),
            &[("path", dir.as_str())],
        );
        match self.get_json_or_none(&op, url).await? {
            None => Ok(Vec::new()),
            Some(v) => meta::meta_listing(&v).map_err(|msg| ApiError::invalid_response(op, msg)),
        }
    }

    /// `GET {export}/batches/{id}/meta?path={dir}/{name}`: the failed rows of one diagnostics
    /// file (`dir` row_errors).
    pub async fn batch_row_errors(
        &self,
        batch_id: &str,
        name: &str,
    ) -> Result<Vec<RowError>, ApiError> {
        let text = self
            .batch_meta_file(batch_id, MetaDir::RowErrors, name)
            .await?;
        Ok(meta::row_errors(&text))
    }

    /// `GET {export}/batches/{id}/meta?path=input_files/{name}`: the input paths it names.
    pub async fn batch_input_paths(
        &self,
        batch_id: &str,
        name: &str,
    ) -> Result<Vec<String>, ApiError> {
        let text = self
            .batch_meta_file(batch_id, MetaDir::InputFiles, name)
            .await?;
        Ok(meta::input_paths(&text))
    }

    async fn batch_meta_file(
        &self,
        batch_id: &str,
        dir: MetaDir,
        name: &str,
    ) -> Result<String, ApiError> {
        let op = format!("download {}/{name} of batch {batch_id}", dir.as_str());
        let path = format!("{}/{name}", dir.as_str());
        let url = self.url(
            Service::Export,
            &format!("batches/{}/meta", segment(batch_id)),
            &[("path", &path)],
        );
        let bytes = self.get_bytes(&op, url).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    // ---- plumbing -------------------------------------------------------------------------

    /// `{endpoint}{service base}/{path}?{query}`; `path` is already encoded, query values are
    /// encoded here.
    pub(super) fn url(&self, service: Service, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}{}/{path}", self.inner.endpoint, service.base());
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.extend(utf8_percent_encode(v, ENCODE));
        }
        url
    }

    fn file_url(
        &self,
        op: &str,
        batch_id: &str,
        dataset_id: &str,
        file_path: &str,
        action: Option<&str>,
    ) -> Result<String, ApiError> {
        let path = encode_file_path(file_path).map_err(|m| ApiError::invalid_request(op, m))?;
        let query: &[(&str, &str)] = match &action {
            Some(a) => &[("action", a)],
            None => &[],
        };
        Ok(self.url(
            Service::Import,
            &format!(
                "batches/{}/datasets/{}/files/{path}",
                segment(batch_id),
                segment(dataset_id)
            ),
            query,
        ))
    }

    async fn file_action(
        &self,
        op: &str,
        batch_id: &str,
        dataset_id: &str,
        file_path: &str,
        action: &str,
    ) -> Result<(), ApiError> {
        let url = self.file_url(op, batch_id, dataset_id, file_path, Some(action))?;
        let builder = self.request(Method::POST, url).header(CONTENT_LENGTH, 0);
        let resp = self.execute(op, builder).await?;
        discard(resp).await;
        Ok(())
    }

    pub(super) fn request(&self, method: Method, url: String) -> RequestBuilder {
        self.inner
            .http
            .request(method, url)
            .headers((*self.headers).clone())
    }

    fn upload_timeout(&self, len: u64) -> Duration {
        self.inner.request_timeout + Duration::from_secs(len / MIN_UPLOAD_BYTES_PER_SEC)
    }

    async fn get_json_or_none(&self, op: &str, url: String) -> Result<Option<Value>, ApiError> {
        match self.execute(op, self.request(Method::GET, url)).await {
            Ok(resp) => read_json(op, resp, Answer::Platform).await.map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_bytes(&self, op: &str, url: String) -> Result<bytes::Bytes, ApiError> {
        let resp = self.execute(op, self.request(Method::GET, url)).await?;
        read_body(op, resp, Answer::Download).await
    }

    /// Sends with a token and returns a 2xx answer, or the error. A 401 to an OAuth token drops
    /// it from the cache; a request whose body can be replayed (JSON, none, in-memory bytes) is
    /// then sent once more with a fresh token. A streamed body cannot be replayed: that 401
    /// comes back as a transient error and the caller's retry gets the fresh token.
    pub(super) async fn execute(
        &self,
        op: &str,
        builder: RequestBuilder,
    ) -> Result<Response, ApiError> {
        let auth = &self.inner.auth;
        let mut token_used = auth.token(&self.inner.ims_http, op).await?;
        let replay = if auth.renewable() {
            builder.try_clone()
        } else {
            None
        };
        let mut resp = self.send_once(op, builder, &token_used).await?;
        if resp.status() == StatusCode::UNAUTHORIZED && auth.renewable() {
            auth.invalidate(&token_used).await;
            if let Some(again) = replay {
                discard(resp).await;
                token_used = auth.token(&self.inner.ims_http, op).await?;
                resp = self.send_once(op, again, &token_used).await?;
            }
        }
        if resp.status().is_success() {
            return Ok(resp);
        }
        let err = read_error(op, resp, &[token_used.expose()]).await;
        Err(if auth.renewable() {
            err
        } else {
            err.with_static_token()
        })
    }

    async fn send_once(
        &self,
        op: &str,
        builder: RequestBuilder,
        token: &Secret,
    ) -> Result<Response, ApiError> {
        let mut bearer =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                ApiError::config(
                    op,
                    "the access token contains characters not allowed in a header",
                )
            })?;
        bearer.set_sensitive(true);
        let request = builder
            .header(AUTHORIZATION, bearer)
            .build()
            .map_err(|e| ApiError::transport(op, &e))?;
        // Path and query name the batch, file and action; neither ever holds a credential.
        let method = request.method().clone();
        let path = match request.url().query() {
            Some(q) => format!("{}?{q}", request.url().path()),
            None => request.url().path().to_string(),
        };
        let started = Instant::now();
        let result = self.inner.http.execute(request).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(resp) => {
                tracing::debug!(%method, path, status = resp.status().as_u16(), elapsed_ms, "platform call");
                Ok(resp)
            }
            Err(e) => {
                let err = ApiError::transport(op, &e);
                tracing::debug!(%method, path, elapsed_ms, error = %err, "platform call failed");
                Err(err)
            }
        }
    }
}

/// Rejects a body whose length is known and differs from `len`: the server would see a
/// Content-Length that lies.
fn check_body_len(op: &str, body: &Body, len: u64) -> Result<(), ApiError> {
    match body.known_len() {
        Some(known) if known != len => Err(ApiError::invalid_request(
            op,
            format!("the body holds {known} bytes but {len} were announced"),
        )),
        _ => Ok(()),
    }
}

/// Orders by `created` or `updated`, `asc` unless `desc:` is given; other orders are left
/// as Catalog's keys sort.
fn sort_batches(batches: &mut [BatchInfo], order_by: &str) {
    let (desc, field) = match order_by.split_once(':') {
        Some((dir, field)) => (dir.eq_ignore_ascii_case("desc"), field),
        None => (false, order_by),
    };
    let key = |b: &BatchInfo| match field {
        "created" => b.created,
        "updated" => b.updated,
        _ => None,
    };
    if !matches!(field, "created" | "updated") {
        return;
    }
    batches.sort_by(|a, b| {
        let ord = key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id));
        if desc { ord.reverse() } else { ord }
    });
}

#[cfg(test)]
mod tests;
