//! `imgforge registry serve`: a read-only HTTP API over the registry and one HTML page.
//!
//! - `GET /api/v1/images?name=…&status=…&label.env=prod&package=…&latest=1`: the records, as
//!   `imgforge image list --json` prints them (`latest=1`: as `image find --latest --json`).
//! - `GET /api/v1/images/ID` (or `NAME`, `NAME@VERSION`): as `imgforge image show --json`.
//! - `GET /`: the page: every image in its lineage tree, with status and labels.
//!
//! The bodies come from the same functions the command line prints with (`json`), so both
//! answer byte for byte the same.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{Query, Store};

type Shared = Arc<Mutex<Box<dyn Store>>>;

/// The routes over `store`.
pub fn router(store: Box<dyn Store>) -> axum::Router {
    let shared: Shared = Arc::new(Mutex::new(store));
    axum::Router::new().route("/", get(page)).route("/api/v1/images", get(list)).route("/api/v1/images/{id}", get(show)).with_state(shared)
}

/// Serves `router` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, store: Box<dyn Store>) -> anyhow::Result<()> {
    axum::serve(listener, router(store)).await?;
    Ok(())
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, serde_json::json!({ "error": message }).to_string() + "\n")
}

/// Runs `f` on the store in a blocking thread (SQLite and the PostgreSQL client block).
async fn with_store<T: Send + 'static>(
    store: Shared,
    f: impl FnOnce(&dyn Store) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let joined = tokio::task::spawn_blocking(move || {
        let guard = store.lock().map_err(|_| anyhow::anyhow!("the registry connection was poisoned"))?;
        f(&**guard)
    })
    .await;
    match joined {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!("registry query failed: {e:#}");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, "the registry query failed (see the server's log)"))
        }
        Err(_) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "the registry query panicked")),
    }
}

async fn list(State(store): State<Shared>, UrlQuery(params): UrlQuery<Vec<(String, String)>>) -> Response {
    let (q, latest) = match Query::from_params(&params) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let found = match with_store(store, move |s| super::search(s, &q)).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let body = match (latest, found.first()) {
        (true, None) => return error(StatusCode::NOT_FOUND, "no image matches"),
        (true, Some(one)) => super::json::records(std::slice::from_ref(one)),
        (false, _) => super::json::records(&found),
    };
    match body {
        Ok(b) => json(StatusCode::OK, b),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn show(State(store): State<Shared>, Path(id): Path<String>) -> Response {
    let what = id.clone();
    match with_store(store, move |s| super::resolve(s, &what)).await {
        Ok(Some(r)) => match super::json::record(&r) {
            Ok(b) => json(StatusCode::OK, b),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        Ok(None) => error(StatusCode::NOT_FOUND, &format!("no image {id} in the registry")),
        Err(r) => r,
    }
}

async fn page(State(store): State<Shared>) -> Response {
    match with_store(store, |s| s.find(&Query::default())).await {
        Ok(all) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], super::page::render(&all)).into_response(),
        Err(r) => r,
    }
}
