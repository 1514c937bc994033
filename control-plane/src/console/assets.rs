//! The console's stylesheet and script, compiled into the binary and served
//! under names that carry a hash of their content: a page always asks for
//! the bytes it was rendered with, so they can be cached for a year.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    /// Its name in the source tree (`console.css`).
    name: &'static str,
    /// Its served name (`console.3f9a1c2b7d4e.css`).
    hashed: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    [
        (
            "console.css",
            "text/css; charset=utf-8",
            include_bytes!("../../assets/console.css").as_slice(),
        ),
        (
            "console.js",
            "text/javascript; charset=utf-8",
            include_bytes!("../../assets/console.js").as_slice(),
        ),
    ]
    .into_iter()
    .map(|(name, content_type, bytes)| {
        let digest = crate::support::ids::hash_secret(&String::from_utf8_lossy(bytes));
        let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
        Asset {
            name,
            hashed: format!("{stem}.{}.{ext}", &digest[..12]),
            content_type,
            bytes,
        }
    })
    .collect()
});

/// The URL of an embedded file, by its source name.
pub(crate) fn url(name: &str) -> String {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map(|a| format!("/assets/{}", a.hashed))
        .unwrap_or_default()
}

/// `GET /assets/{file}`: an embedded file by its hashed name, cached for a
/// year (the name changes when the content does).
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.hashed == file) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            a.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
