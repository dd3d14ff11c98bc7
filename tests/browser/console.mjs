// The console in headless Chromium (playwright-core driving the system's chromium; no
// browser is ever downloaded), against a running `civicast serve`: operator A signs in,
// uploads a broken ad set and sees the error at its line, uploads a good one; operator B,
// in a browser context of its own, approves it and sees its text on the overview within one
// refresh interval and a play; the LED preview's canvas is drawn; operator B opens the
// urgent messages and requests one, which waits for a second operator; the auditor's
// play-count table and chart bars equal GET /api/v1/audit/plays for the same query, and the
// compliance, sample and reconciliation pages open. Then the inspections (issue 14) on a
// phone-sized screen: the inspector's plan is drawn, a failing visit and a passing one are
// recorded with a photo, the finding reaches city-bus's inbox and not a taxi company's,
// city-bus reports the fix with a photo, the inspector's recheck closes it, and the
// auditor's scorecard shows it as the API counts it. Every page visited is saved in Chinese
// and in English. Run by tests/browser.rs, which starts the daemon and passes:
//   CIVICAST_URL, CIVICAST_TOKEN_A, CIVICAST_TOKEN_B, CIVICAST_TOKEN_AUDITOR,
//   CIVICAST_TOKEN_INSPECTOR, CIVICAST_TOKEN_COMPANY (city-bus),
//   CIVICAST_TOKEN_OTHER_COMPANY (jiaotong-taxi),
//   CIVICAST_SCREENSHOTS (a directory), CIVICAST_CHROMIUM (default /usr/bin/chromium);
//   CIVICAST_BROWSER_STORIES, when set, runs only the stories named (`ads`, `inspections`).
// Exits 1 with a message naming the step on any failure.
import { chromium } from "playwright-core";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (tests/browser.rs sets it)`);
  return v;
}

const base = need("CIVICAST_URL");
const tokens = {
  a: need("CIVICAST_TOKEN_A"),
  b: need("CIVICAST_TOKEN_B"),
  auditor: need("CIVICAST_TOKEN_AUDITOR"),
  inspector: need("CIVICAST_TOKEN_INSPECTOR"),
  company: need("CIVICAST_TOKEN_COMPANY"),
  otherCompany: need("CIVICAST_TOKEN_OTHER_COMPANY"),
};
// A phone held upright: the inspection pages must fit it without scrolling sideways.
const PHONE = { width: 390, height: 844 };
// The smallest PNG there is: one transparent pixel.
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
  "base64"
);
const shots = need("CIVICAST_SCREENSHOTS");
const executablePath = process.env.CIVICAST_CHROMIUM || "/usr/bin/chromium";
// The feeds of the test city play every 5 s (tests/browser.rs).
const FEED_INTERVAL_MS = 5000;

const ADSET = "wenming-city";
const NEW_TEXT = "浏览器测试 礼让行人";
// A TOML syntax error on line 8: the value of `text` is missing.
const BROKEN = `id = "${ADSET}"
title = "Civilized city campaign"
valid_from = "2026-01-01"
valid_until = "2027-12-31"

[[slogan]]
id = "broken"
text =
`;
const BROKEN_LINE = 8;
const GOOD = `id = "${ADSET}"
title = "Civilized city campaign"
valid_from = "2026-01-01"
valid_until = "2027-12-31"

