//! The emulator's routes: the platform's paths (behind the gateway), and its own (`/emulator/
//! stats`, `/ims/token/v3`); and serving them within the `[server]` limits.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::{
    AppState, catalog, dataset_patch, diagnostics, export, file_access, gateway, http_server,
    import, ims, net, schema_lookup,
};

/// Serves the routes on `listener` until `stop` says true.
pub fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let limits = http_server::Limits {
        max_connections: state.config.server.max_connections,
        header_read_timeout: Duration::from_secs(state.config.server.header_read_timeout_secs),
    };
    tokio::spawn(http_server::serve(
        listener,
        router(state),
        limits,
        net::wrap,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ))
}

fn router(state: Arc<AppState>) -> Router {
    const IMPORT: &str = "/data/foundation/import";
    const CATALOG: &str = "/data/foundation/catalog";
    const EXPORT: &str = "/data/foundation/export";
    let file_route = axum::routing::put(import::put_file)
        .post(import::post_file)
        .patch(import::patch_file)
        .head(import::head_file);
    let platform = Router::new()
        .route(&format!("{IMPORT}/batches"), post(import::create_batch))
        .route(
            &format!("{IMPORT}/batches/{{batch_id}}"),
            post(import::batch_action),
        )
        .route(
            &format!("{IMPORT}/batches/{{batch_id}}/datasets/{{dataset_id}}/files/{{*path}}"),
            file_route,
        )
        .route(
            &format!("{IMPORT}/batches/{{batch_id}}/datasets/{{dataset_id}}/preview"),
            get(export::preview),
        )
        .route(&format!("{CATALOG}/batches"), get(catalog::list_batches))
        .route(
            &format!("{CATALOG}/batches/{{batch_id}}"),
            get(catalog::get_batch),
        )
        .route(
            &format!("{CATALOG}/dataSetFiles"),
            get(catalog::list_dataset_files),
        )
        .route(
            &format!("{CATALOG}/lastBatches"),
            get(catalog::last_batches),
        )
        .route(
            &format!("{CATALOG}/dataSets"),
            get(catalog::list_datasets).post(catalog::create_dataset),
        )
        .route(
            &format!("{CATALOG}/dataSets/{{dataset_id}}"),
            get(catalog::get_dataset)
                .delete(catalog::delete_dataset)
                .patch(dataset_patch::patch_dataset),
        )
        .route(
            &format!("{EXPORT}/batches/{{batch_id}}/files"),
            get(export::batch_files),
        )
        .route(
            &format!("{EXPORT}/batches/{{batch_id}}/failed"),
            get(export::batch_failed),
        )
        .route(
            &format!("{EXPORT}/batches/{{batch_id}}/meta"),
            get(diagnostics::batch_meta),
        )
        .route(
            &format!("{EXPORT}/files/{{file_id}}"),
            get(file_access::file).head(file_access::file),
        )
        .route(
            &format!("{EXPORT}/datasets/{{dataset_id}}/preview"),
            get(export::dataset_preview),
        )
        .route(
            &format!("{EXPORT}/dataSets/{{dataset_id}}/current"),
            get(export::current_view),
        )
        .route(
            "/data/foundation/schemaregistry/{container}/schemas/{schema_id}",
            get(schema_lookup::lookup),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gateway::platform_gate,
        ))
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024));
    Router::new()
        .route("/emulator/stats", get(stats_handler))
        .route(
            "/ims/token/v3",
            post(ims::token).layer(DefaultBodyLimit::max(64 * 1024)),
        )
        .merge(platform)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri, method: axum::http::Method) -> ApiError {
    ApiError::not_found(format!(
        "no platform endpoint {method} {}: see the Batch Ingestion, Catalog and Data Access API paths",
        uri.path()
    ))
}

/// A known path with a method it does not take: the platform's JSON error, not an empty 405.
async fn method_not_allowed(uri: axum::http::Uri, method: axum::http::Method) -> ApiError {
    ApiError::Service {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        title: "Method Not Allowed",
        detail: format!(
            "{method} is not supported on {}: see the API reference for the methods of this path",
            uri.path()
        ),
    }
}

async fn stats_handler(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(state.counters.snapshot())
}
