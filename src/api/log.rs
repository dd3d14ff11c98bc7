//! The receipt log over HTTP, read-only and public (no token: tlog clients and witnesses
//! fetch it as they would any log): the newest signed checkpoint, tiles and entry bundles
//! at C2SP tlog-tiles paths, an inclusion proof for a receipt, a consistency proof
//! between two sizes. Everything but the checkpoint is immutable once served (a tile or
//! proof names the sizes it covers), so it is served with a year's `Cache-Control`.
//!
//! Owns: parsing C2SP tile paths, the answers' shapes. Must not touch: writing the log.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::prelude::{Engine, BASE64_STANDARD};
use serde::Deserialize;

use super::{ApiError, ApiQuery, ApiState};
use crate::core::tlog::{decode_members, encode_leaf, LogReceipt};
use crate::store::Db;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const TILE_WIDTH: u64 = 256;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/log/checkpoint", get(checkpoint))
        .route("/log/tile/{*path}", get(tile))
        .route("/log/proof/inclusion", get(inclusion))
        .route("/log/proof/consistency", get(consistency))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "receipt log read failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the receipt log could not be read",
    )
}

fn with_cache(mut r: Response, cache: &'static str) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

async fn signed_size(db: &Db) -> Result<u64, ApiError> {
    Ok(db
        .latest_checkpoint()
        .await
        .map_err(internal)?
        .map_or(0, |c| c.size))
}

async fn checkpoint(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let Some(cp) = st.store.latest_checkpoint().await.map_err(internal)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no checkpoint has been signed yet",
        ));
    };
    let mut note = cp.note;
    for line in st.store.cosignatures(cp.size).await.map_err(internal)? {
        note.push_str(&line);
    }
    let r = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response();
    // A new checkpoint every few minutes: a short cache keeps clients near the head.
    Ok(with_cache(r, "public, max-age=5"))
}

/// A C2SP tile path after `tile/`: `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`, N in
/// three-digit groups all but the last prefixed with `x`.
#[derive(Debug, PartialEq)]
pub struct TilePath {
    /// None: an entry bundle.
    pub level: Option<u8>,
    pub index: u64,
    pub width: u64,
}

pub fn parse_tile_path(path: &str) -> Option<TilePath> {
    let (first, rest) = path.split_once('/')?;
    let level = if first == "entries" {
        None
    } else {
        let l: u8 = first.parse().ok()?;
        (l < 64 && first == l.to_string()).then_some(l)?.into()
    };
    let (n, width) = match rest.split_once(".p/") {
        Some((n, text)) => {
            let w: u64 = text.parse().ok()?;
            ((1..TILE_WIDTH).contains(&w) && w.to_string() == text).then_some(())?;
            (n, w)
        }
        None => (rest, TILE_WIDTH),
    };
    let parts: Vec<&str> = n.split('/').collect();
    let mut index: u64 = 0;
    for (i, p) in parts.iter().enumerate() {
        let digits = if i + 1 < parts.len() {
            p.strip_prefix('x')?
        } else {
            p
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
    }
    Some(TilePath {
        level,
        index,
        width,
    })
}

async fn tile(
    State(st): State<Arc<ApiState>>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let t = parse_tile_path(&path)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not a C2SP tile path"))?;
    let size = signed_size(&st.store).await?;
    let level = u32::from(t.level.unwrap_or(0)) * 8;
    let at_level = if level >= 64 { 0 } else { size >> level };
    let start = t.index.saturating_mul(TILE_WIDTH);
    if start.saturating_add(t.width) > at_level {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "that tile is beyond the newest signed checkpoint",
        ));
    }
    let body = match t.level {
        Some(l) => {
            let idx: Vec<u64> = (start..start + t.width)
                .map(|n| tlog_tiles::stored_hash_index(l * 8, n))
                .collect();
            let hashes = st.store.log_hashes(&idx).await.map_err(internal)?;
            hashes.iter().flat_map(|h| h.0).collect::<Vec<u8>>()
        }
        None => entries(&st.store, start, start + t.width).await?,
    };
    let r = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    Ok(with_cache(r, IMMUTABLE))
}

/// The leaves' data, recomputed from the stored receipts, each with its u16 length.
async fn entries(db: &Db, lo: u64, hi: u64) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    for (idx, members) in db.log_members(lo, hi).await.map_err(internal)? {
        let data = leaf_data(db, idx, &members).await?;
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Ok(out)
}

async fn leaf_data(db: &Db, idx: u64, members: &[u8]) -> Result<Vec<u8>, ApiError> {
    let ms =
        decode_members(members).ok_or_else(|| internal(format!("leaf {idx}: bad member index")))?;
    let keys: Vec<(i64, i64)> = ms.iter().map(|m| (m.device, m.play)).collect();
    let found = db.log_receipts(&keys).await.map_err(internal)?;
    if found.len() != keys.len() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "receipts of that leaf are no longer stored (retention)",
        ));
    }
    let mut rs: Vec<LogReceipt> = found.into_values().collect();
    rs.sort();
    Ok(encode_leaf(&rs))
}

