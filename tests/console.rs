//! The web console as a browser uses it, through the same router as `civicast serve`:
//! signing in and out, every page for every role, sessions that end with their token,
//! forged and cross-site posts refused, uploads refused at their line before anything is
//! stored, approval by a second operator only, and the language toggle. Each scenario runs
//! on SQLite, and on PostgreSQL when CIVICAST_TEST_PG is set.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use civicast::api;
use civicast::store::{ApiStore, Db, Role};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

mod common;
use common::{
    api_router, create_tokens, embedded_port, json, online_now, sqlite_store, start_daemon,
    stop_and_drain, wait_until, with_schema, Broker, City, Client, Display, BUS_FEED,
    FLEET_WITHOUT_ROUTES, ONE_SLOGAN_ADSET, P,
};

const HOST: &str = "127.0.0.1:8080";
const ORIGIN: &str = "http://127.0.0.1:8080";

/// The daemon on a test city with the console's router, and a token per account.
struct Console {
    router: axum::Router,
    store: Db,
    tokens: HashMap<&'static str, String>,
    shutdown: CancellationToken,
    running: civicast::daemon::App,
    _dir: tempfile::TempDir,
}

/// One answer: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn set_cookie(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }
    /// The CSRF token a page's forms carry.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end")].to_owned()
    }
}

impl Console {
    async fn start(store: Db) -> Console {
        let dir = tempfile::tempdir().expect("tempdir");
        City {
            fleet: FLEET_WITHOUT_ROUTES,
            feeds: BUS_FEED,
            adset: ONE_SLOGAN_ADSET,
            ..City::default()
        }
        .write(dir.path());
        let (running, shutdown) =
            start_daemon(dir.path(), store.clone(), Broker::Embedded, |_| {}).await;
        let tokens = create_tokens(
            &store,
            &[
                ("op1", Role::Operator),
                ("op2", Role::Operator),
                ("aud", Role::Auditor),
                ("adm", Role::Admin),
            ],
        )
        .await;
        Console {
            router: api_router(store.clone(), &running),
            store,
            tokens,
            shutdown,
            running,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await;
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// A GET with `cookie` (a whole `Cookie` header value, or none).
    async fn get(&self, uri: &str, cookie: Option<&str>) -> Answer {
        let mut b = Request::get(uri).header("host", HOST);
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        self.send(b.body(Body::empty()).expect("request")).await
    }

    /// The HTTP API's answer to a GET with `account`'s bearer token: status and body.
    async fn api(&self, uri: &str, account: &str) -> (StatusCode, String) {
        let req = Request::get(uri)
            .header("host", HOST)
            .header("authorization", format!("Bearer {}", self.tokens[account]))
            .body(Body::empty())
            .expect("request");
        let a = self.send(req).await;
        (a.status, a.body)
    }

    /// A form POST with `cookie` and `origin` (None: no Origin header).
    async fn post(
        &self,
        uri: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        form: &[(&str, &str)],
    ) -> Answer {
        let mut b = Request::post(uri)
            .header("host", HOST)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        let body = serde_urlencoded::to_string(form).expect("form");
        self.send(b.body(Body::from(body)).expect("request")).await
    }

    /// Signs `account` in through the form; the `Cookie` header value of its session.
    async fn sign_in(&self, account: &str) -> String {
        let a = self
            .post(
                "/signin",
                None,
                Some(ORIGIN),
                &[("token", &self.tokens[account])],
            )
            .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        assert_eq!(a.location(), "/");
        let c = a.set_cookie();
        let session = c
            .iter()
            .find(|c| c.starts_with("civicast_session="))
            .expect("a session cookie");
        session.split(';').next().expect("pair").to_owned()
    }

    /// A multipart upload of `text` (pasted, as `format`) with `csrf`.
    async fn upload(&self, cookie: &str, csrf: &str, text: &str, format: &str) -> Answer {
        let boundary = "XcivicastX";
        let mut body = String::new();
        for (name, value) in [("csrf", csrf), ("text", text), ("format", format)] {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\"\r\nContent-Type: application/octet-stream\r\n\r\n\r\n--{boundary}--\r\n"
        ));
        let req = Request::post("/upload")
            .header("host", HOST)
            .header("origin", ORIGIN)
            .header("cookie", cookie)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .expect("request");
        self.send(req).await
    }
}

/// Runs `scenario` on SQLite.
async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(Console) -> Fut,
    Fut: std::future::Future<Output = Console>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(dir.path(), "console.db").await;
    scenario(Console::start(store.into()).await)
        .await
        .stop()
        .await;
}

/// Runs `scenario` on a fresh PostgreSQL schema.
async fn on_pg<F, Fut>(scenario: F)
where
    F: FnOnce(Console) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Console> + Send + 'static,
{
    let base = std::env::var("CIVICAST_TEST_PG").expect(
        "CIVICAST_TEST_PG is not set: point it at a PostgreSQL database \
         (postgres://postgres@127.0.0.1:5432/test)",
    );
    with_schema(base, |schema| async move {
        let store = schema.store().await;
        scenario(Console::start(store.into()).await)
            .await
            .stop()
            .await;
    })
    .await;
}

