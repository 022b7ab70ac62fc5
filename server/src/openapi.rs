//! The OpenAPI 3 document of both APIs, served at `/openapi.json`.
//!
//! It is written by hand (`server/openapi.json`) and a test checks that every
//! documented operation is routed and every route is documented.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::State;

/// The document.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The `/openapi.json` route.
pub fn routes() -> Router<State> {
    Router::new().route("/openapi.json", get(serve))
}

async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
