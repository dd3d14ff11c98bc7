//! The console's inspection pages as the bureau's inspectors and the companies use them
//! (issue 14), through the same router as `civicast serve`, on SQLite and on PostgreSQL:
//! every new page for every role; the plan as the API draws it; a visit recorded from the
//! phone form (one failing item, with a photo) that reaches its own company's inbox only; a
//! fix with a photo, closed by an inspector's recheck; forged and foreign posts refused with
//! nothing stored; and the scorecard page, chart and download equal to the API's.
//!
//! The API runs on a clock the test sets (`ShiftedClock`), in November 2026.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use civicast::store::{InspectStore, Role};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

mod common;
use common::*;

const HOST: &str = "127.0.0.1:8080";
const ORIGIN: &str = "http://127.0.0.1:8080";

const STAFF: &[(&str, Role)] = &[
    ("ins1", Role::Inspector),
    ("aud", Role::Auditor),
    ("adm", Role::Admin),
    ("op1", Role::Operator),
];

struct Answer {
    status: StatusCode,
    location: String,
    ctype: String,
    body: String,
}

impl Answer {
    fn csrf(&self) -> String {
        let m = "name=\"csrf\" value=\"";
        let at = self
            .body
            .find(m)
            .unwrap_or_else(|| panic!("no csrf in {}", self.body));
        let rest = &self.body[at + m.len()..];
        rest[..rest.find('"').expect("end")].to_owned()
    }
    /// The value of attribute `attr` on the element that also has `marker`.
    fn attr_near(&self, marker: &str, attr: &str) -> String {
        let at = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} not in {}", self.body));
        let start = self.body[..at].rfind('<').expect("tag start");
        let end = at + self.body[at..].find('>').expect("tag end");
        let tag = &self.body[start..end];
        let key = format!("{attr}=\"");
        let v = &tag[tag.find(&key).unwrap_or_else(|| panic!("{attr} in {tag}")) + key.len()..];
        v[..v.find('"').expect("quote")].to_owned()
    }
}

impl Bureau {
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let h = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        Answer {
            status: parts.status,
            location: h("location"),
            ctype: h("content-type"),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, uri: &str, cookie: Option<&str>) -> Answer {
        let mut b = Request::get(uri).header("host", HOST);
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        self.send(b.body(Body::empty()).expect("request")).await
    }

    async fn post(&self, uri: &str, cookie: &str, form: &[(&str, &str)]) -> Answer {
        let req = Request::post(uri)
            .header("host", HOST)
            .header("origin", ORIGIN)
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(serde_urlencoded::to_string(form).expect("form")))
            .expect("request");
        self.send(req).await
    }

    /// A multipart POST: text fields, then files as (name, bytes).
    async fn multipart(
        &self,
        uri: &str,
        cookie: &str,
        origin: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &[u8])],
    ) -> Answer {
        let boundary = "XcivicastX";
        let mut body: Vec<u8> = Vec::new();
        for (name, value) in fields {
            body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes());
        }
        for (name, bytes) in files {
            body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"p.png\"\r\nContent-Type: image/png\r\n\r\n").bytes());
            body.extend_from_slice(bytes);
            body.extend(b"\r\n");
        }
        body.extend(format!("--{boundary}--\r\n").bytes());
        let req = Request::post(uri)
            .header("host", HOST)
            .header("origin", origin)
            .header("cookie", cookie)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .expect("request");
        self.send(req).await
    }

    async fn sign_in(&self, account: &str) -> String {
        let req = Request::post("/signin")
            .header("host", HOST)
            .header("origin", ORIGIN)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={}", self.tokens[account])))
            .expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "sign-in of {account}");
        let set = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("civicast_session="))
            .expect("session cookie")
            .to_owned();
        set.split(';').next().expect("pair").to_owned()
    }

    /// The API's JSON answer to a GET as `who`.
    async fn api(&self, uri: &str, who: &str) -> Value {
        let (code, body) = call(&self.router, "GET", uri, Some(&self.tokens[who]), None, "").await;
        assert!(code.is_success(), "{uri} as {who}: {code} {body}");
        json(&body)
    }

    async fn api_text(&self, uri: &str, who: &str) -> String {
        let (code, body) = call(&self.router, "GET", uri, Some(&self.tokens[who]), None, "").await;
        assert!(code.is_success(), "{uri} as {who}: {code} {body}");
        body
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await;
    }
}