[[slogan]]
id = "browser-test"
text = "${NEW_TEXT}"
`;

let step = "start";
function check(ok, message) {
  if (!ok) throw new Error(message);
}

let n = 0;
/**
 * Saves `page` as it is, then in the other language (the header's toggle), then toggles back.
 * The toggle returns to the page's address: a page that answers a form post is made again
 * in the other language by `again`; with `again === null` it is saved in one language only
 * (a second upload would store another revision).
 */
async function shoot(page, name, again, fullPage = true) {
  n += 1;
  const lang = async () => page.locator("html").getAttribute("lang");
  const first = await lang();
  const file = (l) => join(shots, `${String(n).padStart(2, "0")}-${name}.${l}.png`);
  await page.screenshot({ path: file(first), fullPage });
  if (again === null) {
    console.log(`screenshots: ${file(first)} (the answer to an upload: one language)`);
    return;
  }
  await Promise.all([page.waitForNavigation(), page.locator("header form[action='/lang'] button").click()]);
  if (again) await again();
  const second = await lang();
  check(second !== first, `${name}: the language toggle left the page in ${first}`);
  await page.screenshot({ path: file(second), fullPage });
  await Promise.all([page.waitForNavigation(), page.locator("header form[action='/lang'] button").click()]);
  check((await lang()) === first, `${name}: toggling back did not return to ${first}`);
  console.log(`screenshots: ${file(first)} ${file(second)}`);
}

async function visit(page, path, name) {
  const resp = await page.goto(base + path);
  check(resp && resp.ok(), `${path}: status ${resp && resp.status()}`);
  await shoot(page, name);
}

async function signIn(browser, token, who) {
  const context = await browser.newContext({ locale: "zh-CN" });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`${who}: a script failed on ${page.url()}: ${e}`));
  await page.goto(base + "/");
  await shoot(page, `signin-${who}`);
  await page.fill("#token", token);
  await Promise.all([page.waitForNavigation(), page.click("form.signin button[type=submit]")]);
  check(
    (await page.locator("form[action='/signout']").count()) === 1,
    `${who}: not signed in; the page says: ${(await page.textContent("main")).trim().slice(0, 300)}`
  );
  await shoot(page, `overview-${who}`);
  return { context, page };
}

async function upload(page, text) {
  await page.goto(base + "/upload");
  await page.fill("#text", text);
  await page.check("#fmt-toml");
  await Promise.all([page.waitForNavigation(), page.click("form.upload button[type=submit]")]);
}

async function operatorA(browser) {
  step = "operator A signs in";
  const { context, page } = await signIn(browser, tokens.a, "operator-a");
  step = "operator A uploads a broken ad set";
  await visit(page, "/upload", "upload-form");
  await upload(page, BROKEN);
  const alert = page.locator(".problem[role=alert]");
  check((await alert.count()) === 1, "the broken upload shows no problem");
  const links = await alert.locator(`a[href="#L${BROKEN_LINE}"]`).count();
  check(links >= 1, `the problem does not point at line ${BROKEN_LINE}: ${await alert.textContent()}`);
  const bad = await page.locator("table.source tr.bad").evaluateAll((rows) => rows.map((r) => r.id));
  check(
    bad.includes(`L${BROKEN_LINE}`),
    `the sent text does not mark line ${BROKEN_LINE} (marked: ${bad.join(", ") || "none"})`
  );
  await shoot(page, "upload-broken", async () => {
    await upload(page, BROKEN);
    check(
      (await page.locator(`.problem[role=alert] a[href="#L${BROKEN_LINE}"]`).count()) >= 1,
      `in the other language, the problem does not point at line ${BROKEN_LINE}`
    );
  });
  step = "operator A uploads a good ad set";
  await upload(page, GOOD);
  const stored = page.locator("p.ok[role=status] a");
  check((await stored.count()) === 1, `the good upload was not stored: ${(await page.textContent("main")).slice(0, 400)}`);
  const label = (await stored.textContent()).trim();
  const rev = Number(label.split(" r")[1]);
  check(label.startsWith(ADSET) && rev >= 2, `stored as ${label}, not a new revision of ${ADSET}`);
  await shoot(page, "upload-stored", null);
  step = "operator A may not approve their own upload";
  await visit(page, `/adsets/${ADSET}`, "adset-own");
  check(
    (await page.locator(`form[action='/adsets/${ADSET}/approve']`).count()) === 0,
    "the uploader is offered the approve form"
  );
  await context.close();
  return rev;
}

async function operatorB(browser, rev) {
  step = "operator B approves";
  const { context, page } = await signIn(browser, tokens.b, "operator-b");
  // The overview stays open, unreloaded, in a second tab: its own refresh must bring the text.
  const watch = await context.newPage();
  await watch.goto(base + "/");
  check(
    (await watch.locator("td.slogan", { hasText: NEW_TEXT }).count()) === 0,
    "the new text is on the overview before its approval"
  );
  await visit(page, `/adsets/${ADSET}`, "adset-pending");
  await Promise.all([
    page.waitForNavigation(),
    page.click(`form[action='/adsets/${ADSET}/approve'] button[type=submit]`),
  ]);
  check(page.url().endsWith(`/adsets/${ADSET}`), `approval went to ${page.url()}`);
  await shoot(page, "adset-approved");
  await visit(page, `/adsets/${ADSET}/rev/${rev}`, "revision");

  step = "the new text on the overview";
  const approved = Date.now();
  const every = Number(await watch.locator("#live").getAttribute("data-every")) * 1000;
  check(every > 0, "the overview names no refresh interval");
  // The next play comes within one feed interval; the overview shows it at its next refresh.
  const within = FEED_INTERVAL_MS + every;
  await watch
    .locator("td.slogan", { hasText: NEW_TEXT })
    .first()
    .waitFor({ timeout: within + 2000 })
    .catch(() => {
      throw new Error(`"${NEW_TEXT}" not on the overview within ${within} ms of the approval`);
    });
  console.log(`overview: the new text after ${Date.now() - approved} ms without a reload (refresh every ${every} ms)`);
  await watch.close();
  await page.goto(base + "/");
  await shoot(page, "overview-new-text");

  step = "the LED preview";
  await page.goto(base + `/adsets/${ADSET}/rev/${rev}`);
  await Promise.all([page.waitForNavigation(), page.click(`a[href="/adsets/${ADSET}/rev/${rev}/preview"]`)]);
  const canvases = page.locator("canvas[data-led]");
  check((await canvases.count()) >= 1, "the preview page has no canvas");
  // led.js draws on load; a lit LED is amber (#ffb000), unlit ones and the background dark.
  await page.waitForFunction(() => {
    const c = document.querySelector("canvas[data-led]");
    if (!c || c.width === 0) return false;
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] > 120) return true;
    return false;
  }, null, { timeout: 5000 }).catch(() => {
    throw new Error("no lit LED on the preview's canvas: led.js drew nothing");
  });
  const lit = await canvases.evaluateAll((cs) =>
    cs.map((c) => {
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let k = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] > 120) k += 1;
      return k;
    })
  );
  check(lit.every((k) => k > 0), `a canvas has no lit LED: ${lit.join(", ")}`);
  console.log(`preview: ${lit.length} canvases, lit pixels ${lit.join(", ")}`);
  await shoot(page, "preview");

  step = "operator B requests an urgent message";
  await page.goto(base + "/");
  await Promise.all([page.waitForNavigation(), page.click("nav a[href='/urgent']")]);
  await shoot(page, "urgent");
  await page.fill("#text", "浏览器测试 紧急通知");
  const feed = page.locator("fieldset#feeds input[type=checkbox]").first();
  check((await feed.count()) === 1, "the urgent form offers no feed");
  await feed.check();
  await page.fill("#expires_in", "5m");
  await Promise.all([page.waitForNavigation(), page.click("form.urgent-send button[type=submit]")]);
  const pending = page.locator("table.urgent tbody tr[data-state=pending]");
  check(
    (await pending.count()) >= 1,
    `the request is not listed as pending: ${(await page.textContent("main")).trim().slice(0, 400)}`
  );
  check(
    (await pending.first().locator("form[action$='/approve']").count()) === 0,
    "the requester is offered the approve button on their own request"
  );
  await page.goto(base + "/urgent");
  await shoot(page, "urgent-pending");
  await context.close();
}

/** The play-count table as {key: plays}, the key the row's values joined by "|". */
async function tableCounts(page) {
  const rows = await page.locator("main table tbody tr").evaluateAll((trs) =>
    trs.map((tr) => Array.from(tr.querySelectorAll("td")).map((td) => td.textContent.trim()))
  );
  const total = Number((await page.locator("main table tfoot td.num").textContent()).trim());
  const counts = {};
  for (const r of rows) counts[r.slice(0, -1).join("|")] = Number(r[r.length - 1]);
  return { counts, total };
}

async function auditor(browser) {
  step = "the auditor's play counts";
  const { context, page } = await signIn(browser, tokens.auditor, "auditor");
  const query = "group_by=class,slogan";
  await visit(page, `/audit/plays?${query}`, "plays");
  const shown = await tableCounts(page);
  const resp = await fetch(`${base}/api/v1/audit/plays?${query}`, {
    headers: { authorization: `Bearer ${tokens.auditor}` },
  });
  if (!resp.ok) throw new Error(`GET /api/v1/audit/plays?${query}: ${resp.status} ${await resp.text()}`);
  const api = await resp.json();
  const fromApi = {};
  for (const r of api.rows) fromApi[api.group_by.map((k) => r[k]).join("|")] = r.plays;
  const a = JSON.stringify(shown.counts, Object.keys(shown.counts).sort());
  const b = JSON.stringify(fromApi, Object.keys(fromApi).sort());
  check(a === b, `the page's play counts ${a} differ from the API's ${b}`);
  check(api.total > 0, "the API counts no plays: the comparison would prove nothing");
  check(shown.total === api.total, `the page's total ${shown.total} differs from the API's ${api.total}`);
  console.log(`plays: ${Object.keys(fromApi).length} rows, total ${api.total}, page and API agree`);

  step = "the plays chart's bars";
  const bars = await page.locator("figure.chart rect[data-label]").evaluateAll((rs) =>
    rs.map((r) => [r.getAttribute("data-label"), Number(r.getAttribute("data-plays")), r.getBBox().width])
  );
  const barCounts = {};
  for (const [label, plays] of bars) barCounts[label] = plays;
  const apiBars = {};
  for (const r of api.rows.slice(0, 60)) apiBars[api.group_by.map((k) => r[k]).join(" · ")] = r.plays;
  const c1 = JSON.stringify(barCounts, Object.keys(barCounts).sort());
  const c2 = JSON.stringify(apiBars, Object.keys(apiBars).sort());
  check(c1 === c2, `the chart's bars ${c1} differ from the API's ${c2}`);
  const widest = bars.reduce((m, b) => (b[1] > m[1] ? b : m), ["", -1, 0]);
  check(widest[2] > 0, "the chart's longest bar has no width");
  for (const [label, plays, width] of bars) {
    check(plays === 0 || width > 0, `the bar of ${label} (${plays}) is not drawn`);
  }
  console.log(`chart: ${bars.length} bars, as the API counts them`);

  step = "the auditor's other reports";
  for (const [path, name] of [
    ["/audit/compliance", "compliance"],
    ["/audit/sample", "sample"],
    ["/audit/reconcile", "reconcile"],
  ]) {
    await page.goto(base + "/");
    await Promise.all([page.waitForNavigation(), page.click(`nav a[href='${path}']`)]);
    check(
      (await page.locator("main table").count()) >= 1,
      `${path}: no table: ${(await page.textContent("main")).trim().slice(0, 300)}`
    );
    check((await page.locator(`a[href^='${path}?'][href*='format=csv']`).count()) === 1, `${path}: no CSV link`);
    check((await page.locator(`a[href^='${path}?'][href*='format=xlsx']`).count()) === 1, `${path}: no XLSX link`);
    if (path === "/audit/compliance") {
      // The city's 3,149 displays: the table is paged, its totals over all of them.
      const api = await fetch(base + "/api/v1/audit/compliance", { headers: { authorization: `Bearer ${tokens.auditor}` } }).then((r) => r.json());
      const rows = await page.locator("main table:not(.heat) tbody tr").count();
      check(rows <= 500 && rows === Math.min(500, api.rows.length), `/audit/compliance: ${rows} rows on the first page of ${api.rows.length}`);
      const pager = page.locator("nav.pager");
      check((await pager.getAttribute("data-pages")) === String(Math.ceil(api.rows.length / 500)), "/audit/compliance: the pager's page count");
      check((await pager.locator("a[rel=next]").count()) === 1, "/audit/compliance: no next page");
    }
    await shoot(page, name);
  }
  step = "the sample printed on A4";
  await page.goto(base + "/audit/sample");
  await page.emulateMedia({ media: "print" });
  check(!(await page.locator("header.top").isVisible()), "the navigation prints");
  check(!(await page.locator("main form").isVisible()), "the filter form prints");
  check(await page.locator("section.signoff").isVisible(), "the sign-off lines do not print");
  await page.pdf({ path: join(shots, "sample.a4.pdf"), format: "A4" }).catch((e) => {
    console.log(`pdf: not saved (${e.message.split("\n")[0]})`);
  });
  await page.emulateMedia({ media: "screen" });
  await visit(page, "/about", "about");
  await context.close();
}

async function api(token, path, init = {}) {
  const resp = await fetch(base + path, {
    ...init,
    headers: { authorization: `Bearer ${token}`, ...(init.headers || {}) },
  });
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${await resp.text()}`);
  return resp.json();
}

