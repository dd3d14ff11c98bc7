//! `GET /api/v1/preview` and `GET /api/v1/preview.svg`: a text, or a stored slogan, as a
//! display class draws it on its LED matrix (`core::led`), in JSON for the console's
//! `led.js` or as an SVG for a page without JavaScript.
//!
//! Two ways to name what to draw: `text` and `class`; or `adset` and `slogan` (with `rev`,
//! default the latest revision, so a pending upload can be looked at before it is approved)
//! and optionally `class`, which without it answers one preview per class the ad set reaches,
//! each drawing the text that class is sent (`text_by_class` first). Bad input is a 422
//! naming the parameter. Owns the parameters and answers only; drawing is `core::led`'s.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::{ApiError, ApiQuery, ApiState, Detail};
use crate::core::catalog::{self, AdSetContext};
use crate::core::led::{self, LedError, Preview};
use crate::core::model::{AdSet, Catalog, Slogan};
use crate::store::{ApiStore, Revision};

/// Longest `text` looked at, in characters, before any class's own limit: the check costs
/// little, but the answer grows with the text.
pub const MAX_TEXT: usize = 1000;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct PreviewParams {
    text: Option<String>,
    class: Option<String>,
    adset: Option<String>,
    slogan: Option<String>,
    rev: Option<String>,
}

/// A stored slogan's previews: one a class.
#[derive(Debug, Serialize)]
pub struct SloganPreviews {
    pub adset: String,
    pub rev: i64,
    pub slogan: String,
    pub rows: Vec<Preview>,
}

/// What a request names, resolved.
enum Drawn {
    One(Preview),
    Slogan(SloganPreviews),
}

fn unprocessable(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, field, message)
}

/// A refused text as a 422 on `field`, one detail per problem.
fn refused(field: &str, e: LedError) -> ApiError {
    let messages = match e {
        LedError::Empty => vec![LedError::Empty.to_string()],
        LedError::CannotShow(m) => m,
    };
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        error: format!("{field}: {}", messages.join("; ")),
        details: messages
            .into_iter()
            .map(|message| Detail {
                field: Some(field.to_owned()),
                line: None,
                message,
            })
            .collect(),
    }
}

