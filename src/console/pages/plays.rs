//! Play counts for auditors (`/audit/plays`): the query of `GET /api/v1/audit/plays` as a
//! form, its answer as a table with the total. The query is read, checked and answered by
//! the API's own functions (`PlaysQuery::parse`, `reports::check_plays_names`, the store's
//! `audit_plays`, `reports::answer`), so the table and the API never differ. Charts and
//! downloads of this and the other reports come with the auditors' pages.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;

use super::super::{html, Ctx, Failure};
use crate::api::{self, ApiError, ApiState};
use crate::core::audit::{PlaysParams, PlaysQuery};
use crate::store::Store;

#[derive(Template)]
#[template(path = "console/plays.html")]
pub struct PlaysPage<'a> {
    pub c: &'a Ctx,
    pub p: PlaysParams,
    pub columns: Vec<&'static str>,
    pub rows: Vec<(Vec<String>, i64)>,
    pub total: i64,
    pub error: String,
    pub classes: Vec<String>,
}

fn text(o: &Option<String>) -> String {
    o.clone().unwrap_or_default()
}

async fn answer(
    st: &ApiState,
    p: &PlaysParams,
) -> Result<(PlaysQuery, Vec<crate::core::audit::PlaysRow>), ApiError> {
    let c = st.shared.current();
    let q = PlaysQuery::parse(p, c.timezone)?;
    crate::reports::check_plays_names(&q, &c)?;
    let store = st.store.clone();
    let q2 = q.clone();
    let rows = st
        .heavy
        .run_async(async move { store.audit_plays(&q2).await })
        .await??;
    Ok((q, rows))
}

pub async fn page(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Query(p): Query<PlaysParams>,
) -> Result<Response, Failure> {
    c.require(api::AUDITOR)?;
    let mut page = PlaysPage {
        c: &c,
        p: PlaysParams {
            group_by: Some(text(&p.group_by))
                .filter(|g| !g.is_empty())
                .or(Some("class".into())),
            ..p.clone()
        },
        columns: Vec::new(),
        rows: Vec::new(),
        total: 0,
        error: String::new(),
        classes: st.shared.current().classes.keys().cloned().collect(),
    };
    match answer(&st, &page.p).await {
        Ok((q, rows)) => {
            let a = crate::reports::answer(&q, &rows);
            page.columns = a.group_by.clone();
            page.total = a.total;
            page.rows = rows.into_iter().map(|r| (r.values, r.plays)).collect();
        }
        Err(e) if e.status.is_client_error() => page.error = e.error,
        Err(e) => return Err(c.api_failure(e)),
    }
    Ok(html(&page))
}