/** Fails unless the page fits the phone's width: nothing to scroll sideways to. */
async function fitsPhone(page, what) {
  const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  check(scroll <= inner, `${what}: ${scroll} px wide on a ${inner} px screen (scrolls sideways)`);
}

async function tapHeight(locator, what) {
  const box = await locator.boundingBox();
  check(box && box.height >= 44, `${what}: a touch target ${box && box.height} px high, under 44`);
}

/** The inspector records two visits on the phone; the id of the finding the failing one opened. */
async function inspectorVisits(browser) {
  step = "the inspector's plan on a phone";
  const { context, page } = await signIn(browser, tokens.inspector, "inspector");
  check(page.url().endsWith("/inspect"), `the inspector landed on ${page.url()}, not /inspect`);
  const plan = await api(tokens.inspector, "/api/v1/inspections/plan");
  const cards = page.locator("ul.plan li.card[data-unit]");
  check(plan.rows.length > 0, "the API's plan draws no unit");
  check((await cards.count()) === plan.rows.length, `the page lists ${await cards.count()} units, the API's plan ${plan.rows.length}`);
  check(Number(await page.locator("[data-due]").getAttribute("data-due")) === plan.due, "the due tally differs from the API's");
  await fitsPhone(page, "/inspect");
  await shoot(page, "inspect", undefined, false);

  step = "the inspector records a failing visit";
  // A bus with a board, so its fix can also be rechecked from the board's receipts.
  const bus = plan.rows.find((r) => r.company === "city-bus" && r.status === "due" && r.display);
  const taxi = plan.rows.find((r) => r.company !== "city-bus" && r.status === "due");
  check(bus && taxi, "the plan has no due unit of city-bus with a display and of another company");
  await Promise.all([page.waitForNavigation(), page.locator(`li.card[data-unit="${bus.unit}"] a.button`).first().click()]);
  check((await page.locator("#unit").inputValue()) === bus.unit, `the form did not start with ${bus.unit}`);
  await tapHeight(page.locator("label[for=fail-ads]"), "fail");
  await tapHeight(page.locator("form.visit button[type=submit]"), "submit");
  await page.click("label[for=fail-ads]");
  await page.click("label[for=pass-atmosphere]");
  await page.click("label[for=pass-cleanliness]");
  await page.fill("#note-ads", "浏览器测试：屏幕不亮");
  await page.setInputFiles("#photo-ads", { name: "dark.png", mimeType: "image/png", buffer: PNG });
  await fitsPhone(page, "the visit form");
  await page.locator("#visit").screenshot({ path: join(shots, "inspect-visit-form.phone.png") });
  await Promise.all([page.waitForNavigation(), page.click("form.visit button[type=submit]")]);
  const notice = (await page.locator("p.ok[role=status]").textContent().catch(() => "")) || "";
  check(page.url().includes("findings=1"), `the visit did not open one finding: ${page.url()} ${notice}`);
  step = "the inspector records a passing visit";
  await page.goto(base + `/inspect?unit=${encodeURIComponent(taxi.unit)}`);
  for (const item of ["ads", "atmosphere", "cleanliness"]) await page.click(`label[for=pass-${item}]`);
  await Promise.all([page.waitForNavigation(), page.click("form.visit button[type=submit]")]);
  check(page.url().includes("findings=0"), `the passing visit: ${page.url()}`);
  const found = await api(tokens.inspector, `/api/v1/findings?unit=${encodeURIComponent(bus.unit)}`);
  check(found.rows.length === 1 && found.rows[0].state === "open", `findings of ${bus.unit}: ${JSON.stringify(found.rows)}`);
  check(found.rows[0].events[0].photos.length === 1, "the visit's photo is not on its finding");
  console.log(`inspect: ${plan.rows.length} units planned, visits to ${bus.unit} (failed) and ${taxi.unit}`);
  await context.close();
  return { id: found.rows[0].id, unit: bus.unit };
}

