//! Company scorecards (`/scorecards?month=&company=`): the month's table per company, a
//! chart over the months before it drawn on the server (each month's group carries its
//! numbers as `data-*` attributes), and CSV and XLSX downloads (`?format=csv|xlsx`). Every
//! number is `api::inspect::findings::scorecard_answer`'s, the function behind
//! `GET /api/v1/scorecards`, and the downloads are its `scorecard_download`, so the page, its
//! files and the API never differ. A company's token sees its own card only.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{Datelike, Months, NaiveDate};

use super::super::{html, Ctx, Failure};
use super::audit::{query, wanted, Format};
use crate::api::inspect::findings::{self as f, ScoreParams};
use crate::api::inspect::{self as insp};
use crate::api::ApiState;
use crate::core::inspect::scorecard::Scorecard;

/// Months the chart shows, ending with the one asked.
pub const CHART_MONTHS: u32 = 6;

/// One company's row of the table.
pub struct CardLine {
    pub company: String,
    pub units: u64,
    pub inspections: u64,
    pub inspected_units: u64,
    pub findings: u64,
    pub fixed_on_time: u64,
    pub overdue: u64,
    pub repeat: u64,
    pub open: u64,
    pub displays: u64,
    pub displays_met: u64,
    /// Percent of its displays that met their cadence; empty without displays.
    pub compliance: String,
}

fn card_line(s: &Scorecard) -> CardLine {
    CardLine {
        company: s.company.clone(),
        units: s.units,
        inspections: s.inspections,
        inspected_units: s.inspected_units,
        findings: s.counts.findings,
        fixed_on_time: s.counts.fixed_on_time,
        overdue: s.counts.overdue,
        repeat: s.counts.repeat,
        open: s.counts.open,
        displays: s.displays,
        displays_met: s.displays_met,
        compliance: s
            .compliance
            .map(|c| format!("{:.1}%", c * 100.0))
            .unwrap_or_default(),
    }
}

/// One month of the chart: the cards' sums and the bars' geometry.
pub struct MonthBars {
    pub month: String,
    pub findings: u64,
    pub fixed_on_time: u64,
    pub overdue: u64,
    pub inspections: u64,
    /// x of the group; heights and tops of the three bars (findings, on time, overdue).
    pub x: usize,
    pub bars: [(usize, usize); 3],
}

/// Pixels of the chart: plot height, one month's width (its three bars are 22 wide, 24
/// apart, in the template), the top margin.
pub const PLOT_H: usize = 160;
const MONTH_W: usize = 90;
const TOP: usize = 16;

fn month_bars(months: Vec<(String, Vec<Scorecard>)>) -> Vec<MonthBars> {
    let sums: Vec<(String, [u64; 4])> = months
        .into_iter()
        .map(|(m, cards)| {
            let mut s = [0u64; 4];
            for c in &cards {
                s[0] += c.counts.findings;
                s[1] += c.counts.fixed_on_time;
                s[2] += c.counts.overdue;
                s[3] += c.inspections;
            }
            (m, s)
        })
        .collect();
    let max = sums.iter().map(|(_, s)| s[0].max(s[1]).max(s[2])).max();
    let max = max.unwrap_or(0).max(1);
    let h = |n: u64| (n as u128 * PLOT_H as u128 / max as u128) as usize;
    sums.into_iter()
        .enumerate()
        .map(|(i, (month, s))| MonthBars {
            month,
            findings: s[0],
            fixed_on_time: s[1],
            overdue: s[2],
            inspections: s[3],
            x: 40 + i * MONTH_W,
            bars: [s[0], s[1], s[2]].map(|n| (h(n), TOP + PLOT_H - h(n))),
        })
        .collect()
}

/// The `CHART_MONTHS` months ending with `month` ("2026-11"), oldest first.
fn months_to(month: &str) -> Vec<String> {
    let Ok(last) = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d") else {
        return vec![month.to_owned()];
    };
    (0..CHART_MONTHS)
        .rev()
        .filter_map(|k| last.checked_sub_months(Months::new(k)))
        .map(|d| format!("{:04}-{:02}", d.year(), d.month()))
        .collect()
}

#[derive(Template)]
#[template(path = "console/scorecards.html")]
pub struct ScorecardsPage<'a> {
    pub c: &'a Ctx,
    pub month: String,
    pub company: String,
    pub companies: Vec<String>,
    pub lines: Vec<CardLine>,
    pub chart: Vec<MonthBars>,
    pub chart_w: usize,
    pub plot_h: usize,
    pub error: String,
    pub csv: String,
    pub xlsx: String,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Asked {
    pub month: Option<String>,
    pub company: Option<String>,
}

