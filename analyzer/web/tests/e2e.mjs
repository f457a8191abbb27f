// End-to-end browser test of the dashboard in Debian's headless Chromium (playwright-core,
// no downloaded browser), against a real analyzer whose ClickHouse the simulator filled.
// Started by tests/tests/dashboard_browser.rs, which passes:
//
//   FP_BASE_URL      the analyzer, e.g. http://127.0.0.1:41234
//   FP_KEY_ALL       an all-tenants API key
//   FP_KEY_TENANT    a key scoped to FP_TENANT
//   FP_TENANT        that tenant (the other tenant's data must stay invisible to it)
//   FP_FROM, FP_TO   the window to look at (RFC 3339)
//   FP_SCREENSHOTS   folder for one PNG per page
//   FP_CHROMIUM      the browser [/usr/bin/chromium]
//
// Every check compares what the page shows with what the API answers for the same filters.
// Exit status 0 when everything passed; each failure is printed with what was expected.

import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v == null) {
    console.error(`e2e: ${k} is not set`);
    process.exit(2);
  }
  return v;
};
const BASE = env("FP_BASE_URL").replace(/\/$/, "");
const KEY_ALL = env("FP_KEY_ALL");
const KEY_TENANT = env("FP_KEY_TENANT");
const TENANT = env("FP_TENANT");
const FROM = env("FP_FROM");
const TO = env("FP_TO");
const SHOTS = env("FP_SCREENSHOTS");
const CHROMIUM = env("FP_CHROMIUM", "/usr/bin/chromium");
mkdirSync(SHOTS, { recursive: true });

const failures = [];
const figures = {};
let step = "start";
function check(ok, what) {
  if (!ok) {
    failures.push(`[${step}] ${what}`);
    console.error(`FAIL [${step}] ${what}`);
  }
}
/** Polls `read` until it returns `expected` (pages re-render asynchronously after a click),
 *  then compares: a mismatch after the deadline is a failure showing both values. */