// Every field is read as text and checked here, so that a missing or malformed one gets
// the API's JSON error naming it rather than the extractor's plain-text rejection.
#[derive(Deserialize)]
struct InclusionQuery {
    device: Option<String>,
    play_id: Option<String>,
    tree_size: Option<String>,
}

/// `field` of a query, required.
fn required(field: &'static str, v: Option<String>) -> Result<String, ApiError> {
    v.ok_or_else(|| ApiError::field(StatusCode::BAD_REQUEST, field, "required"))
}

/// `field` of a query as a size (a whole number), when given.
fn size_param(field: &'static str, v: &Option<String>) -> Result<Option<u64>, ApiError> {
    v.as_deref()
        .map(|s| {
            s.trim().parse::<u64>().map_err(|_| {
                ApiError::field(
                    StatusCode::BAD_REQUEST,
                    field,
                    format!("{s:?} is not a tree size (a whole number, 0 or more)"),
                )
            })
        })
        .transpose()
}

async fn inclusion(
    State(st): State<Arc<ApiState>>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<Response, ApiError> {
    let (device, play_id) = (
        required("device", q.device)?,
        required("play_id", q.play_id)?,
    );
    let tree_size = size_param("tree_size", &q.tree_size)?;
    let signed = signed_size(&st.store).await?;
    let size = tree_size.unwrap_or(signed);
    if size > signed || size == 0 {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "tree_size",
            "must be between 1 and the newest signed size",
        ));
    }
    let Some((device, play)) = st
        .store
        .log_receipt_keys(&device, &play_id)
        .await
        .map_err(internal)?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such receipt is stored",
        ));
    };
    let mut found = None;
    for (idx, members) in st.store.log_members(0, size).await.map_err(internal)? {
        let hit = decode_members(&members)
            .is_some_and(|ms| ms.iter().any(|m| m.device == device && m.play == play));
        if hit {
            found = Some((idx, members));
            break;
        }
    }
    let Some((idx, members)) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "that receipt is in no leaf of the signed tree",
        ));
    };
    let data = leaf_data(&st.store, idx, &members).await?;
    let proof = crate::receipt_log::inclusion_proof(&st.store, size, idx)
        .await
        .map_err(internal)?;
    let body = serde_json::json!({
        "leaf_index": idx,
        "tree_size": size,
        "leaf": BASE64_STANDARD.encode(&data),
        "proof": proof.iter().map(|h| BASE64_STANDARD.encode(h.0)).collect::<Vec<_>>(),
    });
    Ok(with_cache(
        Json(body).into_response(),
        if tree_size.is_some() {
            IMMUTABLE
        } else {
            "public, max-age=5"
        },
    ))
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    old_size: Option<String>,
    new_size: Option<String>,
}

struct Sizes {
    old_size: u64,
    new_size: u64,
}

async fn consistency(
    State(st): State<Arc<ApiState>>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Response, ApiError> {
    let size = |field: &'static str, v: &Option<String>| {
        size_param(field, v)?
            .ok_or_else(|| ApiError::field(StatusCode::BAD_REQUEST, field, "required"))
    };
    let q = Sizes {
        old_size: size("old_size", &q.old_size)?,
        new_size: size("new_size", &q.new_size)?,
    };
    let signed = signed_size(&st.store).await?;
    if q.new_size > signed {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "new_size",
            "is beyond the newest signed size",
        ));
    }
    if q.old_size > q.new_size {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "old_size",
            "must not be larger than new_size",
        ));
    }
    let proof = crate::receipt_log::consistency_proof(&st.store, q.new_size, q.old_size)
        .await
        .map_err(internal)?;
    let body = serde_json::json!({
        "old_size": q.old_size,
        "new_size": q.new_size,
        "proof": proof.iter().map(|h| BASE64_STANDARD.encode(h.0)).collect::<Vec<_>>(),
    });
    Ok(with_cache(Json(body).into_response(), IMMUTABLE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_are_read_as_c2sp_writes_them() {
        let t = |level, index, width| {
            Some(TilePath {
                level,
                index,
                width,
            })
        };
        assert_eq!(parse_tile_path("0/000"), t(Some(0), 0, 256));
        assert_eq!(
            parse_tile_path("1/x001/x234/067"),
            t(Some(1), 1_234_067, 256)
        );
        assert_eq!(parse_tile_path("entries/x001/002.p/7"), t(None, 1_002, 7));
        for bad in [
            "0/0",
            "0/1234",
            "0/001.p/256",
            "0/001.p/0",
            "01/000",
            "0/x001",
            "0/001/002",
            "e/000",
        ] {
            assert_eq!(parse_tile_path(bad), None, "{bad}");
        }
    }
}
