//! Ad sets: the list with status, revisions, uploader and approver; one ad set's history
//! with its approve and retire forms; one revision's text; the diff between two revisions.
//! Statuses come from `api::statuses`, approval and retirement from `api::approve_adset`
//! and `api::retire_adset`: the rules are the API's.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use similar::{ChangeTag, TextDiff};

use super::super::i18n::key;
use super::super::{html, local_time, Ctx, Failure};
use crate::api::{self, ApiState};
use crate::core::led;
use crate::store::{AdSetHistory, ApiStore};

/// One revision as a row.
pub struct RevLine {
    pub rev: i64,
    pub status: &'static str,
    pub origin: String,
    pub format: String,
    pub uploaded_by: String,
    pub uploaded_at: String,
    pub approved_by: String,
    pub approved_at: String,
}

/// One ad set as a row or a page head.
pub struct SetLine {
    pub id: String,
    pub status: &'static str,
    pub latest_rev: i64,
    pub playing_rev: String,
    pub retired_by: String,
    pub revisions: Vec<RevLine>,
}

fn set_line(h: &AdSetHistory, tz: chrono_tz::Tz) -> SetLine {
    let st = api::statuses(h);
    let revisions = h
        .revisions
        .iter()
        .zip(&st.revisions)
        .map(|(r, s)| RevLine {
            rev: r.rev,
            status: s,
            origin: r.origin.clone(),
            format: r.format.clone(),
            uploaded_by: r.uploaded_by.clone(),
            uploaded_at: local_time(r.uploaded_ms, tz),
            approved_by: r.approved_by.clone().unwrap_or_default(),
            approved_at: r.approved_ms.map(|m| local_time(m, tz)).unwrap_or_default(),
        })
        .collect();
    SetLine {
        id: h.adset.clone(),
        status: st.status,
        latest_rev: h.revisions.last().map_or(0, |r| r.rev),
        playing_rev: st.playing_rev.map(|r| r.to_string()).unwrap_or_default(),
        retired_by: h.retired.as_ref().map(|r| r.by.clone()).unwrap_or_default(),
        revisions,
    }
}

#[derive(Template)]
#[template(path = "console/adsets.html")]
pub struct ListPage<'a> {
    pub c: &'a Ctx,
    pub sets: Vec<SetLine>,
}

pub async fn list(State(st): State<Arc<ApiState>>, c: Ctx) -> Result<Response, Failure> {
    c.require(api::READERS)?;
    let tz = st.shared.current().timezone;
    let hs = st
        .store
        .adset_histories()
        .await
        .map_err(|e| c.api_failure(e.into()))?;
    let sets = hs.iter().map(|h| set_line(h, tz)).collect();
    Ok(html(&ListPage { c: &c, sets }))
}

async fn history(st: &ApiState, c: &Ctx, id: &str) -> Result<AdSetHistory, Failure> {
    match st.store.adset_history(id).await {
        Ok(Some(h)) => Ok(h),
        Ok(None) => Err(c.fail(
            StatusCode::NOT_FOUND,
            key("error.not_found"),
            format!("{} {id}", c.t("adsets.none_such")),
        )),
        Err(e) => Err(c.api_failure(e.into())),
    }
}

#[derive(Template)]
#[template(path = "console/adset.html")]
pub struct ShowPage<'a> {
    pub c: &'a Ctx,
    pub set: SetLine,
    /// Whether the reader may approve the latest revision: an operator or admin, and, for
    /// an operator, not its uploader (the API refuses that anyway; the form is not offered).
    pub can_approve: bool,
}

pub async fn show(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let v = c.require(api::READERS)?.clone();
    let h = history(&st, &c, &id).await?;
    let set = set_line(&h, st.shared.current().timezone);
    let latest = h.revisions.last();
    let own = latest.is_some_and(|r| {
        r.uploaded_token == Some(v.token.id)
            || (r.uploaded_token.is_none() && r.uploaded_by == v.token.name)
    });
    let can_approve = c.may_operate()
        && latest.is_some_and(|r| r.approved_by.is_none())
        && (v.token.role == crate::store::Role::Admin || !own);
    Ok(html(&ShowPage {
        c: &c,
        set,
        can_approve,
    }))
}