/** city-bus sees and fixes the finding on a phone; a taxi company sees nothing of it. */
async function companyFixes(browsers, id) {
  step = "another company's inbox";
  const other = await signIn(browsers.other, tokens.otherCompany, "company-taxi");
  check(other.page.url().endsWith("/findings"), `a company landed on ${other.page.url()}`);
  check((await other.page.locator(`[data-finding="${id}"]`).count()) === 0, "a taxi company sees city-bus's finding");
  const resp = await other.page.goto(base + `/findings/${id}`);
  check(resp.status() === 404, `another company's finding by its address: ${resp.status()}, not 404`);
  await other.context.close();

  step = "city-bus's inbox";
  const { context, page } = await signIn(browsers.own, tokens.company, "company-bus");
  const card = page.locator(`li.card[data-finding="${id}"]`);
  check((await card.count()) === 1, "city-bus's inbox does not list its finding");
  check((await card.locator("time").count()) === 1, "the finding shows no deadline");
  await fitsPhone(page, "/findings");
  await shoot(page, "findings-inbox", undefined, false);
  await Promise.all([page.waitForNavigation(), card.locator("a").first().click()]);
  await fitsPhone(page, "/findings/{id}");
  await shoot(page, "finding-open");
  step = "city-bus reports the fix";
  await page.fill("#note", "浏览器测试：已更换屏幕");
  await page.setInputFiles("#photo", { name: "fixed.png", mimeType: "image/png", buffer: PNG });
  await tapHeight(page.locator("form.visit button[type=submit]"), "report fixed");
  await Promise.all([page.waitForNavigation(), page.click("form.visit button[type=submit]")]);
  check((await page.locator(`dl.finding[data-state=rectified]`).count()) === 1, `the fix was not taken: ${(await page.textContent("main")).slice(0, 300)}`);
  check((await page.locator("img.photo").count()) >= 1, "the finding's page shows no photo");
  await shoot(page, "finding-rectified");
  await context.close();
}