/// The cards of each month the chart shows before `a`'s, each the API's answer for that
/// month; the months are made together on one heavy permit.
async fn months_of(
    st: &Arc<ApiState>,
    who: &crate::store::TokenRow,
    p: &ScoreParams,
    a: &f::ScoreAnswer,
) -> Result<Vec<(String, Vec<Scorecard>)>, crate::api::ApiError> {
    let (st2, who, p, asked) = (st.clone(), who.clone(), p.clone(), a.month.clone());
    let earlier = st
        .heavy
        .run_async(async move {
            let mut months = Vec::new();
            for m in months_to(&asked).into_iter().filter(|m| *m != asked) {
                let q = ScoreParams {
                    month: Some(m.clone()),
                    ..p.clone()
                };
                months.push((m, f::scorecard_answer(&st2, &who, &q).await?.cards));
            }
            Ok::<_, crate::api::ApiError>(months)
        })
        .await??;
    let mut months = earlier;
    months.push((a.month.clone(), a.cards.clone()));
    Ok(months)
}

/// `GET /scorecards?month=&company=&format=`.
pub async fn page(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Query(q): Query<Asked>,
    Query(fmt): Query<Format>,
) -> Result<Response, Failure> {
    let who = c.require(insp::FINDING_READERS)?.token.clone();
    let p = ScoreParams {
        month: q.month.clone().filter(|m| !m.is_empty()),
        company: q.company.clone().filter(|m| !m.is_empty()),
        format: None,
    };
    let mut companies: Vec<String> = st
        .shared
        .inspect()
        .units
        .list
        .iter()
        .map(|u| u.company.clone())
        .collect();
    companies.sort();
    companies.dedup();
    let pairs = [
        ("month", p.month.as_deref()),
        ("company", p.company.as_deref()),
    ];
    let mut page = ScorecardsPage {
        c: &c,
        month: p.month.clone().unwrap_or_default(),
        company: p.company.clone().unwrap_or_default(),
        companies: if c.may(insp::COMPANY) && !c.may(insp::PLAN_READERS) {
            Vec::new()
        } else {
            companies
        },
        lines: Vec::new(),
        chart: Vec::new(),
        chart_w: 0,
        plot_h: PLOT_H,
        error: String::new(),
        csv: query(&pairs, Some("csv")),
        xlsx: query(&pairs, Some("xlsx")),
    };
    let download = wanted(&c, &fmt)?;
    let a = match f::scorecard_limited(&st, &who, &p).await {
        Ok(a) => a,
        Err(e) if e.status.is_client_error() && download.is_none() => {
            page.error = e.error;
            let mut r = html(&page);
            *r.status_mut() = e.status;
            return Ok(r);
        }
        Err(e) => return Err(c.api_failure(e)),
    };
    if let Some(d) = download {
        return f::scorecard_download(&st, a, d)
            .await
            .map_err(|e| c.api_failure(e));
    }
    let months = months_of(&st, &who, &p, &a)
        .await
        .map_err(|e| c.api_failure(e))?;
    page.month = a.month.clone();
    page.lines = a.cards.iter().map(card_line).collect();
    page.chart = month_bars(months);
    page.chart_w = 40 + page.chart.len() * MONTH_W;
    Ok(html(&page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_months_end_with_the_one_asked_across_a_year() {
        assert_eq!(
            months_to("2027-02"),
            ["2026-09", "2026-10", "2026-11", "2026-12", "2027-01", "2027-02"]
        );
        assert_eq!(months_to("junk"), ["junk"]);
    }

    #[test]
    fn the_tallest_bar_fills_the_plot_and_each_month_sums_its_companies() {
        let card = |company: &str, findings: u64, overdue: u64| Scorecard {
            company: company.into(),
            units: 1,
            units_by_kind: Default::default(),
            inspections: 2,
            inspected_units: 1,
            counts: crate::core::inspect::scorecard::Counts {
                findings,
                overdue,
                ..Default::default()
            },
            findings_by_item: Default::default(),
            displays: 0,
            displays_met: 0,
            compliance: None,
        };
        let b = month_bars(vec![
            ("2026-10".into(), vec![card("a", 1, 0)]),
            ("2026-11".into(), vec![card("a", 3, 1), card("b", 1, 1)]),
        ]);
        assert_eq!(b[1].findings, 4);
        assert_eq!(b[1].overdue, 2);
        assert_eq!(b[1].inspections, 4);
        assert_eq!(b[1].bars[0].0, PLOT_H);
        assert_eq!(b[0].bars[0].0, PLOT_H / 4);
        assert_eq!(
            b[1].bars[0].1 + b[1].bars[0].0,
            b[0].bars[0].1 + b[0].bars[0].0
        );
    }
}
