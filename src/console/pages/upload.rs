//! Upload an ad set by file or by pasting TOML or JSON. The text goes through
//! `api::store_upload`, which is `POST /api/v1/adsets`'s own check: with any problem nothing
//! is stored and the page shows each problem at its line, beside the text with its lines
//! numbered.

use std::collections::BTreeSet;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::super::i18n::key;
use super::super::{html, Ctx, Failure};
use crate::api::{self, ApiState, Detail};

#[derive(Template)]
#[template(path = "console/upload.html")]
pub struct UploadPage<'a> {
    pub c: &'a Ctx,
    pub text: String,
    pub json: bool,
    pub error: String,
    pub details: Vec<Detail>,
    /// (number, text, has a problem) of each line of a refused upload.
    pub lines: Vec<(usize, String, bool)>,
    pub stored: Option<api::Uploaded>,
}

impl UploadPage<'_> {
    fn empty(c: &Ctx) -> UploadPage<'_> {
        UploadPage {
            c,
            text: String::new(),
            json: false,
            error: String::new(),
            details: Vec::new(),
            lines: Vec::new(),
            stored: None,
        }
    }
}

pub async fn form(c: Ctx) -> Result<Response, Failure> {
    c.require(api::OPERATOR)?;
    Ok(html(&UploadPage::empty(&c)))
}

/// What the form sent.
#[derive(Default)]
struct Sent {
    csrf: String,
    text: String,
    file: Option<(String, String)>,
    json: bool,
}

async fn read_form(c: &Ctx, mut m: Multipart) -> Result<Sent, Failure> {
    let bad = |e: String| c.fail(StatusCode::BAD_REQUEST, key("error.invalid"), e);
    let mut sent = Sent::default();
    while let Some(field) = m.next_field().await.map_err(|e| bad(e.body_text()))? {
        let name = field.name().unwrap_or("").to_owned();
        let file_name = field.file_name().unwrap_or("").to_owned();
        let bytes = field.bytes().await.map_err(|e| bad(e.body_text()))?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|e| bad(format!("{name}: not UTF-8: {}", e.utf8_error())))?;
        match name.as_str() {
            "csrf" => sent.csrf = text,
            "text" => sent.text = text,
            "format" => sent.json = text == "json",
            "file" if !text.is_empty() => sent.file = Some((file_name, text)),
            _ => {}
        }
    }
    Ok(sent)
}

/// The lines of `text`, each marked when a problem names it.
fn marked_lines(text: &str, details: &[Detail]) -> Vec<(usize, String, bool)> {
    let bad: BTreeSet<usize> = details.iter().filter_map(|d| d.line).collect();
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.to_owned(), bad.contains(&(i + 1))))
        .collect()
}

/// `POST /upload` (multipart: `csrf`, `file` or `text`, `format`).
pub async fn submit(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    m: Multipart,
) -> Result<Response, Failure> {
    if !c.same_origin || !c.may(api::OPERATOR) {
        // Refused before the body is read, with the answer `require_post` gives.
        c.require_post(api::OPERATOR, c.csrf())?;
    }
    let sent = read_form(&c, m).await?;
    let who = c.require_post(api::OPERATOR, &sent.csrf)?.token.clone();
    // A file wins over pasted text; its name says JSON or TOML.
    let (text, json) = match sent.file {
        Some((name, text)) => {
            let json = name.to_ascii_lowercase().ends_with(".json");
            (text, json)
        }
        None => (sent.text, sent.json),
    };
    let mut page = UploadPage::empty(&c);
    match api::store_upload(&st, &who, text.clone(), json).await {
        Ok(u) => {
            page.stored = Some(u);
            let mut r = html(&page);
            *r.status_mut() = StatusCode::CREATED;
            Ok(r)
        }
        Err(e)
            if e.status == StatusCode::UNPROCESSABLE_ENTITY
                || e.status == StatusCode::BAD_REQUEST =>
        {
            page.lines = marked_lines(&text, &e.details);
            page.text = text;
            page.json = json;
            page.error = e.error;
            page.details = e.details;
            let mut r = html(&page);
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(r)
        }
        Err(e) => Err(c.api_failure(e)),
    }
}