/// Each page and the status each role gets there.
const PAGES: [(&str, [u16; 3]); 15] = [
    // (path, [operator, auditor, admin])
    ("/", [200, 200, 200]),
    ("/overview/live", [200, 200, 200]),
    ("/adsets", [200, 200, 200]),
    ("/adsets/civility", [200, 200, 200]),
    ("/adsets/civility/rev/1", [200, 200, 200]),
    ("/adsets/civility/diff?from=1&to=1", [200, 200, 200]),
    ("/upload", [200, 403, 200]),
    ("/displays", [200, 200, 200]),
    ("/displays/bus-1", [200, 200, 200]),
    ("/audit/plays?group_by=class", [403, 200, 200]),
    ("/audit/compliance", [403, 200, 200]),
    ("/audit/sample", [403, 200, 200]),
    ("/audit/reconcile", [403, 200, 200]),
    ("/urgent", [200, 200, 200]),
    ("/about", [200, 200, 200]),
];

async fn every_page_for_every_role(app: Console) -> Console {
    // Signed out: the sign-in form at /, every other page sends there.
    let a = app.get("/", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("<html lang=\"zh-CN\">"), "{}", a.body);
    assert!(a.body.contains("name=\"token\""), "{}", a.body);
    assert!(
        a.body.contains("<label for=\"token\">访问令牌</label>"),
        "{}",
        a.body
    );
    for (path, _) in &PAGES[1..] {
        let a = app.get(path, None).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{path} signed out");
        assert_eq!(a.location(), "/");
    }
    for (i, account) in ["op1", "aud", "adm"].into_iter().enumerate() {
        let cookie = app.sign_in(account).await;
        for (path, want) in PAGES {
            let a = app.get(path, Some(&cookie)).await;
            assert_eq!(
                a.status.as_u16(),
                want[i],
                "{path} as {account}: {}",
                a.body
            );
            if want[i] == 403 {
                assert!(a.body.contains("此页面需要角色"), "{path}: {}", a.body);
                continue;
            }
            assert!(!a.body.contains("{{"), "{path}");
            if path != "/overview/live" {
                assert!(a.body.contains("<html lang=\"zh-CN\">"), "{path}");
                assert!(a.body.contains(account), "{path} names who is signed in");
            }
        }
    }
    let cookie = app.sign_in("op1").await;
    let has = |a: &Answer, what: &[&str]| {
        for w in what {
            assert!(a.body.contains(w), "{w} missing in {}", a.body);
        }
    };
    has(
        &app.get("/", Some(&cookie)).await,
        &[
            "data-live=\"/overview/live\"",
            "bus_led",
            "消息代理",
            "数据库",
            "<th scope=\"row\">bus</th>",
        ],
    );
    has(
        &app.get("/adsets", Some(&cookie)).await,
        &["/adsets/civility", "已批准"],
    );
    has(
        &app.get("/adsets/civility/rev/1", Some(&cookie)).await,
        &["讲文明 树新风", "id=\"L1\""],
    );
    has(
        &app.get("/displays?class=taxi_top", Some(&cookie)).await,
        &["taxi-1", "符合条件： 1 / 3"],
    );
    has(
        &app.get("/displays/bus-1", Some(&cookie)).await,
        &["bus_led", "<th scope=\"row\">bus</th>"],
    );
    let aud = app.sign_in("aud").await;
    let plays = app
        .get("/audit/plays?group_by=class&from=2026-01-01", Some(&aud))
        .await;
    has(&plays, &["<th scope=\"col\">class</th>", "合计"]);
    let bad = app.get("/audit/plays?group_by=nothing", Some(&aud)).await;
    has(&bad, &["group_by", "role=\"alert\""]);
    // A 404 is a page of its own.
    let a = app.get("/adsets/nothing", Some(&cookie)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body.contains("未找到"));
    app
}