/** Rechecked from the receipts on the day of the fix: refused on the page, naming the day
 * after it that has not ended, and the finding stays rectified. */
async function receiptsTooEarly(browser, id) {
  step = "the recheck from the receipts, too early";
  const { context, page } = await signIn(browser, tokens.inspector, "inspector-receipts");
  await page.goto(base + `/findings/${id}`);
  const form = page.locator(`form[action="/findings/${id}/recheck-from-receipts"]`);
  check((await form.count()) === 1, "a rectified finding on a display has no recheck-from-receipts form");
  await tapHeight(form.locator("button"), "close from the receipts");
  const [resp] = await Promise.all([page.waitForNavigation(), form.locator("button").click()]);
  check(resp && resp.status() === 409, `the early recheck answered ${resp && resp.status()}, not 409`);
  const alert = (await page.locator("[role=alert]").textContent().catch(() => "")) || "";
  check(/has not ended/.test(alert), `the page does not say which day has not ended: ${alert}`);
  const f = await api(tokens.inspector, `/api/v1/findings/${id}`);
  check(f.state === "rectified", `after the early recheck the API says ${f.state}`);
  await fitsPhone(page, "the refused recheck");
  await shoot(page, "finding-receipts-too-early");
  await context.close();
}

/** The deployment's wall clock `ms` from now in `tz`, as YYYY-MM-DDTHH:MM:SS. */
function wallClock(tz, ms) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" })
      .formatToParts(new Date(Date.now() + ms))
      .map((p) => [p.type, p.value]),
  );
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}:${parts.second}`;
}

/** A second visit fails cleanliness; the inspector moves its deadline on the finding's page
 * (a past one is refused there, nothing changed) to a minute or so from now, and when that
 * has passed the finding is on city-bus's overdue tab. */
async function deadlineAndOverdue(browsers, unit) {
  step = "a visit failing cleanliness";
  const ins = await signIn(browsers.inspector, tokens.inspector, "inspector-second");
  let page = ins.page;
  await page.goto(base + `/inspect?unit=${encodeURIComponent(unit)}`);
  await page.click("label[for=pass-ads]");
  await page.click("label[for=pass-atmosphere]");
  await page.click("label[for=fail-cleanliness]");
  await page.fill("#note-cleanliness", "浏览器测试：站台不洁");
  await Promise.all([page.waitForNavigation(), page.click("form.visit button[type=submit]")]);
  check(page.url().includes("findings=1"), `the visit did not open one finding: ${page.url()}`);
  const found = await api(tokens.inspector, `/api/v1/findings?unit=${encodeURIComponent(unit)}`);
  const clean = found.rows.find((r) => r.item === "cleanliness" && r.state === "open");
  check(clean, `no open cleanliness finding on ${unit}: ${JSON.stringify(found.rows)}`);

  step = "the inspector moves the deadline";
  await page.goto(base + `/findings/${clean.id}`);
  const button = `form[action="/findings/${clean.id}/deadline"] button`;
  check((await page.locator(button).count()) === 1, "an open finding has no deadline form for the inspector");
  await tapHeight(page.locator(button), "set the deadline");
  const label = (await page.locator("label[for=dl]").textContent()) || "";
  const tz = (label.match(/\(([^)]+)\)/) || [])[1];
  check(tz, `the deadline's label names no time zone: ${label}`);
  await page.fill("#dl", "2020-01-01T09:00");
  let [resp] = await Promise.all([page.waitForNavigation(), page.click(button)]);
  check(resp && resp.status() === 422, `a past deadline answered ${resp && resp.status()}, not 422`);
  check((await page.locator("[role=alert]").count()) === 1, "the refused deadline is not explained on the page");
  const before = await api(tokens.inspector, `/api/v1/findings/${clean.id}`);
  check(before.deadline === clean.deadline, `a refused deadline changed it: ${before.deadline}`);
  // The input takes whole minutes: the first whole minute at least 35 s from now.
  const ahead = Math.ceil((Date.now() + 35_000) / 60_000) * 60_000 - Date.now();
  const when = wallClock(tz, ahead).slice(0, 16);
  await page.fill("#dl", when);
  await page.fill("#dn", "浏览器测试：限时整改");
  [resp] = await Promise.all([page.waitForNavigation(), page.click(button)]);
  const moved = await api(tokens.inspector, `/api/v1/findings/${clean.id}`);
  check(moved.deadline.startsWith(when), `the new deadline is ${moved.deadline}, not ${when} in ${tz}`);
  check((await page.locator("dl.finding time").first().textContent()) === when.replace("T", " "), "the page does not show the new deadline");
  await shoot(page, "finding-deadline-moved");
  await ins.context.close();

  step = "a finding gone overdue";
  const wait = Date.parse(moved.deadline) - Date.now() + 1500;
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const co = await signIn(browsers.company, tokens.company, "company-bus-overdue");
  page = co.page;
  await page.goto(base + "/findings?tab=overdue");
  check((await page.locator(`[data-finding="${clean.id}"]`).count()) === 1, "the finding past its deadline is not on city-bus's overdue tab");
  const f = await api(tokens.company, `/api/v1/findings/${clean.id}`);
  check(f.overdue === true, `the API says overdue ${f.overdue}`);
  await fitsPhone(page, "/findings?tab=overdue");
  await shoot(page, "findings-overdue", undefined, false);
  console.log(`deadline: ${clean.id} moved to ${moved.deadline}, then overdue in city-bus's inbox`);
  await co.context.close();
}