#[derive(Template)]
#[template(path = "console/revision.html")]
pub struct RevisionPage<'a> {
    pub c: &'a Ctx,
    pub id: String,
    pub rev: RevLine,
    /// (number, text) of each line.
    pub lines: Vec<(usize, String)>,
    pub previous: i64,
}

pub async fn revision(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path((id, rev)): Path<(String, i64)>,
) -> Result<Response, Failure> {
    c.require(api::READERS)?;
    let h = history(&st, &c, &id).await?;
    let set = set_line(&h, st.shared.current().timezone);
    let found = h
        .revisions
        .iter()
        .zip(set.revisions)
        .find(|(r, _)| r.rev == rev);
    let Some((r, line)) = found else {
        return Err(c.fail(
            StatusCode::NOT_FOUND,
            key("error.not_found"),
            format!("{} {id} r{rev}", c.t("adsets.none_such")),
        ));
    };
    let lines = r
        .body
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.to_owned()))
        .collect();
    Ok(html(&RevisionPage {
        c: &c,
        id,
        rev: line,
        lines,
        previous: rev - 1,
    }))
}

/// One class's preview of a slogan: the Preview JSON for `led.js`, the same drawn as SVG
/// for a reader without JavaScript, and the pass time.
pub struct PreviewLine {
    pub class: String,
    pub text: String,
    pub json: String,
    pub svg: String,
    /// Seconds one pass takes, formatted; empty when the text stands still.
    pub pass_s: String,
    pub duration_s: String,
}

/// One slogan's previews, one a class it reaches.
pub struct SloganLine {
    pub slogan: String,
    pub rows: Vec<PreviewLine>,
}

#[derive(Template)]
#[template(path = "console/preview.html")]
pub struct PreviewPage<'a> {
    pub c: &'a Ctx,
    pub id: String,
    pub rev: i64,
    pub slogans: Vec<SloganLine>,
}