async fn sessions_end_as_they_should(app: Console) -> Console {
    let cookie = app.sign_in("op1").await;
    let a = app
        .post(
            "/signin",
            None,
            Some(ORIGIN),
            &[("token", &app.tokens["op1"])],
        )
        .await;
    let set = a.set_cookie().join("\n");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    // Behind a TLS proxy the cookie is Secure.
    let req = Request::post("/signin")
        .header("host", HOST)
        .header("origin", "https://127.0.0.1:8080")
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={}", app.tokens["op1"])))
        .expect("request");
    assert!(app
        .send(req)
        .await
        .set_cookie()
        .join("")
        .contains("; Secure"));
    // A wrong token: the form again, no cookie.
    let a = app
        .post("/signin", None, Some(ORIGIN), &[("token", "cvc_wrong")])
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.set_cookie().is_empty());
    assert!(a.body.contains("令牌无效或已吊销"));
    // A sign-in posted from another site.
    let a = app
        .post(
            "/signin",
            None,
            Some("http://evil.example"),
            &[("token", &app.tokens["op1"])],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.set_cookie().is_empty());
    // Unknown and foreign session ids are signed out.
    for foreign in [
        "civicast_session=0000",
        "civicast_session=",
        &format!("civicast_session={}", app.tokens["op1"]),
    ] {
        let a = app.get("/adsets", Some(foreign)).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{foreign}");
    }
    // Sign-out ends the session in the database, not only in the browser.
    let page = app.get("/adsets", Some(&cookie)).await;
    let a = app
        .post(
            "/signout",
            Some(&cookie),
            Some(ORIGIN),
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(a.set_cookie().join("").contains("Max-Age=0"));
    assert_eq!(
        app.get("/adsets", Some(&cookie)).await.status,
        StatusCode::SEE_OTHER
    );
    // A revoked token's sessions end at once.
    let aud = app.sign_in("aud").await;
    assert_eq!(app.get("/adsets", Some(&aud)).await.status, StatusCode::OK);
    let id = app
        .store
        .token_by_hash(&api::token_hash(&app.tokens["aud"]))
        .await
        .expect("read")
        .expect("token")
        .id;
    assert!(app.store.revoke_token(id, 1).await.expect("revoke"));
    assert_eq!(
        app.get("/adsets", Some(&aud)).await.status,
        StatusCode::SEE_OTHER
    );
    // The demo's link: signs in when opened from outside any site, then drops the token.
    let link = format!("/?token={}", app.tokens["adm"]);
    let a = app.get(&link, None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/");
    assert!(a.set_cookie().join("").contains("civicast_session="));
    let req = Request::get(&link)
        .header("host", HOST)
        .header("sec-fetch-site", "cross-site")
        .body(Body::empty())
        .expect("request");
    let a = app.send(req).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.set_cookie().is_empty(),
        "no sign-in from another site's link"
    );
    app
}

const BROKEN: &str = "id = \"broken\"\nvalid_from = \"2020-01-01\"\nvalid_until = \"2099-12-31\"\n\n[[slogan]]\nid = \"a\"\ntext = \"\"\n";
const GOOD: &str = "id = \"second\"\nvalid_from = \"2020-01-01\"\nvalid_until = \"2099-12-31\"\n\n[[slogan]]\nid = \"b\"\ntext = \"礼让斑马线\"\n";