async function inspectorCloses(browser, id) {
  step = "the inspector's recheck";
  const { context, page } = await signIn(browser, tokens.inspector, "inspector-recheck");
  const card = page.locator(`li.card[data-finding="${id}"][data-state=rectified]`);
  check((await card.count()) === 1, "the fix is not waiting for a recheck on /inspect");
  await tapHeight(card.locator("button[value=closed]"), "close");
  await Promise.all([page.waitForNavigation(), card.locator("button[value=closed]").click()]);
  check(page.url().includes("state=closed"), `the recheck went to ${page.url()}`);
  const f = await api(tokens.inspector, `/api/v1/findings/${id}`);
  check(f.state === "closed", `after the recheck the API says ${f.state}`);
  await context.close();
}

async function scorecard(browser) {
  step = "the auditor's scorecard";
  const { context, page } = await signIn(browser, tokens.auditor, "auditor-scorecards");
  await Promise.all([page.waitForNavigation(), page.click("nav a[href='/scorecards']")]);
  const month = await api(tokens.auditor, "/api/v1/scorecards");
  const bus = month.rows.find((r) => r.company === "city-bus");
  check(bus && bus.findings >= 1 && bus.fixed_on_time >= 1, `the API's city-bus card: ${JSON.stringify(bus)}`);
  const row = page.locator(`tr[data-company="city-bus"]`);
  for (const col of ["units", "inspections", "findings", "fixed_on_time", "overdue", "open"]) {
    const shown = Number((await row.locator(`td[data-col=${col}]`).textContent()).trim());
    check(shown === bus[col], `city-bus ${col}: the page says ${shown}, the API ${bus[col]}`);
  }
  const g = page.locator(`g.month[data-month="${month.month}"]`);
  const sum = (k) => month.rows.reduce((s, r) => s + r[k], 0);
  check(Number(await g.getAttribute("data-findings")) === sum("findings"), "the chart's findings differ from the API's");
  check(Number(await g.getAttribute("data-fixed-on-time")) === sum("fixed_on_time"), "the chart's fixed-on-time differ");
  const bar = await g.locator("rect.findings").boundingBox();
  check(bar && bar.height > 0, "the month's findings bar is not drawn");
  check((await page.locator("a[href*='format=csv']").count()) === 1, "/scorecards: no CSV link");
  check((await page.locator("a[href*='format=xlsx']").count()) === 1, "/scorecards: no XLSX link");
  console.log(`scorecard: ${month.month} city-bus findings ${bus.findings}, fixed on time ${bus.fixed_on_time}, page and API agree`);
  await shoot(page, "scorecards");
  await context.close();
}

