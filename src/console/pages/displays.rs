//! Displays: a list filtered by class, route, district, operator and online state (the
//! first [`PAGE_ROWS`] matches, with their count), and a page per display with its feeds,
//! each feed's current play, its presence history and its last receipts.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::super::i18n::key;
use super::super::{html, local_time, Ctx, Failure};
use crate::api::{self, ApiState};
use crate::core::model::Device;

/// Most displays one list page shows.
pub const PAGE_ROWS: usize = 500;
/// Presence intervals and receipts a display's page shows.
pub const HISTORY_ROWS: i64 = 50;

/// The attributes the list filters on, besides class and online.
pub const FILTER_ATTRS: [&str; 3] = ["route", "district", "operator"];

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct Filter {
    pub class: String,
    pub route: String,
    pub district: String,
    pub operator: String,
    /// `yes`, `no`, `unknown` or empty (any).
    pub online: String,
}

impl Filter {
    fn attr(&self, name: &str) -> &str {
        match name {
            "route" => &self.route,
            "district" => &self.district,
            _ => &self.operator,
        }
    }
    fn matches(&self, d: &Device, online: Option<bool>) -> bool {
        let attrs_ok = FILTER_ATTRS.iter().all(|a| {
            let want = self.attr(a).trim();
            want.is_empty() || d.attrs.get(a) == Some(want)
        });
        let online_ok = match self.online.as_str() {
            "yes" => online == Some(true),
            "no" => online == Some(false),
            "unknown" => online.is_none(),
            _ => true,
        };
        (self.class.is_empty() || *d.class == *self.class) && attrs_ok && online_ok
    }
}

pub struct DisplayLine {
    pub id: String,
    pub class: String,
    pub route: String,
    pub district: String,
    pub operator: String,
    /// `yes`, `no` or `unknown`.
    pub online: &'static str,
    pub feeds: String,
}

fn online_word(o: Option<bool>) -> &'static str {
    match o {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

#[derive(Template)]
#[template(path = "console/displays.html")]
pub struct ListPage<'a> {
    pub c: &'a Ctx,
    pub f: Filter,
    pub classes: Vec<String>,
    pub rows: Vec<DisplayLine>,
    pub matched: usize,
    pub total: usize,
}

pub async fn list(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Query(f): Query<Filter>,
) -> Result<Response, Failure> {
    c.require(api::READERS)?;
    let cat = st.shared.current();
    let online = st.shared.online_names();
    let mut rows = Vec::new();
    let mut matched = 0;
    for d in cat.devices.iter() {
        let o = online.get(d.id.as_str()).copied();
        if !f.matches(d, o) {
            continue;
        }
        matched += 1;
        if rows.len() < PAGE_ROWS {
            let a = |k: &str| d.attrs.get(k).unwrap_or("").to_owned();
            rows.push(DisplayLine {
                id: d.id.to_string(),
                class: d.class.to_string(),
                route: a("route"),
                district: a("district"),
                operator: a("operator"),
                online: online_word(o),
                feeds: cat
                    .feeds_of(d)
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(html(&ListPage {
        c: &c,
        classes: cat.classes.keys().cloned().collect(),
        f,
        rows,
        matched,
        total: cat.devices.len(),
    }))
}

pub struct FeedNow {
    pub id: String,
    /// (slogan, text, issued) of the feed's newest play; empty before any.
    pub slogan: String,
    pub text: String,
    pub issued: String,
}

pub struct Span {
    pub from: String,
    pub until: String,
}

pub struct ReceiptLine {
    pub play_id: String,
    pub feed: String,
    pub slogan: String,
    pub started: String,
    pub duration_s: String,
    pub status: &'static str,
}

#[derive(Template)]
#[template(path = "console/display.html")]
pub struct ShowPage<'a> {
    pub c: &'a Ctx,
    pub id: String,
    pub class: String,
    pub attrs: Vec<(String, String)>,
    pub online: &'static str,
    pub feeds: Vec<FeedNow>,
    pub presence: Vec<Span>,
    pub receipts: Vec<ReceiptLine>,
}

fn feeds_now(st: &ApiState, d: &Device) -> Vec<FeedNow> {
    let cat = st.shared.current();
    let last = st.shared.last_plays();
    cat.feeds_of(d)
        .iter()
        .map(|f| {
            let p = last.get(f.as_str());
            FeedNow {
                id: f.to_string(),
                slogan: p.map(|p| p.slogan.clone()).unwrap_or_default(),
                text: p
                    .map(|p| p.text_by_class.get(&*d.class).unwrap_or(&p.text).clone())
                    .unwrap_or_default(),
                issued: p
                    .map(|p| local_time(p.issued_at.timestamp_millis(), cat.timezone))
                    .unwrap_or_default(),
            }
        })
        .collect()
}

pub async fn show(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    c.require(api::READERS)?;
    let cat = st.shared.current();
    let tz = cat.timezone;
    let Some(d) = cat.devices.iter().find(|d| d.id.as_str() == id) else {
        return Err(c.fail(
            StatusCode::NOT_FOUND,
            key("error.not_found"),
            format!("{} {id}", c.t("displays.none_such")),
        ));
    };
    let fail = |e: crate::store::StoreError| c.api_failure(e.into());
    let presence = st
        .store
        .device_presence(&id, HISTORY_ROWS)
        .await
        .map_err(fail)?;
    let receipts = st
        .store
        .device_receipts(&id, HISTORY_ROWS)
        .await
        .map_err(fail)?;
    Ok(html(&ShowPage {
        c: &c,
        class: d.class.to_string(),
        attrs: d
            .attrs
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        online: online_word(st.shared.online_names().get(id.as_str()).copied()),
        feeds: feeds_now(&st, d),
        presence: presence
            .iter()
            .map(|s| Span {
                from: local_time(s.since_ms, tz),
                until: s.until_ms.map(|m| local_time(m, tz)).unwrap_or_default(),
            })
            .collect(),
        receipts: receipts
            .iter()
            .map(|r| ReceiptLine {
                play_id: r.play_id.clone(),
                feed: r.feed.clone().unwrap_or_default(),
                slogan: format!("{} r{} {}", r.adset, r.rev, r.slogan),
                started: local_time(r.started_ms, tz),
                duration_s: format!("{:.1}", r.duration_ms as f64 / 1000.0),
                status: r.status.as_str(),
            })
            .collect(),
        id,
    }))
}