/// Every SVG of a page shares the document's id space: give each its own pattern id so no
/// drawing refers to another's.
fn own_ids(svg: &str, n: usize) -> String {
    svg.replace(r#"id="led""#, &format!(r#"id="led-{n}""#))
        .replace("url(#led)", &format!("url(#led-{n})"))
}

fn slogan_lines(drawn: Vec<api::preview::SloganPreviews>) -> Result<Vec<SloganLine>, String> {
    let mut n = 0;
    drawn
        .into_iter()
        .map(|s| {
            let rows = s
                .rows
                .iter()
                .map(|p| {
                    n += 1;
                    Ok(PreviewLine {
                        class: p.class.clone(),
                        text: p.text.clone(),
                        json: serde_json::to_string(p).map_err(|e| e.to_string())?,
                        svg: own_ids(&led::svg(p), n),
                        pass_s: p.pass_s.map(|s| format!("{s:.1}")).unwrap_or_default(),
                        duration_s: format!("{:.1}", p.duration_s),
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(SloganLine {
                slogan: s.slogan,
                rows,
            })
        })
        .collect()
}

/// `GET /adsets/{id}/rev/{rev}/preview`: every slogan of the revision as each class it
/// reaches draws it, by `api::preview::draw_revision` (the API's preview).
pub async fn preview(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path((id, rev)): Path<(String, i64)>,
) -> Result<Response, Failure> {
    c.require(api::READERS)?;
    let h = history(&st, &c, &id).await?;
    let Some(r) = h.revisions.into_iter().find(|r| r.rev == rev) else {
        return Err(c.fail(
            StatusCode::NOT_FOUND,
            key("error.not_found"),
            format!("{} {id} r{rev}", c.t("adsets.none_such")),
        ));
    };
    let catalog = st.shared.current();
    let drawn = st
        .heavy
        .run(move || api::preview::draw_revision(&catalog, &r))
        .await
        .map_err(|e| c.api_failure(e))?
        .map_err(|e| c.api_failure(e))?;
    let slogans = slogan_lines(drawn).map_err(|e| {
        c.api_failure(api::ApiError::from(anyhow::anyhow!(
            "a preview as JSON failed: {e}"
        )))
    })?;
    Ok(html(&PreviewPage {
        c: &c,
        id,
        rev,
        slogans,
    }))
}

/// One line of a diff: its kind (`same`, `added`, `removed`), old and new numbers, text.
pub struct DiffLine {
    pub kind: &'static str,
    pub old: String,
    pub new: String,
    pub text: String,
}

/// The line diff from `a` to `b`.
pub fn diff_lines(a: &str, b: &str) -> Vec<DiffLine> {
    let d = TextDiff::from_lines(a, b);
    d.iter_all_changes()
        .map(|ch| DiffLine {
            kind: match ch.tag() {
                ChangeTag::Equal => "same",
                ChangeTag::Insert => "added",
                ChangeTag::Delete => "removed",
            },
            old: ch
                .old_index()
                .map(|i| (i + 1).to_string())
                .unwrap_or_default(),
            new: ch
                .new_index()
                .map(|i| (i + 1).to_string())
                .unwrap_or_default(),
            text: ch.value().trim_end_matches(['\n', '\r']).to_owned(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/diff.html")]
pub struct DiffPage<'a> {
    pub c: &'a Ctx,
    pub id: String,
    pub from: i64,
    pub to: i64,
    pub revs: Vec<i64>,
    pub lines: Vec<DiffLine>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DiffQuery {
    from: Option<i64>,
    to: Option<i64>,
}

pub async fn diff(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Result<Response, Failure> {
    c.require(api::READERS)?;
    let h = history(&st, &c, &id).await?;
    let latest = h.revisions.last().map_or(0, |r| r.rev);
    let to = q.to.unwrap_or(latest);
    let from = q.from.unwrap_or(to - 1);
    let body = |n: i64| {
        h.revisions
            .iter()
            .find(|r| r.rev == n)
            .map(|r| r.body.as_str())
    };
    let (Some(a), Some(b)) = (body(from), body(to)) else {
        return Err(c.fail(
            StatusCode::NOT_FOUND,
            key("error.not_found"),
            format!("{} {id} r{from} / r{to}", c.t("adsets.none_such")),
        ));
    };
    Ok(html(&DiffPage {
        c: &c,
        lines: diff_lines(a, b),
        revs: h.revisions.iter().map(|r| r.rev).collect(),
        id,
        from,
        to,
    }))
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /adsets/{id}/approve`, by `api::approve_adset`.
pub async fn approve(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Response, Failure> {
    let who = c.require_post(api::OPERATOR, &f.csrf)?.token.clone();
    api::approve_adset(&st, &who, &id)
        .await
        .map_err(|e| c.api_failure(e))?;
    Ok(Redirect::to(&format!("/adsets/{id}")).into_response())
}

/// `POST /adsets/{id}/retire`, by `api::retire_adset`.
pub async fn retire(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Response, Failure> {
    let who = c.require_post(api::OPERATOR, &f.csrf)?.token.clone();
    api::retire_adset(&st, &who, &id)
        .await
        .map_err(|e| c.api_failure(e))?;
    Ok(Redirect::to(&format!("/adsets/{id}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::diff_lines;

    #[test]
    fn a_diff_numbers_old_and_new_lines() {
        let d = diff_lines("a\nb\nc\n", "a\nB\nc\nd\n");
        let kinds: Vec<_> = d
            .iter()
            .map(|l| (l.kind, l.old.as_str(), l.new.as_str(), l.text.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("same", "1", "1", "a"),
                ("removed", "2", "", "b"),
                ("added", "", "2", "B"),
                ("same", "3", "3", "c"),
                ("added", "", "4", "d"),
            ]
        );
    }
}