/// Each new page and the status each role gets there.
const PAGES: [(&str, [u16; 6]); 4] = [
    // (path, [ins1, aud, adm, op1, co-bus, co-taxi])
    ("/inspect", [200, 200, 200, 403, 403, 403]),
    ("/inspect?week=2026-W46", [200, 200, 200, 403, 403, 403]),
    ("/findings", [200, 200, 200, 403, 200, 200]),
    ("/scorecards", [200, 200, 200, 403, 200, 200]),
];
const ACCOUNTS: [&str; 6] = ["ins1", "aud", "adm", "op1", "co-bus", "co-taxi"];

async fn every_page_for_every_role(b: &Bureau) {
    for (path, _) in PAGES {
        let a = b.get(path, None).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{path} signed out");
    }
    for (i, who) in ACCOUNTS.into_iter().enumerate() {
        let cookie = b.sign_in(who).await;
        for (path, want) in PAGES {
            let a = b.get(path, Some(&cookie)).await;
            assert_eq!(a.status.as_u16(), want[i], "{path} as {who}: {}", a.body);
            if want[i] == 403 {
                assert!(a.body.contains("此页面需要角色"), "{path}: {}", a.body);
            } else {
                assert!(a.body.contains(who), "{path} names {who}");
                assert!(a.body.contains("<html lang=\"zh-CN\">"), "{path}");
            }
        }
        // Their first page is their own work; the nav links only what they may open.
        let home = b.get("/", Some(&cookie)).await;
        match who {
            "ins1" => assert_eq!(home.location, "/inspect"),
            "co-bus" | "co-taxi" => assert_eq!(home.location, "/findings"),
            _ => assert_eq!(home.status, StatusCode::OK, "{who}"),
        }
        let page = b.get("/about", Some(&cookie)).await;
        assert_eq!(
            page.body.contains("href=\"/inspect\""),
            want_of(i, "/inspect"),
            "{who}: link to /inspect"
        );
        assert_eq!(
            page.body.contains("href=\"/findings\""),
            want_of(i, "/findings"),
            "{who}: link to /findings"
        );
        assert_eq!(
            page.body.contains("href=\"/adsets\""),
            matches!(who, "aud" | "adm" | "op1"),
            "{who}: link to /adsets"
        );
    }
}

fn want_of(i: usize, path: &str) -> bool {
    PAGES.iter().any(|(p, w)| *p == path && w[i] == 200)
}