/// A parameter given and not empty (a form sends its empty fields).
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn class_of<'c>(
    c: &'c Catalog,
    name: &str,
) -> Result<&'c crate::core::model::ClassProfile, ApiError> {
    c.classes.get(name).ok_or_else(|| {
        unprocessable(
            "class",
            format!(
                "unknown class {name:?} (known: {})",
                c.classes
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// A text for a class.
fn draw_text(c: &Catalog, p: &PreviewParams) -> Result<Preview, ApiError> {
    let text = p.text.as_deref().unwrap_or("");
    let Some(class) = given(&p.class) else {
        return Err(unprocessable(
            "class",
            "missing: name the class to draw for",
        ));
    };
    let class = class_of(c, class)?;
    let n = text.chars().count();
    if n > MAX_TEXT {
        return Err(unprocessable(
            "text",
            format!("{n} characters, more than the {MAX_TEXT} a preview takes"),
        ));
    }
    led::render(text, class).map_err(|e| refused("text", e))
}

/// The revision `rev` (default: the latest) of a stored ad set.
async fn revision(st: &ApiState, adset: &str, rev: Option<&str>) -> Result<Revision, ApiError> {
    let rev = match rev {
        None => None,
        Some(r) => match r.parse::<i64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                return Err(unprocessable(
                    "rev",
                    format!("{r:?} is not a revision number (1, 2, ...)"),
                ))
            }
        },
    };
    let Some(h) = st.store.adset_history(adset).await? else {
        return Err(unprocessable("adset", format!("no ad set {adset:?}")));
    };
    let found = match rev {
        None => h.revisions.last(),
        Some(n) => h.revisions.iter().find(|r| r.rev == n),
    };
    found.cloned().ok_or_else(|| match rev {
        Some(n) => unprocessable("rev", format!("ad set {adset:?} has no revision {n}")),
        None => unprocessable("adset", format!("ad set {adset:?} has no revision")),
    })
}

/// A stored revision parsed against the current catalog.
fn parsed(ctx: &AdSetContext, r: &Revision) -> Result<AdSet, ApiError> {
    catalog::parse_adset(&r.body, r.format == "json", "adset", ctx).map_err(|ps| {
        let first = ps.iter().find(|p| p.is_error()).map_or(String::new(), |p| format!(": {p}"));
        unprocessable(
            "adset",
            format!(
                "revision {} of {:?} does not check against the current displays, classes and feeds{first}",
                r.rev, r.adset
            ),
        )
    })
}

/// One slogan of a parsed revision for `class`, or for every class its ad set reaches.
fn slogan_rows(
    c: &Catalog,
    ctx: &AdSetContext,
    adset: &AdSet,
    s: &Slogan,
    class: Option<&str>,
) -> Result<Vec<Preview>, ApiError> {
    let classes: Vec<&str> = match class {
        Some(k) => vec![class_of(c, k)?.name.as_str()],
        None => catalog::reached_classes(ctx, adset.feeds.as_deref())
            .into_iter()
            .collect(),
    };
    let mut rows = Vec::with_capacity(classes.len());
    for k in classes {
        let profile = class_of(c, k)?;
        rows.push(led::render(s.text_for(k), profile).map_err(|e| refused("class", e))?);
    }
    Ok(rows)
}

/// A stored slogan for `class`, or for every class its ad set reaches. Heavy: it parses the
/// revision and looks over every display.
fn draw_slogan(
    c: &Catalog,
    r: &Revision,
    slogan: &str,
    class: Option<&str>,
) -> Result<SloganPreviews, ApiError> {
    let ctx = AdSetContext::of(c);
    let adset = parsed(&ctx, r)?;
    let Some(s) = adset.slogans.iter().find(|s| s.id.as_str() == slogan) else {
        let ids: Vec<&str> = adset.slogans.iter().map(|s| s.id.as_str()).collect();
        return Err(unprocessable(
            "slogan",
            format!(
                "revision {} of {:?} has no slogan {slogan:?} (it has: {})",
                r.rev,
                r.adset,
                ids.join(", ")
            ),
        ));
    };
    Ok(SloganPreviews {
        adset: r.adset.clone(),
        rev: r.rev,
        slogan: slogan.to_owned(),
        rows: slogan_rows(c, &ctx, &adset, s, class)?,
    })
}

/// Every slogan of a stored revision, each for every class its ad set reaches, in the
/// revision's order: what `GET /api/v1/preview?adset=&slogan=&rev=` answers for each slogan.
/// Heavy, as `draw_slogan`; the console's preview page draws from it.
pub fn draw_revision(c: &Catalog, r: &Revision) -> Result<Vec<SloganPreviews>, ApiError> {
    let ctx = AdSetContext::of(c);
    let adset = parsed(&ctx, r)?;
    adset
        .slogans
        .iter()
        .map(|s| {
            Ok(SloganPreviews {
                adset: r.adset.clone(),
                rev: r.rev,
                slogan: s.id.as_str().to_owned(),
                rows: slogan_rows(c, &ctx, &adset, s, None)?,
            })
        })
        .collect()
}

async fn resolve(st: &Arc<ApiState>, p: PreviewParams) -> Result<Drawn, ApiError> {
    let c = st.shared.current();
    let stored = given(&p.adset).is_some() || given(&p.slogan).is_some() || given(&p.rev).is_some();
    if p.text.is_some() && stored {
        return Err(unprocessable(
            "text",
            "give either text (with class) or adset and slogan, not both",
        ));
    }
    if !stored {
        if p.text.is_none() {
            return Err(unprocessable(
                "text",
                "missing: give text and class, or adset and slogan",
            ));
        }
        return draw_text(&c, &p).map(Drawn::One);
    }
    let Some(adset) = given(&p.adset) else {
        return Err(unprocessable(
            "adset",
            "missing: name the ad set of the slogan",
        ));
    };
    let Some(slogan) = given(&p.slogan).map(str::to_owned) else {
        return Err(unprocessable("slogan", "missing: name the slogan to draw"));
    };
    let r = revision(st, adset, given(&p.rev)).await?;
    let class = given(&p.class).map(str::to_owned);
    st.heavy
        .run(move || draw_slogan(&c, &r, &slogan, class.as_deref()))
        .await?
        .map(Drawn::Slogan)
}

pub async fn preview(
    State(st): State<Arc<ApiState>>,
    ApiQuery(p): ApiQuery<PreviewParams>,
) -> Result<Response, ApiError> {
    Ok(match resolve(&st, p).await? {
        Drawn::One(p) => Json(p).into_response(),
        Drawn::Slogan(s) => Json(s).into_response(),
    })
}

pub async fn preview_svg(
    State(st): State<Arc<ApiState>>,
    ApiQuery(p): ApiQuery<PreviewParams>,
) -> Result<Response, ApiError> {
    let one_class = given(&p.class).is_some();
    let drawn = match resolve(&st, p).await? {
        Drawn::One(p) => p,
        Drawn::Slogan(mut s) if one_class && s.rows.len() == 1 => s.rows.remove(0),
        Drawn::Slogan(_) => {
            return Err(unprocessable(
                "class",
                "missing: an SVG draws one class; name it",
            ))
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
            // The text is the caller's: keep the image from running anything if opened as a page.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        led::svg(&drawn),
    )
        .into_response())
}