async function until(read, expected, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  let actual;
  for (;;) {
    try {
      actual = await read();
    } catch (e) {
      actual = `error: ${e.message}`;
    }
    if (JSON.stringify(actual) === JSON.stringify(expected) || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  eq(actual, expected, what);
}
function eq(actual, expected, what) {
  check(JSON.stringify(actual) === JSON.stringify(expected), `${what}: page shows ${JSON.stringify(actual)}, API says ${JSON.stringify(expected)}`);
}

async function api(path, key = KEY_ALL) {
  const r = await fetch(BASE + path, { headers: { Authorization: `Bearer ${key}` } });
  if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
  return r.json();
}
const qs = (o) => "?" + new URLSearchParams(Object.entries(o).filter(([, v]) => v != null && v !== "")).toString();
const intOf = (s) => Number(String(s).replace(/[^0-9]/g, ""));
const pct = (rate) => `${(rate * 100).toFixed(1)}%`;

// ---- browser ----
const profile = mkdtempSync(join(tmpdir(), "fp-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1440, height: 1000 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(20_000);

// Console errors and failed requests are failures, except the 401s a wrong key provokes on
// purpose (Chromium logs those as "Failed to load resource").
let expectUnauthorized = false;
page.on("console", (m) => {
  if (m.type() !== "error") return;
  const text = m.text();
  if (expectUnauthorized && /status of 401/.test(text)) return;
  check(false, `console error: ${text}`);
});
page.on("pageerror", (e) => check(false, `uncaught exception: ${e.message}`));
page.on("response", (r) => {
  if (!r.url().startsWith(BASE)) return;
  const s = r.status();
  if (s >= 500 || (s >= 400 && !(expectUnauthorized && s === 401))) check(false, `HTTP ${s} for ${r.url().replace(BASE, "")}`);
});
page.on("request", (r) => {
  // The key must never travel in a URL (it would land in server and proxy logs).
  if (r.url().includes("fpk_")) check(false, `API key in a request URL: ${r.url()}`);
});

async function shot(name) {
  await page.waitForLoadState("networkidle");
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}
async function kpis(container = "kpis") {
  const box = page.getByTestId(container);
  await box.getByTestId("kpi-attempts").waitFor();
  const text = async (id) => (await box.getByTestId(`kpi-${id}`).locator("[data-value]").innerText()).trim();
  return {
    attempts: intOf(await text("attempts")),
    failure_rate: await text("failure-rate"),
    failures: intOf(await text("failures")),
    affected_devices: intOf(await text("affected-devices")),
    affected_users: intOf(await text("affected-users")),
  };
}
function kpisOf(s) {
  return {
    attempts: s.attempts,
    failure_rate: pct(s.failure_rate),
    failures: s.failures,
    affected_devices: s.affected_devices,
    affected_users: s.affected_users,
  };
}
async function settle() {
  await page.waitForLoadState("networkidle");
  await page.waitForFunction(() => !document.querySelector(".loading"));
}
const hashParams = () => new URLSearchParams(new URL(page.url()).hash.split("?")[1] ?? "");

try {
  // ---- 1. a wrong key gets a clear message ----
  step = "wrong key";
  expectUnauthorized = true;
  await page.goto(`${BASE}/`);
  await page.getByLabel("API key").fill("fpk_0000000000000000_" + "0".repeat(64));
  await page.getByRole("button", { name: "Sign in" }).click();
  const msg = await page.getByTestId("signin-error").innerText();
  check(/refused this API key: (invalid API key|malformed API key)/.test(msg), `sign-in error says why: ${JSON.stringify(msg)}`);
  await shot("signin-error");
  expectUnauthorized = false;

  // ---- 2. #key= signs in, and the key leaves the address bar ----
  step = "key in fragment";
  const t0 = Date.now();
  await page.goto(`${BASE}/#key=${KEY_ALL}`);
  await page.getByTestId("kpi-attempts").waitFor();
  figures.first_meaningful_paint_ms = Date.now() - t0;
  check(!page.url().includes("fpk_"), `the key left the URL (${page.url()})`);
  eq(await page.evaluate(() => sessionStorage.getItem("fleetpulse.apiKey")), KEY_ALL, "key kept in sessionStorage");
  // Paint benchmark (reported, never asserted: the machine is shared): reloading a signed-in
  // tab until the KPI tiles show numbers, against the summary API call those tiles wait on,
  // alternated five times; the ratio is what the front end costs over its slowest input.
  const paints = [];
  const apis = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    await page.reload();
    await page.getByTestId("kpi-attempts").locator("[data-value]").waitFor();
    paints.push(performance.now() - t);
    const w = { from: await page.locator("main").getAttribute("data-from"), to: await page.locator("main").getAttribute("data-to") };
    const t2 = performance.now();
    await api(`/api/v1/summary${qs(w)}`);
    apis.push(performance.now() - t2);
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  figures.reload_to_kpis_ms_median = Math.round(median(paints));
  figures.summary_api_ms_median = Math.round(median(apis));
  figures.paint_over_summary_ratio = Number((median(paints) / median(apis)).toFixed(2));

  // ---- 3. overview numbers equal the API's ----
  step = "overview";
  const win = { from: FROM, to: TO };
  await page.goto(`${BASE}/#/overview${qs(win)}`);
  await settle();
  const sum = (await api(`/api/v1/summary${qs(win)}`)).summary;
  check(sum.failures > 0, `the simulated fleet has failures in the window (${sum.failures})`);
  await until(() => kpis(), kpisOf(sum), "overview KPIs");
  const cats = (await api(`/api/v1/breakdown/category${qs({ ...win, limit: 12 })}`)).rows.filter((r) => r.failures > 0);
  const shownCats = await page.getByTestId("bars-category").locator("[data-key]").evaluateAll((els) => els.map((e) => [e.dataset.key, Number(e.dataset.value)]));
  eq(shownCats, cats.map((r) => [r.key, r.failures]), "failures by category");
  for (const dim of ["platform", "os_version", "enrollment_method"]) {
    const rows = (await api(`/api/v1/breakdown/${dim}${qs({ ...win, limit: 8 })}`)).rows.filter((r) => r.failures > 0);
    const shown = await page.getByTestId(`bars-${dim}`).locator("[data-key]").evaluateAll((els) => els.map((e) => [e.dataset.key, Number(e.dataset.value)]));
    eq(shown, rows.map((r) => [r.key, r.failures]), `failures by ${dim}`);
  }
  const codes = (await api(`/api/v1/top-codes${qs({ ...win, limit: 10 })}`)).codes;
  const shownCodes = await page.getByTestId("top-codes-table").locator("td[data-col=failures]").allInnerTexts();
  eq(shownCodes.map(intOf), codes.map((c) => c.failures), "top codes' failures");
  check((await page.getByTestId("top-codes-table").innerText()).includes(codes[0].remediation.slice(0, 40)), "top code's remediation shown");
  // One row per (code, category): Windows reports a refused enrollment as event 52 and event 76
  // under two symbols, which are merged into their code's row and shown together.
  const coded = codes.filter((c) => c.code).map((c) => `${c.code} ${c.category}`);
  eq(coded.length, new Set(coded).size, "each coded failure listed once");
  const shownSymbols = await page.getByTestId("top-codes-table").locator(".symbol").allInnerTexts();
  const merged = codes.filter((c) => c.symbols.filter((x) => x).length > 1);
  check(merged.length > 0, "a code reported under two symbols in the simulated fleet");
  for (const c of merged) check(shownSymbols.includes(c.symbols.filter((x) => x).join(" / ")), `symbols of ${c.code} shown together`);
  const funnel = (await api(`/api/v1/funnel${qs(win)}`)).groups;
  const reached = {};
  for (const g of funnel) for (const s of g.stages) reached[s.stage] = (reached[s.stage] ?? 0) + s.reached;
  const shownFunnel = await page.getByTestId("funnel-stages").locator("[data-stage]").evaluateAll((els) => Object.fromEntries(els.map((e) => [e.dataset.stage, Number(e.dataset.reached)])));
  const sorted = (o) => Object.entries(o).sort(([a], [b]) => a.localeCompare(b));
  eq(sorted(shownFunnel), sorted(reached), "funnel: devices reaching each stage");
  // A rollup funnel has no time to enroll; the button computes it from raw events.
  const rolled = await api(`/api/v1/funnel${qs(win)}`);
  if (rolled.plan === "rollups") {
    const rawFunnel = (await api(`/api/v1/funnel${qs({ ...win, source: "raw" })}`)).groups;
    const shownGroups = [...rolled.groups].sort((a, b) => b.devices - a.devices).slice(0, 10);
    const timed = shownGroups.filter((g) =>
      rawFunnel.some((r) => r.enrollment_method === g.enrollment_method && r.platform === g.platform && r.time_to_enroll_seconds.p50 != null),
    ).length;
    check(timed > 0, "raw funnel has time-to-enroll percentiles");
    await page.getByTestId("funnel-exact").click();
    const cells = page.getByTestId("funnel-groups").locator("td[data-col=p50]");
    await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=funnel-groups] td[data-col=p50]")].some((td) => td.textContent !== "–"));
    const shownTimes = (await cells.allInnerTexts()).filter((t) => t !== "–").length;
    eq(shownTimes, timed, "funnel: time to enroll shown for every group that enrolled");
  }
  const ts = await api(`/api/v1/timeseries${qs({ ...win, bucket: await page.locator("main").getAttribute("data-bucket") })}`);
  const chartLabel = await page.getByTestId("trend-chart").locator("[role=img]").getAttribute("aria-label");
  const tsAttempts = ts.points.reduce((a, p) => a + p.attempts, 0);
  check(chartLabel.includes(`${tsAttempts.toLocaleString("en-US")} attempts`), `chart covers the API's ${tsAttempts} attempts: ${chartLabel}`);
  check((await page.locator("canvas").count()) > 0, "the trend chart drew a canvas");
  await shot("overview");
  // The README's picture: the first screen, as a user sees it on opening the link.
  await page.screenshot({ path: join(SHOTS, "overview-first-screen.png") });

  // ---- 4. filters: clicking a platform filters every panel ----
  step = "filter";
  const topPlatform = (await api(`/api/v1/breakdown/platform${qs({ ...win, limit: 8 })}`)).rows[0].key;
  await page.getByTestId("bars-platform").locator("button").first().click();
  await page.waitForFunction((p) => location.hash.includes(`platform=${p}`), topPlatform);
  await settle();
  await until(() => kpis(), kpisOf((await api(`/api/v1/summary${qs({ ...win, platform: topPlatform })}`)).summary), `KPIs filtered by platform=${topPlatform}`);
  await page.getByTestId("chip-platform").click();
  await page.waitForFunction(() => !location.hash.includes("platform="));
  await settle();
  await until(() => kpis(), kpisOf(sum), "KPIs after removing the filter");

  // ---- 5. range and bucket selection ----
  step = "bucket";
  await page.getByTestId("bucket").selectOption("1d");
  await page.waitForFunction(() => location.hash.includes("bucket=1d"));
  await settle();
  eq(hashParams().get("bucket"), "1d", "bucket in the URL");
  await page.getByTestId("range").selectOption("24h");
  await page.waitForFunction(() => location.hash.includes("range=24h"));
  await settle();
  const w24 = { from: await page.locator("main").getAttribute("data-from"), to: await page.locator("main").getAttribute("data-to") };
  // A rolling window is whole buckets ending with the current one (format.ts, resolveWindow).
  eq(Date.parse(w24.to) - Date.parse(w24.from), 86_400_000, "last 24 hours spans 24 h");
  eq(Date.parse(w24.to) % 900_000, 0, `last 24 hours by 15 minutes ends at a whole quarter hour (${w24.to})`);
  eq(Date.parse(w24.to) > Date.now() - 60_000 && Date.parse(w24.to) <= Date.now() + 900_000, true, `last 24 hours ends with the current quarter hour (${w24.to})`);
  await until(() => kpis(), kpisOf((await api(`/api/v1/summary${qs(w24)}`)).summary), "KPIs for the last 24 hours");
  await page.getByTestId("range").selectOption("30d");
  await page.waitForFunction(() => location.hash.includes("range=30d"));
  await settle();
  const w30 = { from: await page.locator("main").getAttribute("data-from"), to: await page.locator("main").getAttribute("data-to") };
  eq(Date.parse(w30.to) - Date.parse(w30.from), 30 * 86_400_000, "last 30 days spans 30 days");
  eq(w30.to.endsWith("T00:00:00Z") && Date.parse(w30.to) > Date.now() - 60_000, true, `last 30 days by day ends at the coming midnight (${w30.to})`);
  await until(() => kpis(), kpisOf((await api(`/api/v1/summary${qs(w30)}`)).summary), "KPIs for the last 30 days");

  // ---- 6. tenant switch ----
  step = "tenant switch";
  await page.goto(`${BASE}/#/overview${qs(win)}`);
  await settle();
  await page.getByTestId("tenant-switch").selectOption(TENANT);
  await page.waitForFunction((t) => location.hash.includes(`tenant=${t}`), TENANT);
  await settle();
  await until(() => kpis(), kpisOf((await api(`/api/v1/summary${qs({ ...win, tenant: TENANT })}`)).summary), `KPIs of tenant ${TENANT}`);
  await page.getByTestId("tenant-switch").selectOption("");
  await settle();

  // ---- 7. drill-down into the top category ----
  step = "category drill-down";
  const cat = cats[0].key;
  await page.getByTestId("bars-category").locator("a").first().click();
  await page.waitForFunction((c) => location.hash.startsWith(`#/category/${c}`), cat);
  await settle();
  await until(() => kpis("drill-kpis"), kpisOf((await api(`/api/v1/summary${qs({ ...win, category: cat })}`)).summary), `KPIs of category ${cat}`);
  const aff = await api(`/api/v1/affected-devices${qs({ ...win, category: cat, limit: 25 })}`);
  await until(() => page.getByTestId("affected-table").locator("tbody tr").count(), aff.devices.length, "affected devices on the first page");
  await until(async () => (await page.getByTestId("affected-range").innerText()).trim(), `1–${aff.devices.length} of ${aff.total_estimated ? "about " : ""}${aff.total.toLocaleString("en-US")}`, "affected devices count");
  const stages = (await api(`/api/v1/breakdown/stage${qs({ ...win, category: cat, limit: 20 })}`)).rows.filter((r) => r.failures > 0);
  const shownStages = await page.getByTestId("bars-stage").locator("[data-key]").evaluateAll((els) => els.map((e) => [e.dataset.key, Number(e.dataset.value)]));
  eq(shownStages.map(([k, v]) => `${k}=${v}`).sort(), stages.map((r) => `${r.key}=${r.failures}`).sort(), "failures by stage");
  if (aff.next_cursor) {
    await page.getByRole("button", { name: "Next" }).click();
    await settle();
    const second = await api(`/api/v1/affected-devices${qs({ ...win, category: cat, limit: 25, cursor: aff.next_cursor })}`);
    await until(() => page.getByTestId("affected-table").locator("tbody tr td a").first().innerText(), second.devices[0].device_id, "second page starts where the API's does");
    await page.getByRole("button", { name: "Previous" }).click();
    await until(() => page.getByTestId("affected-table").locator("tbody tr td a").first().innerText(), aff.devices[0].device_id, "back on the first page");
  }
  await shot("category");
  // Search: a device id's tail finds that device.
  const target = aff.devices[0];
  const needle = target.device_id.slice(-6);
  await page.getByLabel("Search devices or users").fill(needle);
  await page.getByRole("button", { name: "Search" }).click();
  await settle();
  const found = await api(`/api/v1/affected-devices${qs({ ...win, category: cat, limit: 25, q: needle })}`);
  await until(() => page.getByTestId("affected-table").locator("tbody tr td:first-child a").allInnerTexts(), found.devices.map((d) => d.device_id), `search ${needle}`);
  check(found.devices.some((d) => d.device_id === target.device_id), `search finds ${target.device_id}`);

  // ---- 8. device timeline and state ----
  step = "device";
  await page.getByTestId("affected-table").locator("tbody tr td a").first().click();
  await page.waitForFunction(() => location.hash.startsWith("#/device/"));
  await settle();
  const devId = decodeURIComponent(new URL(page.url()).hash.split("?")[0].replace("#/device/", ""));
  const devTenant = hashParams().get("tenant");
  const evs = await api(`/api/v1/devices/${encodeURIComponent(devId)}/events${qs({ tenant: devTenant, limit: 50 })}`);
  await until(() => page.getByTestId("timeline").locator("li").count(), evs.events.length, `timeline of ${devId}`);
  const stateResp = await fetch(`${BASE}/api/v1/devices/${encodeURIComponent(devId)}/state${qs({ tenant: devTenant })}`, { headers: { Authorization: `Bearer ${KEY_ALL}` } });
  if (stateResp.ok) {
    const st = await stateResp.json();
    eq((await page.getByTestId("mdm-enrolled").innerText()).trim(), st.mdm_enrolled ? "yes" : "no", "MDM enrolled");
  }
  await shot("device");

  // ---- 9. code drill-down ----
  step = "code drill-down";
  const code = codes.find((c) => c.code)?.code;
  await page.goto(`${BASE}/#/overview${qs(win)}`);
  await settle();
  await page.getByTestId("top-codes-table").locator(`a[href^="#/code/${code}"]`).first().click();
  await page.waitForFunction((c) => location.hash.startsWith(`#/code/${c}`), code);
  await settle();
  await until(() => kpis("drill-kpis"), kpisOf((await api(`/api/v1/summary${qs({ ...win, code })}`)).summary), `KPIs of code ${code}`);
  await shot("code");

  // ---- 10. insights ----
  step = "insights";
  await page.goto(`${BASE}/#/insights`);
  await settle();
  const ins = (await api(`/api/v1/insights`)).insights;
  for (const i of ins) eq(Number(await page.getByTestId(`insight-count-${i.id}`).getAttribute("data-value")), i.count, `insight ${i.id}`);
  const withItems = ins.find((i) => i.count > 0);
  if (withItems) {
    await page.getByTestId(`insight-${withItems.id}`).getByRole("button").click();
    await settle();
    const items = await api(`/api/v1/insights/${withItems.id}/devices${qs({ limit: 50 })}`);
    eq(await page.getByTestId(`insight-items-${withItems.id}`).locator("tbody tr").count(), items.items.length, `items of insight ${withItems.id}`);
  }
  await shot("insights");

  // ---- 11. alerts ----
  step = "alerts";
  await page.goto(`${BASE}/#/alerts`);
  await settle();
  const doc = await (await fetch(`${BASE}/api/v1/openapi.json`)).json();
  if (doc.paths["/api/v1/alerts"]) {
    const list = (await api(`/api/v1/alerts?status=all`)).alerts;
    figures.alerts_in_test_fleet = list.length;
    await until(() => page.getByTestId("alert-list").locator("li").count().catch(() => 0), list.length, "alerts listed");
    // Acknowledge the first open, unacknowledged alert from the page.
    const open = list.find((a) => a.status !== "resolved" && !a.acknowledged_by);
    if (open) {
      await page.getByTestId("alert-list").locator("li", { hasText: "Acknowledge" }).first().getByRole("button", { name: "Acknowledge" }).click();
      await until(async () => (await api(`/api/v1/alerts?status=all`)).alerts.filter((a) => a.acknowledged_by).length > 0, true, "an alert acknowledged from the page");
    }
    // A silence made with the form appears in the API, and its Remove button ends it.
    const silenced = async () => (await api(`/api/v1/silences`)).silences.filter((x) => x.active && x.comment === "e2e silence").map((x) => x.matchers.map((m) => `${m.name}=${m.value}`).sort().join(","));
    await page.getByRole("form", { name: "New silence" }).getByLabel("Tenant").fill(TENANT);
    await page.getByRole("form", { name: "New silence" }).getByLabel("Category").fill("license");
    await page.getByRole("form", { name: "New silence" }).getByLabel("Comment").fill("e2e silence");
    await page.getByRole("button", { name: "Add silence" }).click();
    await until(silenced, [`category=license,tenant=${TENANT}`], "silence created from the page");
    await until(() => page.getByTestId("silence-list").locator("li", { hasText: "e2e silence" }).count(), 1, "silence listed");
    await shot("alerts");
    await page.getByRole("button", { name: `Remove silence tenant=${TENANT}, category=license` }).click();
    await until(silenced, [], "silence removed from the page");
  } else {
    check((await page.locator("main").innerText()).includes("Alerting is not part of this analyzer"), "alerts page says alerting is absent");
    await shot("alerts");
  }

  // ---- 12. dark theme ----
  step = "dark theme";
  await page.goto(`${BASE}/#/overview${qs(win)}`);
  await settle();
  await page.getByRole("button", { name: "Switch to dark theme" }).click();
  await until(() => page.evaluate(() => document.documentElement.dataset.theme), "dark", "theme attribute");
  await settle();
  await shot("overview-dark");
  await page.getByRole("button", { name: "Switch to light theme" }).click();

  // ---- 13. keyboard: the skip link and the first bar are reachable ----
  step = "keyboard";
  await page.reload();
  await settle();
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement?.classList.contains("skip")), "Tab reaches the skip link first");

  // ---- 14. sign out, then a tenant-scoped key sees only its tenant ----
  step = "sign out";
  await page.getByTestId("sign-out").click();
  await page.getByLabel("API key").waitFor();
  eq(await page.evaluate(() => sessionStorage.getItem("fleetpulse.apiKey")), null, "key removed from the session");
  step = "tenant key";
  await page.getByLabel("API key").fill(KEY_TENANT);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("tenant-fixed").waitFor();
  check((await page.getByTestId("tenant-fixed").innerText()).includes(TENANT), "the tenant of the key is shown");
  await page.goto(`${BASE}/#/overview${qs(win)}`);
  await settle();
  await until(() => kpis(), kpisOf((await api(`/api/v1/summary${qs(win)}`, KEY_TENANT)).summary), `KPIs with the ${TENANT} key`);
  await until(() => kpis(), kpisOf((await api(`/api/v1/summary${qs({ ...win, tenant: TENANT })}`)).summary), `the ${TENANT} key sees exactly tenant ${TENANT}`);
} catch (e) {
  check(false, `${e.stack ?? e}`);
  await page.screenshot({ path: join(SHOTS, `failure-${step.replace(/\W+/g, "-")}.png`), fullPage: true }).catch(() => {});
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

writeFileSync(join(SHOTS, "figures.json"), JSON.stringify(figures, null, 2));
console.log(`e2e: figures ${JSON.stringify(figures)}`);
if (failures.length) {
  console.error(`e2e: ${failures.length} check(s) failed`);
  process.exit(1);
}
console.log("e2e: all checks passed");