/// The plan page lists every unit the API's plan has, with its status, and the same tallies.
async fn plan_as_the_api_draws_it(b: &Bureau, ins: &str) {
    let plan = b.api("/api/v1/inspections/plan", "ins1").await;
    let rows = plan["rows"].as_array().expect("rows");
    assert!(!rows.is_empty(), "{plan}");
    let page = b.get("/inspect", Some(ins)).await;
    for r in rows {
        let s = |k: &str| r[k].as_str().expect(k).to_owned();
        // A unit short of visits last week is listed twice: overdue for then, due now.
        let entry = format!(
            "data-unit=\"{}\" data-status=\"{}\" data-week=\"{}\"",
            s("unit"),
            s("status"),
            s("week")
        );
        assert!(page.body.contains(&entry), "{entry} in {}", page.body);
    }
    assert_eq!(
        page.body.matches("class=\"card status-").count(),
        rows.len()
    );
    for k in ["due", "overdue", "done"] {
        let want = plan[k].to_string();
        assert_eq!(
            page.attr_near(&format!("data-{k}="), &format!("data-{k}")),
            want
        );
    }
    // The English page says the same in English.
    let en = format!("{ins}; civicast_lang=en");
    let page = b.get("/inspect", Some(&en)).await;
    assert!(page.body.contains("<html lang=\"en\">"));
    assert!(
        page.body.contains("Fixed, waiting for recheck"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Record the visit"));
}

/// Forged posts: no CSRF, another session's, another site, the wrong role; nothing stored.
async fn forged_posts_are_refused(b: &Bureau, ins: &str) {
    let csrf = b.get("/inspect", Some(ins)).await.csrf();
    let other = b.sign_in("ins1").await;
    let foreign = b.get("/inspect", Some(&other)).await.csrf();
    assert_ne!(csrf, foreign);
    let op = b.sign_in("op1").await;
    let op_csrf = b.get("/about", Some(&op)).await.csrf();
    let visit = |c: &str| {
        vec![
            ("csrf", c.to_owned()),
            ("unit", "bus-9".to_owned()),
            ("pass:ads", "pass".to_owned()),
            ("pass:atmosphere", "pass".to_owned()),
            ("pass:cleanliness", "pass".to_owned()),
        ]
    };
    for (cookie, c, origin, why) in [
        (ins, "", ORIGIN, "no csrf"),
        (ins, foreign.as_str(), ORIGIN, "another session's csrf"),
        (ins, csrf.as_str(), "http://evil.example", "another site"),
        (op.as_str(), op_csrf.as_str(), ORIGIN, "an operator"),
    ] {
        let fields = visit(c);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = b
            .multipart("/inspect/visits", cookie, origin, &fields, &[])
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{why}: {}", a.body);
    }
    let a = b
        .post(
            "/inspect/propose",
            ins,
            &[("csrf", &foreign), ("day", "2026-11-17")],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let stored = b.db.inspections_between(0, i64::MAX).await.expect("read");
    assert!(stored.is_empty(), "{stored:?}");
    assert!(b.db.findings(None).await.expect("read").is_empty());
}

/// A visit from the form: bus-K1-0001's ads fail, with a note and a photo; bus-9 passes.
async fn visits_recorded(b: &Bureau, ins: &str) -> String {
    let csrf = b.get("/inspect", Some(ins)).await.csrf();
    let form = |unit: &'static str, fail: bool| {
        vec![
            ("csrf", csrf.clone()),
            ("unit", unit.to_owned()),
            ("pass:ads", if fail { "fail" } else { "pass" }.to_owned()),
            ("note:ads", if fail { "screen dark" } else { "" }.to_owned()),
            ("pass:atmosphere", "pass".to_owned()),
            ("pass:cleanliness", "pass".to_owned()),
        ]
    };
    // A photo that is no image: refused as the API refuses it, nothing recorded.
    let f = form("bus-K1-0001", true);
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = b
        .multipart(
            "/inspect/visits",
            ins,
            ORIGIN,
            &f,
            &[("photo:ads", b"GIF89a....")],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(a.body.contains("JPEG, PNG or WebP"), "{}", a.body);
    // An item left unanswered: the API's own refusal, naming it.
    let a = b
        .multipart("/inspect/visits", ins, ORIGIN, &f[..3], &[])
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(a.body.contains("atmosphere"), "{}", a.body);
    assert!(b
        .db
        .inspections_between(0, i64::MAX)
        .await
        .expect("read")
        .is_empty());
    let a = b
        .multipart("/inspect/visits", ins, ORIGIN, &f, &[("photo:ads", PNG)])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert!(
        a.location.starts_with("/inspect?recorded="),
        "{}",
        a.location
    );
    assert!(a.location.ends_with("&findings=1"), "{}", a.location);
    let shown = b.get(&a.location, Some(ins)).await;
    assert!(shown.body.contains("巡查已记录"), "{}", shown.body);
    let f2 = form("bus-9", false);
    let f2: Vec<(&str, &str)> = f2.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = b.multipart("/inspect/visits", ins, ORIGIN, &f2, &[]).await;
    assert!(a.location.ends_with("&findings=0"), "{}", a.location);
    let found = b.api("/api/v1/findings", "ins1").await;
    let rows = found["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{found}");
    assert_eq!(rows[0]["unit"], "bus-K1-0001");
    assert_eq!(rows[0]["events"][0]["note"], "screen dark");
    let sha = rows[0]["events"][0]["photos"][0].as_str().expect("photo");
    assert_eq!(sha.len(), 64);
    rows[0]["id"].as_str().expect("id").to_owned()
}

/// The finding reaches city-bus's inbox, not jiaotong-taxi's; city-bus fixes it with a photo.
async fn company_answers(b: &Bureau, id: &str) {
    let bus = b.sign_in("co-bus").await;
    let taxi = b.sign_in("co-taxi").await;
    let inbox = b.get("/findings?tab=open", Some(&bus)).await;
    assert!(
        inbox.body.contains(&format!("data-finding=\"{id}\"")),
        "{}",
        inbox.body
    );
    // The deadline in the deployment's zone: visit at 10:00 +08:00, ads fixed within 3 days.
    assert!(
        inbox.body.contains("<time>2026-11-21 10:00</time>"),
        "{}",
        inbox.body
    );
    let other = b.get("/findings?tab=open", Some(&taxi)).await;
    assert!(!other.body.contains(id), "{}", other.body);
    let (code, _) = call(
        &b.router,
        "GET",
        &format!("/api/v1/findings/{id}"),
        Some(&b.tokens["co-taxi"]),
        None,
        "",
    )
    .await;
    let page = b.get(&format!("/findings/{id}"), Some(&taxi)).await;
    assert_eq!(page.status, code, "as the API answers");
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let csrf = b.get("/findings", Some(&taxi)).await.csrf();
    let a = b
        .multipart(
            &format!("/findings/{id}/rectify"),
            &taxi,
            ORIGIN,
            &[("csrf", &csrf), ("note", "not ours")],
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    company_fixes(b, id, &bus, &taxi).await;
}

/// city-bus sees the finding's photo (jiaotong-taxi does not) and reports the fix.
async fn company_fixes(b: &Bureau, id: &str, bus: &str, taxi: &str) {
    // The photo of the finding: its company sees it, another does not.
    let v = b.api(&format!("/api/v1/findings/{id}"), "ins1").await;
    let sha = v["events"][0]["photos"][0].as_str().expect("photo");
    let p = b.get(&format!("/findings/photos/{sha}"), Some(bus)).await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(p.ctype, "image/png");
    let p = b.get(&format!("/findings/photos/{sha}"), Some(taxi)).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    // An empty note is refused as the API refuses it; then the fix.
    let page = b.get(&format!("/findings/{id}"), Some(bus)).await;
    assert!(page.body.contains("/rectify"), "{}", page.body);
    let csrf = page.csrf();
    let url = format!("/findings/{id}/rectify");
    let a = b
        .multipart(&url, bus, ORIGIN, &[("csrf", &csrf), ("note", " ")], &[])
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    let a = b
        .multipart(
            &url,
            bus,
            ORIGIN,
            &[("csrf", ""), ("note", "replaced")],
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "forged: {}", a.body);
    // Within the sessions' 12 hours: the fix that afternoon.
    b.at("2026-11-18T16:00:00+08:00");
    let a = b
        .multipart(
            &url,
            bus,
            ORIGIN,
            &[("csrf", &csrf), ("note", "board replaced")],
            &[("photo", PNG)],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let v = b.api(&format!("/api/v1/findings/{id}"), "co-bus").await;
    assert_eq!(v["state"], "rectified", "{v}");
    assert_eq!(v["events"][1]["note"], "board replaced");
    let rectified = b.get("/findings?tab=rectified", Some(bus)).await;
    assert!(rectified.body.contains(id));
}

/// The inspector sees the fix waiting and closes it.
async fn inspector_closes(b: &Bureau, ins: &str, id: &str) {
    let page = b.get("/inspect", Some(ins)).await;
    assert_eq!(
        page.attr_near(&format!("data-finding=\"{id}\""), "data-state"),
        "rectified"
    );
    let csrf = page.csrf();
    let url = format!("/findings/{id}/recheck");
    let aud = b.sign_in("aud").await;
    let aud_csrf = b.get("/findings", Some(&aud)).await.csrf();
    let a = b
        .post(&url, &aud, &[("csrf", &aud_csrf), ("result", "closed")])
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "an auditor only reads");
    let a = b
        .post(
            &url,
            ins,
            &[
                ("csrf", &csrf),
                ("result", "closed"),
                ("note", "checked"),
                ("back", "/inspect"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.location, format!("/inspect?changed={id}&state=closed"));
    let v = b.api(&format!("/api/v1/findings/{id}"), "aud").await;
    assert_eq!(v["state"], "closed", "{v}");
    // Closing twice is the API's conflict.
    let a = b
        .post(&url, ins, &[("csrf", &csrf), ("result", "closed")])
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let closed = b
        .get("/findings?tab=closed", Some(&b.sign_in("co-bus").await))
        .await;
    assert!(closed.body.contains(id));
}

/// The scorecard page's table and chart hold the API's numbers; its CSV is the API's.
async fn scorecard_as_the_api(b: &Bureau) {
    let aud = b.sign_in("aud").await;
    let api = b.api("/api/v1/scorecards?month=2026-11", "aud").await;
    let page = b.get("/scorecards?month=2026-11", Some(&aud)).await;
    assert_eq!(page.status, StatusCode::OK);
    let rows = api["rows"].as_array().expect("rows");
    assert!(!rows.is_empty());
    let mut sums = [0u64; 3];
    for r in rows {
        let co = r["company"].as_str().expect("company");
        let at = page
            .body
            .find(&format!("<tr data-company=\"{co}\">"))
            .unwrap_or_else(|| panic!("{co} row"));
        let row = &page.body[at..at + page.body[at..].find("</tr>").expect("row end")];
        for col in [
            "units",
            "inspections",
            "findings",
            "fixed_on_time",
            "overdue",
            "open",
            "displays_met",
        ] {
            let m = format!("data-col=\"{col}\">{}<", r[col]);
            assert!(row.contains(&m), "{co} {col}: {m} in {row}");
        }
        for (i, k) in ["findings", "fixed_on_time", "overdue"].iter().enumerate() {
            sums[i] += r[k].as_u64().expect("count");
        }
    }
    let bus = rows
        .iter()
        .find(|r| r["company"] == "city-bus")
        .expect("city-bus");
    assert_eq!(bus["findings"], 1, "{bus}");
    assert_eq!(bus["fixed_on_time"], 1, "{bus}");
    let month = "data-month=\"2026-11\"";
    assert_eq!(page.attr_near(month, "data-findings"), sums[0].to_string());
    assert_eq!(
        page.attr_near(month, "data-fixed-on-time"),
        sums[1].to_string()
    );
    assert_eq!(page.attr_near(month, "data-overdue"), sums[2].to_string());
    assert_eq!(page.body.matches("<g class=\"month\"").count(), 6);
    assert_eq!(
        page.attr_near("data-month=\"2026-10\"", "data-findings"),
        "0"
    );
    let csv = b
        .get("/scorecards?month=2026-11&format=csv", Some(&aud))
        .await;
    assert!(csv.ctype.starts_with("text/csv"), "{}", csv.ctype);
    assert_eq!(
        csv.body,
        b.api_text("/api/v1/scorecards?month=2026-11&format=csv", "aud")
            .await
    );
    let xlsx = b
        .get("/scorecards?month=2026-11&format=xlsx", Some(&aud))
        .await;
    assert_eq!(xlsx.status, StatusCode::OK);
    // A company sees its own card only, and another's is refused as the API refuses it.
    let taxi = b.sign_in("co-taxi").await;
    let own = b.get("/scorecards?month=2026-11", Some(&taxi)).await;
    assert!(own.body.contains("data-company=\"jiaotong-taxi\""));
    assert!(!own.body.contains("data-company=\"city-bus\""));
    let theirs = b
        .get("/scorecards?month=2026-11&company=city-bus", Some(&taxi))
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
}

/// An inspector's failing visit on bus-K1-0001 from the phone form; the finding it opened.
async fn failing_visit(b: &Bureau, ins: &str, note: &str) -> String {
    let before = b.api("/api/v1/findings", "ins1").await;
    let known: Vec<Value> = before["rows"].as_array().expect("rows").clone();
    let csrf = b.get("/inspect", Some(ins)).await.csrf();
    let f = [
        ("csrf", csrf.as_str()),
        ("unit", "bus-K1-0001"),
        ("pass:ads", "fail"),
        ("note:ads", note),
        ("pass:atmosphere", "pass"),
        ("pass:cleanliness", "pass"),
    ];
    let a = b.multipart("/inspect/visits", ins, ORIGIN, &f, &[]).await;
    assert!(a.location.ends_with("&findings=1"), "{}", a.location);
    let after = b.api("/api/v1/findings", "ins1").await;
    let new: Vec<&Value> = after["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| !known.iter().any(|k| k["id"] == r["id"]))
        .collect();
    assert_eq!(new.len(), 1, "{after}");
    assert_eq!(new[0]["events"][0]["note"], note);
    new[0]["id"].as_str().expect("id").to_owned()
}

/// The inspector moves a deadline on the finding's page, in the deployment's wall clock: a
/// past one is refused there with the API's words and nothing changes; the company's page
/// shows the new one.
async fn deadline_moved(b: &Bureau, ins: &str, id: &str) {
    let url = format!("/findings/{id}");
    let page = b.get(&url, Some(ins)).await;
    assert!(
        page.body.contains(&format!("{url}/deadline")),
        "{}",
        page.body
    );
    let csrf = page.csrf();
    let before = b.api(&format!("/api/v1/findings/{id}"), "ins1").await;
    let a = b
        .post(
            &format!("{url}/deadline"),
            ins,
            &[
                ("csrf", &csrf),
                ("deadline", "2026-11-10T18:00"),
                ("back", &url),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(a.body.contains("deadline"), "{}", a.body);
    assert!(
        a.body.contains("role=\"alert\""),
        "shown on the page: {}",
        a.body
    );
    assert_eq!(
        b.api(&format!("/api/v1/findings/{id}"), "ins1").await,
        before
    );
    // Forged, and a company's: refused, nothing changed.
    let bus = b.sign_in("co-bus").await;
    let bus_csrf = b.get(&url, Some(&bus)).await.csrf();
    for (cookie, c, why) in [
        (ins, "", "no csrf"),
        (bus.as_str(), bus_csrf.as_str(), "a company"),
    ] {
        let a = b
            .post(
                &format!("{url}/deadline"),
                cookie,
                &[("csrf", c), ("deadline", "2026-11-28T18:00")],
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{why}: {}", a.body);
        let a = b
            .post(
                &format!("{url}/recheck-from-receipts"),
                cookie,
                &[("csrf", c)],
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{why}: {}", a.body);
    }
    assert_eq!(
        b.api(&format!("/api/v1/findings/{id}"), "ins1").await,
        before
    );
    let a = b
        .post(
            &format!("{url}/deadline"),
            ins,
            &[
                ("csrf", &csrf),
                ("deadline", "2026-11-27T18:00"),
                ("note", "parts on order"),
                ("back", &url),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let v = b.api(&format!("/api/v1/findings/{id}"), "ins1").await;
    assert_eq!(v["deadline"], "2026-11-27T18:00:00+08:00", "{v}");
    let events = v["events"].as_array().expect("events");
    assert_eq!(events.last().expect("event")["kind"], "deadline", "{v}");
    let theirs = b.get(&url, Some(&bus)).await;
    assert!(
        theirs.body.contains("<time>2026-11-27 18:00</time>"),
        "{}",
        theirs.body
    );
    assert!(
        !theirs.body.contains("/deadline\""),
        "a company does not move deadlines"
    );
}

/// The fix of `id` on bus-1's bus is rechecked from the receipts on the finding's page: too
/// early, the page names the day that has not ended; after a day of plays, it closes.
async fn closed_from_receipts(b: &Bureau, id: &str) {
    let url = format!("/findings/{id}");
    let bus = b.sign_in("co-bus").await;
    let csrf = b.get(&url, Some(&bus)).await.csrf();
    let a = b
        .multipart(
            &format!("{url}/rectify"),
            &bus,
            ORIGIN,
            &[("csrf", &csrf), ("note", "controller restarted")],
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let ins = b.sign_in("ins1").await;
    let page = b.get(&url, Some(&ins)).await;
    let action = format!("{url}/recheck-from-receipts");
    assert!(page.body.contains(&action), "{}", page.body);
    let csrf = page.csrf();
    let a = b
        .post(&action, &ins, &[("csrf", &csrf), ("back", &url)])
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(a.body.contains("2026-11-20 has not ended"), "{}", a.body);
    assert_eq!(
        b.api(&format!("/api/v1/findings/{id}"), "ins1").await["state"],
        "rectified"
    );
    b.online("bus-1", ms("2026-11-19T23:00:00+08:00")).await;
    b.played(
        "bus-1",
        ms("2026-11-20T00:00:00+08:00"),
        ms("2026-11-21T00:00:00+08:00"),
    )
    .await;
    b.at("2026-11-21T09:00:00+08:00");
    let ins = b.sign_in("ins1").await;
    let csrf = b.get(&url, Some(&ins)).await.csrf();
    let a = b
        .post(&action, &ins, &[("csrf", &csrf), ("back", &url)])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.location, format!("{url}?changed={id}&state=closed"));
    let v = b.api(&format!("/api/v1/findings/{id}"), "aud").await;
    let last = v["events"]
        .as_array()
        .expect("events")
        .last()
        .expect("event")
        .clone();
    assert_eq!(
        (v["state"].clone(), last["source"].clone()),
        (Value::from("closed"), Value::from("receipts")),
        "{v}"
    );
    let shown = b.get(&url, Some(&ins)).await;
    assert!(
        shown.body.contains("met its cadence on 2026-11-20"),
        "{}",
        shown.body
    );
}

/// A finding left past its deadline is on the company's overdue tab, and the month's
/// scorecard page counts it as the API does.
async fn gone_overdue(b: &Bureau, id: &str) {
    b.at("2026-11-25T12:00:00+08:00");
    let bus = b.sign_in("co-bus").await;
    let over = b.get("/findings?tab=overdue", Some(&bus)).await;
    assert!(
        over.body.contains(&format!("data-finding=\"{id}\"")),
        "{}",
        over.body
    );
    let open = b.get("/findings?tab=open", Some(&bus)).await;
    assert!(!open.body.contains(&format!("data-finding=\"{id}\"")));
    let api = b
        .api("/api/v1/scorecards?month=2026-11&company=city-bus", "aud")
        .await;
    let card = &api["rows"][0];
    assert_eq!(card["overdue"], 1, "{api}");
    assert_eq!(card["findings"], 3, "{api}");
    let aud = b.sign_in("aud").await;
    let page = b.get("/scorecards?month=2026-11", Some(&aud)).await;
    let at = page
        .body
        .find("<tr data-company=\"city-bus\">")
        .expect("city-bus row");
    let row = &page.body[at..at + page.body[at..].find("</tr>").expect("row end")];
    for col in ["findings", "overdue", "fixed_on_time"] {
        let m = format!("data-col=\"{col}\">{}<", card[col]);
        assert!(row.contains(&m), "{col}: {m} in {row}");
    }
}

/// The rest of the story on the pages: a deadline moved, a fix closed from the display's
/// receipts, and a finding gone overdue, each as the API has it.
async fn deadlines_receipts_and_overdue(b: &Bureau) {
    b.at("2026-11-19T09:00:00+08:00");
    let ins = b.sign_in("ins1").await;
    let moved = failing_visit(b, &ins, "board dark again").await;
    deadline_moved(b, &ins, &moved).await;
    closed_from_receipts(b, &moved).await;
    let ins = b.sign_in("ins1").await;
    let late = failing_visit(b, &ins, "slogan torn").await;
    gone_overdue(b, &late).await;
}

async fn whole_story(b: Bureau) -> Bureau {
    b.at("2026-11-18T10:00:00+08:00");
    every_page_for_every_role(&b).await;
    let ins = b.sign_in("ins1").await;
    plan_as_the_api_draws_it(&b, &ins).await;
    forged_posts_are_refused(&b, &ins).await;
    let id = visits_recorded(&b, &ins).await;
    company_answers(&b, &id).await;
    inspector_closes(&b, &ins, &id).await;
    scorecard_as_the_api(&b).await;
    metrics_count_the_story(&b).await;
    deadlines_receipts_and_overdue(&b).await;
    b
}

/// `/metrics`: the two visits, the one finding they opened, and that finding closed now.
async fn metrics_count_the_story(b: &Bureau) {
    let (code, text) = call(&b.router, "GET", "/metrics", None, None, "").await;
    assert_eq!(code, StatusCode::OK);
    for line in [
        "civicast_inspections_recorded_total 2",
        "civicast_findings_opened_total 1",
        "civicast_findings{state=\"closed\",kind=\"bus\"} 1",
        "civicast_findings{state=\"open\",kind=\"bus\"} 0",
        "civicast_findings{state=\"overdue\",kind=\"bus\"} 0",
        "# TYPE civicast_findings gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_pages_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(dir.path(), "console.db").await;
    whole_story(Bureau::start(tempfile::tempdir().expect("tempdir"), store.into(), STAFF).await)
        .await
        .stop()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn inspection_pages_on_postgres() {
    let base = std::env::var("CIVICAST_TEST_PG").expect("CIVICAST_TEST_PG");
    with_schema(base, |schema| async move {
        let store = schema.store().await;
        whole_story(
            Bureau::start(tempfile::tempdir().expect("tempdir"), store.into(), STAFF).await,
        )
        .await
        .stop()
        .await;
    })
    .await;
}