async function main() {
  mkdirSync(shots, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), "civicast-chromium-"));
  // launchPersistentContext takes the profile directory (--user-data-dir); its contexts
  // would share cookies, so each account gets a fresh browser of its own on a fresh profile.
  const launch = async (who, viewport) =>
    chromium.launchPersistentContext(join(profile, who), {
      executablePath,
      headless: true,
      locale: "zh-CN",
      ...(viewport ? { viewport, isMobile: true, hasTouch: true, deviceScaleFactor: 2 } : {}),
      args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
    });
  const asBrowser = (ctx) => ({ newContext: async () => ctx });
  const contexts = [];
  try {
    const open = async (who, viewport) => {
      const c = await launch(who, viewport);
      contexts.push(c);
      return asBrowser(c);
    };
    const only = (process.env.CIVICAST_BROWSER_STORIES || "ads,inspections").split(",");
    if (only.includes("ads")) {
      const rev = await operatorA(await open("operator-a"));
      await operatorB(await open("operator-b"), rev);
      await auditor(await open("auditor"));
    }
    if (only.includes("inspections")) {
      const { id, unit } = await inspectorVisits(await open("inspector", PHONE));
      await companyFixes({ other: await open("company-taxi", PHONE), own: await open("company-bus", PHONE) }, id);
      await receiptsTooEarly(await open("inspector-receipts", PHONE), id);
      await inspectorCloses(await open("inspector-recheck", PHONE), id);
      await deadlineAndOverdue({ inspector: await open("inspector-second", PHONE), company: await open("company-bus-overdue", PHONE) }, unit);
      await scorecard(await open("auditor-scorecards"));
    }
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
  console.log(`ok: ${n} pages, screenshots in ${shots}`);
}

main().catch((e) => {
  console.error(`browser test failed at "${step}": ${e.message}`);
  process.exit(1);
});