async fn forged_posts_are_refused_and_uploads_follow_the_api(app: Console) -> Console {
    let op1 = app.sign_in("op1").await;
    let op2 = app.sign_in("op2").await;
    let form = app.get("/upload", Some(&op1)).await;
    let csrf1 = form.csrf();
    // Every problem at its line, nothing stored.
    let before = app.store.adset_histories().await.expect("histories").len();
    let a = app.upload(&op1, &csrf1, BROKEN, "toml").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(
        a.body.contains("href=\"#L7\""),
        "the problem links its line: {}",
        a.body
    );
    assert!(
        a.body.contains("<tr id=\"L7\" class=\"bad\">"),
        "{}",
        a.body
    );
    assert_eq!(
        app.store.adset_histories().await.expect("histories").len(),
        before
    );
    // The API says the same of the same text.
    let (code, body) = common::call(
        &app.router,
        "POST",
        "/api/v1/adsets",
        Some(&app.tokens["op1"]),
        Some("application/toml"),
        BROKEN,
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(common::json(&body)["details"][0]["line"] == 7, "{body}");
    // A forged upload: no CSRF token, then another session's.
    let op2_csrf = app.get("/upload", Some(&op2)).await.csrf();
    assert_eq!(
        app.upload(&op1, "", GOOD, "toml").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.upload(&op1, &op2_csrf, GOOD, "toml").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.store.adset_histories().await.expect("histories").len(),
        before
    );
    let a = app.upload(&op1, &csrf1, GOOD, "toml").await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert!(a.body.contains("/adsets/second"), "{}", a.body);
    approvals_follow_the_api(app).await
}

/// After `second` was uploaded by op1: approval by op2 only, never forged or cross-site.
async fn approvals_follow_the_api(app: Console) -> Console {
    let op1 = app.sign_in("op1").await;
    let op2 = app.sign_in("op2").await;
    let csrf1 = app.get("/adsets", Some(&op1)).await.csrf();
    let page = app.get("/adsets/second", Some(&op1)).await;
    assert!(
        !page.body.contains("/adsets/second/approve"),
        "not offered to the uploader"
    );
    let own = app
        .post(
            "/adsets/second/approve",
            Some(&op1),
            Some(ORIGIN),
            &[("csrf", &csrf1)],
        )
        .await;
    assert_eq!(own.status, StatusCode::FORBIDDEN, "{}", own.body);
    let page = app.get("/adsets/second", Some(&op2)).await;
    assert!(
        page.body.contains("action=\"/adsets/second/approve\""),
        "{}",
        page.body
    );
    let csrf2 = page.csrf();
    for (origin, csrf) in [
        (Some(ORIGIN), ""),
        (Some(ORIGIN), "0123"),
        (Some("http://evil.example"), csrf2.as_str()),
        (None, csrf2.as_str()),
    ] {
        let a = app
            .post(
                "/adsets/second/approve",
                Some(&op2),
                origin,
                &[("csrf", csrf)],
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{origin:?} {csrf}");
    }
    let h = app
        .store
        .adset_history("second")
        .await
        .expect("read")
        .expect("stored");
    assert!(
        h.revisions[0].approved_by.is_none(),
        "nothing forged got through"
    );
    // An auditor may not approve even with a valid session and token.
    let aud = app.sign_in("aud").await;
    let aud_csrf = app.get("/adsets", Some(&aud)).await.csrf();
    let a = app
        .post(
            "/adsets/second/approve",
            Some(&aud),
            Some(ORIGIN),
            &[("csrf", &aud_csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = app
        .post(
            "/adsets/second/approve",
            Some(&op2),
            Some(ORIGIN),
            &[("csrf", &csrf2)],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let h = app
        .store
        .adset_history("second")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(h.revisions[0].approved_by.as_deref(), Some("op2"));
    let list = app.get("/adsets", Some(&op2)).await;
    assert!(
        list.body.contains("op1") && list.body.contains("op2"),
        "uploader and approver"
    );
    // Retire, as the API does.
    let a = app
        .post(
            "/adsets/second/retire",
            Some(&op2),
            Some(ORIGIN),
            &[("csrf", &csrf2)],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let h = app
        .store
        .adset_history("second")
        .await
        .expect("read")
        .expect("stored");
    assert!(h.retired.is_some());
    app
}

async fn english_on_request_and_assets_from_the_daemon(app: Console) -> Console {
    let cookie = app.sign_in("op1").await;
    let a = app
        .post(
            "/lang",
            Some(&cookie),
            Some(ORIGIN),
            &[("lang", "en"), ("back", "/adsets")],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/adsets");
    let lang = a.set_cookie().join("");
    assert!(lang.starts_with("civicast_lang=en;"), "{lang}");
    let both = format!("{cookie}; civicast_lang=en");
    let page = app.get("/adsets", Some(&both)).await;
    assert!(page.body.contains("<html lang=\"en\">"), "{}", page.body);
    assert!(page.body.contains("Ad sets") && page.body.contains("Sign out"));
    let signin = app.get("/", Some("civicast_lang=en")).await;
    assert!(signin
        .body
        .contains("<label for=\"token\">Access token</label>"));
    // A link elsewhere is not followed back.
    let a = app
        .post(
            "/lang",
            None,
            Some(ORIGIN),
            &[("lang", "en"), ("back", "//evil.example/")],
        )
        .await;
    assert_eq!(a.location(), "/");
    // Every asset a page links is served from here, versioned and cached for long.
    let mut linked = 0;
    for part in page.body.split("href=\"/assets/console/").skip(1).chain(
        app.get("/", Some(&cookie))
            .await
            .body
            .split("src=\"/assets/console/")
            .skip(1),
    ) {
        let url = format!("/assets/console/{}", &part[..part.find('"').expect("end")]);
        assert!(url.contains("?v="), "{url}");
        let a = app.get(&url, None).await;
        assert_eq!(a.status, StatusCode::OK, "{url}");
        let cache = a
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            cache.contains("immutable") && cache.contains("max-age=31536000"),
            "{cache}"
        );
        linked += 1;
    }
    assert_eq!(linked, 3, "console.css, print.css, live.js");
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "nothing from outside"
    );
    app
}

/// The LED preview of a revision: each slogan for each class it reaches, the Preview JSON
/// for led.js and the same drawn as SVG for a reader without JavaScript; linked from the
/// revision; every role may look; an unknown revision is a 404.
async fn the_led_preview_draws_each_slogan_per_class(app: Console) -> Console {
    let cookie = app.sign_in("aud").await;
    let rev = app.get("/adsets/civility/rev/1", Some(&cookie)).await;
    assert!(
        rev.body.contains("href=\"/adsets/civility/rev/1/preview\""),
        "{}",
        rev.body
    );
    let a = app
        .get("/adsets/civility/rev/1/preview", Some(&cookie))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("LED 预览"), "{}", a.body);
    assert!(a.body.contains("jiang-wenming"), "{}", a.body);
    // The same rows the API's preview answers, in the same order.
    let api = app
        .send(
            Request::get("/api/v1/preview?adset=civility&slogan=jiang-wenming&rev=1")
                .header("host", HOST)
                .header("authorization", format!("Bearer {}", app.tokens["aud"]))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.body);
    let api_rows: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&api.body).expect("json")["rows"].clone();
    let rows = api_rows.as_array().expect("rows");
    assert!(!rows.is_empty(), "the ad set reaches a class");
    let canvases: Vec<serde_json::Value> = a
        .body
        .split("<canvas data-led=\"")
        .skip(1)
        .map(|part| {
            let attr = &part[..part.find('"').expect("end")];
            let json = attr
                .replace("&#34;", "\"")
                .replace("&quot;", "\"")
                .replace("&#x27;", "'")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
        })
        .collect();
    assert_eq!(&canvases, rows, "the canvases carry the API's previews");
    assert_eq!(
        a.body.matches("<svg ").count(),
        rows.len(),
        "one SVG a class"
    );
    assert!(a.body.contains("id=\"led-1\"") && a.body.contains("url(#led-1)"));
    assert!(
        a.body.contains("src=\"/assets/console/led.js?v="),
        "{}",
        a.body
    );
    for r in rows {
        let class = r["class"].as_str().expect("class");
        assert!(
            a.body.contains(&format!("data-class=\"{class}\"")),
            "{class}"
        );
        let said = if r["pass_s"].is_null() {
            "静止显示"
        } else {
            "滚动，一遍"
        };
        assert!(a.body.contains(said), "{said}: {}", a.body);
    }
    let none = app
        .get("/adsets/civility/rev/9/preview", Some(&cookie))
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    let signed_out = app.get("/adsets/civility/rev/1/preview", None).await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    app
}

/// The segment of `body` from `start` to the next `end`.
fn segment<'a>(body: &'a str, start: &str, end: &str) -> &'a str {
    let at = body
        .find(start)
        .unwrap_or_else(|| panic!("{start} missing in {body}"));
    let rest = &body[at..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// The `data-label` / `data-plays` pairs of a page's chart bars.
fn chart_bars(body: &str) -> Vec<(String, i64)> {
    body.split("data-label=\"")
        .skip(1)
        .map(|part| {
            let label = part[..part.find('"').expect("label end")].to_owned();
            let plays = segment(part, "data-plays=\"", "\">")["data-plays=\"".len()..]
                .parse()
                .expect("plays");
            (label, plays)
        })
        .collect()
}

/// The displays answer their plays with receipts until the counts settle; the moment after
/// which nothing more can count, as RFC 3339, and the day before it.
async fn with_receipts(app: &Console) -> (String, String) {
    let port = embedded_port(&app.running);
    // Online from now, as each bus retains on its status topic: compliance counts plays
    // only while a display is online.
    let mut presence = Vec::new();
    for bus in ["bus-1", "bus-2"] {
        let c = Client::login(bus, &format!("{bus}-status"), port, false, &[]).await;
        c.publish(format!("{P}/devices/{bus}/status"), online_now(), true)
            .await;
        presence.push(c);
    }
    let displays = Display::fleet(port);
    let by_class = "/api/v1/audit/plays?group_by=class&from=2026-01-01";
    wait_until("receipts from both buses while online", 20, || async {
        let (_, b) = app.api("/api/v1/audit/compliance", "aud").await;
        let rows = json(&b)["rows"].as_array().cloned().unwrap_or_default();
        if rows.iter().all(|r| r["plays"].as_u64() > Some(2)) {
            Ok(())
        } else {
            Err(b)
        }
    })
    .await;
    stop_and_drain(&displays).await;
    drop(displays);
    // Receipts still in flight or in a batch: wait until the count holds still for a second.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = app.api(by_class, "aud").await.1;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let now = app.api(by_class, "aud").await.1;
        if now == last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the counts never settled: {now}"
        );
        last = now;
    }
    drop(presence);
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
    let to = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let from =
        (now - chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    (from, to)
}

async fn auditor_pages_show_the_apis_numbers(app: Console) -> Console {
    let (from, to) = with_receipts(&app).await;
    let period = serde_urlencoded::to_string([("from", &from), ("to", &to)]).expect("query");
    let aud = app.sign_in("aud").await;

    // Play counts: the chart's bars, the table and the total are the API's, per grouping.
    for group in ["class", "slogan", "feed", "day", "hour"] {
        let q = format!("group_by={group}&{period}");
        let (code, b) = app.api(&format!("/api/v1/audit/plays?{q}"), "aud").await;
        assert_eq!(code, StatusCode::OK, "{b}");
        let api = json(&b);
        let want: Vec<(String, i64)> = api["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r[group]
                        .as_str()
                        .map_or(r[group].to_string(), str::to_owned),
                    r["plays"].as_i64().expect("plays"),
                )
            })
            .collect();
        assert!(want.iter().map(|w| w.1).sum::<i64>() > 0, "{b}");
        let page = app.get(&format!("/audit/plays?{q}"), Some(&aud)).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(
            chart_bars(&page.body),
            want,
            "{group}: the chart is the API's"
        );
        let foot = segment(&page.body, "<tfoot>", "</tfoot>");
        assert!(
            foot.contains(&format!("<td class=\"num\">{}</td>", api["total"])),
            "{group}: {foot} vs {}",
            api["total"]
        );
        for (label, n) in &want {
            assert!(
                page.body
                    .contains(&format!("<td>{label}</td><td class=\"num\">{n}</td>")),
                "{group} {label} {n} in the table"
            );
        }
    }
    // Its downloads are the API's files.
    for (page, api, extra) in [
        ("/audit/plays", "/api/v1/audit/plays", "group_by=feed,day&"),
        ("/audit/compliance", "/api/v1/audit/compliance", ""),
        ("/audit/reconcile", "/api/v1/audit/reconcile", ""),
    ] {
        let q = format!("{extra}{period}&format=csv");
        let got = app.get(&format!("{page}?{q}"), Some(&aud)).await;
        assert_eq!(got.status, StatusCode::OK, "{page}: {}", got.body);
        assert!(got.headers["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/csv"));
        let (_, want) = app.api(&format!("{api}?{q}"), "aud").await;
        assert_eq!(got.body, want, "{page} CSV");
        let x = app
            .get(&format!("{page}?{period}&format=xlsx"), Some(&aud))
            .await;
        assert_eq!(x.status, StatusCode::OK);
        assert_eq!(
            x.headers["content-type"],
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        );
        let bad = app.get(&format!("{page}?format=pdf"), Some(&aud)).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(bad.body.contains("pdf"), "{}", bad.body);
    }
    compliance_is_the_apis(&app, &aud, &period).await;
    sample_and_reconcile_are_the_apis(&app, &aud, &period).await;
    // Only auditors (and admins) see these pages in the navigation; an operator gets 403.
    let op = app.sign_in("op1").await;
    let home = app.get("/", Some(&op)).await;
    assert!(!home.body.contains("/audit/compliance"), "{}", home.body);
    assert!(home.body.contains("href=\"/urgent\""));
    for page in ["/audit/compliance", "/audit/sample", "/audit/reconcile"] {
        let a = app.get(&format!("{page}?format=csv"), Some(&op)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{page}");
    }
    let home = app.get("/", Some(&aud)).await;
    for page in ["/audit/compliance", "/audit/sample", "/audit/reconcile"] {
        assert!(home.body.contains(&format!("href=\"{page}\"")), "{page}");
    }
    app
}

async fn compliance_is_the_apis(app: &Console, aud: &str, period: &str) {
    let (_, b) = app
        .api(&format!("/api/v1/audit/compliance?{period}"), "aud")
        .await;
    let api = json(&b);
    let rows = api["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "the two buses (the taxi has no feed): {b}");
    assert!(rows.iter().any(|r| r["plays"].as_u64() > Some(0)), "{b}");
    let page = app
        .get(&format!("/audit/compliance?{period}"), Some(aud))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let heat = segment(&page.body, "<table class=\"heat\"", "</table>");
    for r in rows {
        let d = r["device"].as_str().expect("device");
        let row = segment(&page.body, &format!("<tr data-device=\"{d}\">"), "</tr>");
        let cells = format!(
            "<td class=\"num\">{:.1}</td><td class=\"num\">{}</td>",
            r["online_seconds"].as_f64().expect("online"),
            r["plays"]
        );
        assert!(row.contains(&cells), "{d}: {row} vs {cells}");
        let met = if r["met"] == true {
            "达标"
        } else {
            "未达标"
        };
        assert!(row.contains(&format!(">{met}</td>")), "{d}: {row}");
        // The period's two days of the heat map add up to the whole period.
        let line = segment(heat, &format!("<th scope=\"row\">{d}</th>"), "</tr>");
        let days: Vec<u64> = line
            .split("data-state=\"")
            .skip(1)
            .map(|c| {
                let text = &c[c.find('>').expect("cell") + 1..c.find("</td>").expect("end")];
                text.split_whitespace()
                    .last()
                    .and_then(|n| n.parse().ok())
                    .expect("a count")
            })
            .collect();
        assert_eq!(days.len(), 2, "{line}");
        assert_eq!(
            days.iter().sum::<u64>(),
            r["plays"].as_u64().expect("plays"),
            "{d}: {line}"
        );
    }
    assert!(
        page.body.contains("31"),
        "the page says how many days the map shows"
    );
    let long = app
        .get("/audit/compliance?from=2026-01-01&to=2026-03-01", Some(aud))
        .await;
    assert!(long.body.contains("时段超过 31 天"), "{}", long.body);
    assert_eq!(
        segment(&long.body, "<table class=\"heat\"", "</thead>")
            .matches("<th scope=\"col\">")
            .count(),
        32,
        "a display column and 31 days"
    );
    let bad = app.get("/audit/compliance?class=tram", Some(aud)).await;
    assert!(bad.body.contains("role=\"alert\"") && bad.body.contains("tram"));
}

async fn sample_and_reconcile_are_the_apis(app: &Console, aud: &str, period: &str) {
    let week = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%G-W%V")
        .to_string();
    let q = format!("week={week}&seed=audit&per_class=2");
    let (_, b) = app.api(&format!("/api/v1/audit/sample?{q}"), "aud").await;
    let api = json(&b);
    let rows = api["rows"].as_array().expect("rows");
    assert!(!rows.is_empty(), "{b}");
    let page = app.get(&format!("/audit/sample?{q}"), Some(aud)).await;
    assert_eq!(page.status, StatusCode::OK);
    for r in rows {
        let d = r["device"].as_str().expect("device");
        let row = segment(&page.body, &format!("<tr data-device=\"{d}\">"), "</tr>");
        assert!(
            row.contains(&format!("<td class=\"num\">{}</td>", r["plays"])),
            "{d}: {row}"
        );
    }
    assert_eq!(page.body.matches("<tr data-device=").count(), rows.len());
    for w in [
        "签字确认",
        "检查员",
        "审计员",
        "print.css",
        "class=\"signoff\"",
    ] {
        assert!(page.body.contains(w), "{w}");
    }
    let css = app.get("/assets/console/print.css", None).await;
    for rule in ["size: A4", "nav", "form", ".signoff"] {
        assert!(css.body.contains(rule), "print.css: {rule}");
    }
    let csv = app
        .get(&format!("/audit/sample?{q}&format=csv"), Some(aud))
        .await;
    let (_, want) = app
        .api(&format!("/api/v1/audit/sample?{q}&format=csv"), "aud")
        .await;
    assert_eq!(csv.body, want);

    let (_, b) = app
        .api(&format!("/api/v1/audit/reconcile?{period}"), "aud")
        .await;
    let api = json(&b);
    let rows = api["rows"].as_array().expect("rows");
    let sum = |k: &str| rows.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum::<u64>();
    assert!(sum("played") > 0, "{b}");
    let page = app
        .get(&format!("/audit/reconcile?{period}"), Some(aud))
        .await;
    let foot = segment(&page.body, "<tfoot>", "</tfoot>");
    let want: String = [
        "plays",
        "targeted",
        "online",
        "played",
        "shortfall",
        "offline",
        "expired",
        "skipped",
        "failed",
        "no_receipt",
    ]
    .iter()
    .map(|k| format!("<td class=\"num\">{}</td>", sum(k)))
    .collect();
    assert!(foot.contains(&want), "{foot} vs {want}");
    assert_eq!(
        page.body.matches("<tr><th scope=\"row\">bus</th>").count(),
        rows.len()
    );
}

/// The API's urgent messages: (id, status, requested_by, approved_by).
async fn urgent_list(app: &Console) -> Vec<(String, String, String, String)> {
    let (_, b) = app.api("/api/v1/urgent", "aud").await;
    json(&b)["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or("").to_owned();
            (s("id"), s("status"), s("requested_by"), s("approved_by"))
        })
        .collect()
}

async fn urgent_messages_follow_the_api(app: Console) -> Console {
    let op1 = app.sign_in("op1").await;
    let page = app.get("/urgent", Some(&op1)).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.csrf();
    for w in [
        "<label for=\"text\">",
        "<label for=\"expires_in\">",
        "<legend>频道</legend>",
    ] {
        assert!(page.body.contains(w), "{w}");
    }
    let warning = [
        ("text", "台风预警 请勿外出"),
        ("feed", "bus"),
        ("devices", ""),
        ("expires_in", "30m"),
        ("expires_at", ""),
    ];
    // Forged: no CSRF token, another origin, none at all. Nothing is stored.
    let forged = app
        .post("/urgent", Some(&op1), Some(ORIGIN), &warning)
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    let mut with_csrf = vec![("csrf", csrf.as_str())];
    with_csrf.extend(warning);
    let cross = app
        .post(
            "/urgent",
            Some(&op1),
            Some("http://evil.example"),
            &with_csrf,
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let aud = app.sign_in("aud").await;
    let aud_page = app.get("/urgent", Some(&aud)).await;
    assert!(
        !aud_page.body.contains("action=\"/urgent\""),
        "no form for auditors"
    );
    let mut aud_form = vec![("csrf", "")];
    aud_form.extend(warning);
    let aud_csrf = aud_page.csrf();
    aud_form[0].1 = &aud_csrf;
    let a = app
        .post("/urgent", Some(&aud), Some(ORIGIN), &aud_form)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(urgent_list(&app).await.is_empty(), "nothing stored");

    // Refused per class and per field, each named; still nothing stored.
    let too_long = [
        ("csrf", csrf.as_str()),
        ("text", "台风预警 请勿外出 远离广告牌和树木"),
        ("devices", "taxi-1"),
        ("expires_in", "30m"),
    ];
    let a = app
        .post("/urgent", Some(&op1), Some(ORIGIN), &too_long)
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(
        a.body.contains("未保存也未发布") && a.body.contains(">text</a>"),
        "{}",
        a.body
    );
    assert!(
        a.body.contains("taxi_top"),
        "the class it is too long for: {}",
        a.body
    );
    let no_expiry = [("csrf", csrf.as_str()), ("text", "封路"), ("feed", "bus")];
    let a = app
        .post("/urgent", Some(&op1), Some(ORIGIN), &no_expiry)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body.contains(">expires_at</a>"), "{}", a.body);
    assert!(
        a.body.contains(">封路</textarea>"),
        "the form keeps what was typed"
    );
    assert!(urgent_list(&app).await.is_empty());

    // An operator's request waits; its author cannot approve it, a second operator can.
    let a = app
        .post("/urgent", Some(&op1), Some(ORIGIN), &with_csrf)
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let list = urgent_list(&app).await;
    assert_eq!(list.len(), 1);
    let (id, status, by, _) = list[0].clone();
    assert_eq!((status.as_str(), by.as_str()), ("pending", "op1"));
    assert!(
        a.body.contains(&id) && a.body.contains("待批准"),
        "{}",
        a.body
    );
    let approve = format!("/urgent/{id}/approve");
    assert!(!a.body.contains(&approve), "no approve button on one's own");
    let own = app
        .post(&approve, Some(&op1), Some(ORIGIN), &[("csrf", &csrf)])
        .await;
    assert_eq!(own.status, StatusCode::FORBIDDEN, "{}", own.body);
    let op2 = app.sign_in("op2").await;
    let p2 = app.get("/urgent", Some(&op2)).await;
    assert!(p2.body.contains(&approve));
    let forged = app.post(&approve, Some(&op2), Some(ORIGIN), &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let a = app
        .post(&approve, Some(&op2), Some(ORIGIN), &[("csrf", &p2.csrf())])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(
        urgent_list(&app).await[0],
        (id.clone(), "published".into(), "op1".into(), "op2".into())
    );
    let shown = app.get("/urgent", Some(&aud)).await;
    let row = segment(&shown.body, &format!("<tr id=\"msg-{id}\""), "</tr>");
    for w in ["已发布", "op1", "op2", "频道: bus", "台风预警"] {
        assert!(row.contains(w), "{w}: {row}");
    }
    let cancel = format!("/urgent/{id}/cancel");
    let a = app
        .post(&cancel, Some(&op2), Some(ORIGIN), &[("csrf", &p2.csrf())])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(urgent_list(&app).await[0].1, "cancelled");

    // An admin's message goes out at once.
    let adm = app.sign_in("adm").await;
    let pa = app.get("/urgent", Some(&adm)).await;
    let mut form = vec![("csrf", "")];
    let adm_csrf = pa.csrf();
    form[0].1 = &adm_csrf;
    form.extend([
        ("text", "道路封闭"),
        ("devices", "bus-2"),
        ("expires_in", "10m"),
    ]);
    let a = app.post("/urgent", Some(&adm), Some(ORIGIN), &form).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert!(a.body.contains("已发布"), "{}", a.body);
    let list = urgent_list(&app).await;
    assert!(list
        .iter()
        .any(|m| m.1 == "published" && m.2 == "adm" && m.3 == "adm"));
    app
}

async fn the_upload_summary_is_the_readers_language(app: Console) -> Console {
    let cookie = app.sign_in("op1").await;
    let csrf = app.get("/upload", Some(&cookie)).await.csrf();
    let broken = "id = \"x\"\nvalid_from = \"2020-01-01\"\nvalid_until = \"2099-12-31\"\n[[slogan]]\nid = \"a\"\n";
    let a = app.upload(&cookie, &csrf, broken, "toml").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    let alert = segment(&a.body, "role=\"alert\"", "</p>");
    assert!(alert.contains("未保存任何内容：广告集有问题"), "{alert}");
    assert!(
        !alert.contains("nothing was stored"),
        "no English inside the Chinese page: {alert}"
    );
    let both = format!("{cookie}; civicast_lang=en");
    let a = app.upload(&both, &csrf, broken, "toml").await;
    let alert = segment(&a.body, "role=\"alert\"", "</p>");
    assert_eq!(
        alert.matches("othing was stored").count(),
        1,
        "said once: {alert}"
    );
    assert!(!alert.contains("1 problems"), "{alert}");
    // The LED preview is one click from the ad set's page.
    let set = app.get("/adsets/civility", Some(&cookie)).await;
    assert!(set.body.contains("href=\"/adsets/civility/rev/1/preview\""));
    app
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::on_sqlite(super::$name).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
            async fn postgres() {
                super::on_pg(super::$name).await;
            }
        }
    )*};
}

both_backends!(
    every_page_for_every_role,
    sessions_end_as_they_should,
    forged_posts_are_refused_and_uploads_follow_the_api,
    english_on_request_and_assets_from_the_daemon,
    the_led_preview_draws_each_slogan_per_class,
    auditor_pages_show_the_apis_numbers,
    urgent_messages_follow_the_api,
    the_upload_summary_is_the_readers_language,
);
