//! The console's static files, embedded in the binary from `assets/console/` and served at
//! `/assets/console/{name}` with a year's `immutable` cache: pages link them with `?v=` and
//! the first 12 hex digits of the file's SHA-256, so a new build's file is a new address.
//! Nothing is loaded from anywhere else (no CDN; the console works on a closed network).
//!
//! Owns: the list of files and their answer. Another file is one line in [`FILES`].

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// (name, content type, bytes) of every embedded file.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console/console.css"),
    ),
    (
        "print.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console/print.css"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console/live.js"),
    ),
    (
        "led.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console/led.js"),
    ),
];

/// What a browser may keep: a year, never revalidated (the address changes with the file).
const CACHE: &str = "public, max-age=31536000, immutable";

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Each file's version: the start of its SHA-256.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|f| sha256_hex(f.2)[..12].to_owned())
        .collect()
});

/// The address of the embedded file `name`, versioned; the bare path for an unknown name
/// (which then answers 404, and the tests catch it).
pub fn url(name: &str) -> String {
    match FILES.iter().position(|f| f.0 == name) {
        Some(i) => format!("/assets/console/{name}?v={}", VERSIONS[i]),
        None => format!("/assets/console/{name}"),
    }
}

pub async fn serve(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|f| f.0 == name) {
        Some((_, ctype, bytes)) => (
            [
                (header::CONTENT_TYPE, *ctype),
                (header::CACHE_CONTROL, CACHE),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_versioned_address_that_follows_its_content() {
        for (name, _, bytes) in FILES {
            let u = url(name);
            assert!(u.starts_with(&format!("/assets/console/{name}?v=")), "{u}");
            assert!(u.ends_with(&sha256_hex(bytes)[..12]), "{u}");
            assert!(!bytes.is_empty(), "{name} is empty");
        }
        assert_eq!(url("nothing.js"), "/assets/console/nothing.js");
    }

    #[test]
    fn no_asset_reaches_outside_the_daemon() {
        for (name, _, bytes) in FILES {
            let text = String::from_utf8_lossy(bytes);
            for outside in ["http://", "https://", "//cdn", "@import url("] {
                assert!(!text.contains(outside), "{name} names {outside}");
            }
        }
    }
}
