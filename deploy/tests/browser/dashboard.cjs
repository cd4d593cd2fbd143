// The live dashboard in Debian's headless Chromium, driven by playwright-core: while orders
// flow its figures change by themselves (server-sent events, no reload); once the tills stop
// they settle on exactly the API's figures; a screenshot is saved. With BREWLINE_SERVE__TOKEN
// set (the server's serve.token), the API is refused without it, the browser is sent to the
// login page, logs in with the token, and the API is read with it as a bearer token.
//
//   node dashboard.cjs http://127.0.0.1:PORT SCREENSHOT.png   (scripts/test runs it, with
//   NODE_PATH pointing at the playwright-core it installed)
"use strict";

const { chromium } = require("playwright-core");
const assert = require("node:assert/strict");

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node dashboard.cjs BASE_URL SCREENSHOT.png");
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const token = process.env.BREWLINE_SERVE__TOKEN || "";
const bearer = token ? { Authorization: `Bearer ${token}` } : {};

async function eventually(what, seconds, check) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const got = await check();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${seconds} s`);
    await sleep(250);
  }
}

async function api(path) {
  const res = await fetch(base + path, { headers: bearer });
  assert.equal(res.status, 200, `${path}: ${res.status}`);
  return res.json();
}

/// The numbers on the page (data-value holds each raw figure).
async function shown(page) {
  return page.evaluate(() => {
    const value = (id) => document.getElementById(id).dataset.value;
    const table = (id) =>
      [...document.querySelectorAll(`#${id} tr`)].map((tr) => [
        tr.children[0].textContent,
        Number(tr.children[2].dataset.value),
      ]);
    return {
      revenue: value("revenue-today"),
      orders: value("orders-today"),
      accepted: value("accepted-revenue"),
      rate: value("suggestion-rate"),
      products: table("top-products"),
      cities: table("cities"),
      stores: table("top-stores").length,
      events: document.getElementById("status").dataset.events,
    };
  });
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    // The demo serves once its first run and batch run are done.
    await eventually("the server listening", 300, () =>
      fetch(base + "/healthz").then(() => true, () => false),
    );
    if (token) {
      const refused = await fetch(base + "/api/sales/today");
      assert.equal(refused.status, 401, "the API without the token");
      await page.goto(base + "/");
      assert.ok(page.url().endsWith("/login"), `sent to the login page, not ${page.url()}`);
      await page.fill("#token", "not the token");
      await Promise.all([page.waitForNavigation(), page.click("#log-in")]);
      assert.ok(page.url().endsWith("/login"), "a wrong token stays on the login page");
      await page.fill("#token", token);
      await Promise.all([page.waitForNavigation(), page.click("#log-in")]);
      assert.ok(!page.url().endsWith("/login"), `logged in: ${page.url()}`);
      const cookies = await page.context().cookies();
      const session = cookies.find((c) => c.name === "brewline_session");
      assert.ok(session && session.httpOnly && session.value !== token, "an HttpOnly session cookie, not the token");
      console.log("dashboard: logged in with the token");
    } else {
      await page.goto(base + "/");
    }
    const first = await eventually("the first figures", 60, async () => {
      const s = await shown(page);
      return s.revenue !== "" && s.products.length > 0 ? s : null;
    });
    // The page updates by itself while orders flow.
    const moved = await eventually("the figures moving", 60, async () => {
      const s = await shown(page);
      return Number(s.revenue) > Number(first.revenue) && Number(s.orders) > Number(first.orders) ? s : null;
    });
    console.log(`dashboard: revenue ${first.revenue} -> ${moved.revenue}, orders ${first.orders} -> ${moved.orders}`);

    // Once the tills stop, the page settles (the same over three updates, a second apart)
    // on the API's figures.
    let same = 0;
    let last = null;
    const settled = await eventually("the figures settling", 180, async () => {
      await sleep(1500);
      const s = await shown(page);
      same = last && JSON.stringify(s) === JSON.stringify(last) ? same + 1 : 0;
      last = s;
      return same >= 3 ? s : null;
    });
    const today = await api("/api/sales/today");
    const products = await api("/api/products/top?limit=5");
    const cities = await api("/api/cities");
    assert.equal(Number(settled.revenue), today.revenue, "revenue today");
    assert.equal(Number(settled.orders), today.orders, "orders today");
    assert.equal(Number(settled.accepted), today.accepted_revenue, "accepted revenue");
    assert.deepEqual(
      settled.products,
      products.products.map((p) => [p.name ?? p.product_id, p.revenue]),
      "top products",
    );
    assert.deepEqual(settled.cities, cities.cities.map((c) => [c.city, c.revenue]), "cities");
    assert.ok(settled.stores > 0, "top stores shown");
    assert.ok(today.suggestions > 0 && today.accepted_revenue > 0, "suggestions made and taken");
    assert.equal(settled.rate, String(today.suggestion_rate), "suggestion rate");
    assert.equal(Number(settled.events), today.watermark.speed.events, "same events read");
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(
      `dashboard: equals the API (revenue ${today.revenue} VND, ${today.orders} orders, ` +
        `${settled.products.length} products, ${settled.cities.length} cities); screenshot ${screenshot}`,
    );
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
