//! The browser upload page, served at `/ui/` from files embedded in the
//! binary (`server/ui/`).
//!
//! The page signs in with a KooDrive user id and Bearer token, hashes the
//! chosen file front to back in a Web Worker (the vendored hash-wasm
//! SHA-256, whose midstate at every part boundary becomes that part's
//! `hashCtx`) and uploads it through the KooDrive API in the parallel chain
//! mode, so every part is checked as it arrives. Nothing here touches the
//! engine: the page is a client of the server's own API.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, the
//! worker and requests from this origin only, no inline code, and
//! `'wasm-unsafe-eval'` so that the worker may compile the WebAssembly of
//! the hash. `--no-ui` leaves the routes out altogether.

use axum::Router;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::State;

/// The Content-Security-Policy of every answer under `/ui/`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; \
     script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; \
     style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file of the page.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    /// Its name under `/ui/` (`index.html` is served at `/ui/` itself).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../ui/index.html"),
};

/// The files served under `/ui/NAME`.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/app.js"),
    },
    Asset {
        name: "hash-worker.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/hash-worker.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../ui/style.css"),
    },
    Asset {
        name: "hash-wasm-sha256.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/vendor/hash-wasm-4.13.0/sha256.umd.min.js"),
    },
    Asset {
        name: "hash-wasm-LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../ui/vendor/hash-wasm-4.13.0/LICENSE"),
    },
];

/// The page's routes: `/ui/`, its files under `/ui/NAME`, and `/ui`
/// redirecting to `/ui/`. Empty when `enabled` is false (`--no-ui`), so
/// that those paths answer 404 like any unknown path.
pub fn routes(enabled: bool) -> Router<State> {
    if !enabled {
        return Router::new();
    }
    Router::new()
        .route("/ui", get(redirect))
        .route("/ui/", get(index))
        .route("/ui/{asset}", get(asset))
}

/// `/ui` to `/ui/`, relative so that it holds behind a proxy that serves
/// the server under a path prefix.
async fn redirect() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("ui/"))],
    )
        .into_response()
}

async fn index() -> Response {
    serve(&INDEX)
}

async fn asset(name: Result<Path<String>, PathRejection>) -> Response {
    let found = name
        .ok()
        .and_then(|Path(n)| ASSETS.iter().find(|a| a.name == n));
    match found {
        Some(a) => serve(a),
        None => with_page_headers(
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "not found\n",
            )
                .into_response(),
        ),
    }
}

fn serve(a: &Asset) -> Response {
    with_page_headers(
        (
            [
                (header::CONTENT_TYPE, a.content_type),
                // Embedded in the binary: a new binary may bring new files
                // under the same names, so the browser asks every time.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.body,
        )
            .into_response(),
    )
}

/// The security headers of every answer under `/ui/`.
fn with_page_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored hash-wasm build is the one whose internal state layout
    /// the worker reads (see `server/ui/vendor/hash-wasm-4.13.0/README.md`).
    #[test]
    fn vendored_hash_wasm_is_the_pinned_build() {
        let file = ASSETS
            .iter()
            .find(|a| a.name == "hash-wasm-sha256.js")
            .expect("the hash library is served");
        assert_eq!(
            partseal::Sha256::digest(file.body).to_hex(),
            "0ab0ba5a8242ca02d4403e08a60b9308cb7322a175c3a5c3071c595fad1e65de"
        );
        let text = std::str::from_utf8(file.body).expect("UTF-8");
        assert!(text.contains("createSHA256"), "not the SHA-256 build");
        let license = include_str!("../ui/vendor/hash-wasm-4.13.0/LICENSE");
        assert!(license.starts_with("MIT License"), "{license}");
    }

    #[test]
    fn asset_names_are_unique_single_segments() {
        let mut names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        assert!(names.iter().all(|n| !n.contains('/') && !n.is_empty()));
    }
}
