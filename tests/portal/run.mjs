// Browser end-to-end test of Herald's tenant portal.
//
// Started by crates/herald/tests/portal_browser.rs (`cargo test`), which runs Herald and passes
// HERALD_URL, HERALD_API_KEY and HERALD_JWT_SECRET. This script starts its own local webhook
// receiver, sets up two tenants through the admin API, then does everything else through the
// portal's UI in headless Debian Chromium, driven by playwright-core: the wizard (with a field
// error), a test event, the attempt and the receiver's answer, retry, disable / enable, secret
// rotation, the filter, delete; tenant isolation, CSRF refusal, the expired-link page; axe-core
// on every page, keyboard-only use, layouts at 1280 and 390 px. Screenshots go to
// SCREENSHOT_DIR (docs/portal/ in the repository).
//
// Exit code 0 when every check passed; any failure throws and exits 1.

import { createRequire } from "node:module";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, mkdirSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = "/usr/bin/chromium";
const fail = (msg) => { throw new Error(msg); };

if (!existsSync(CHROMIUM)) fail(`${CHROMIUM} is missing: install Debian's chromium (run .ci/run, or apt-get install chromium)`);
if (!existsSync(join(here, "node_modules", "playwright-core")) || !existsSync(join(here, "node_modules", "axe-core"))) {
  fail("tests/portal/node_modules is missing: run .ci/run (or `npm ci` in tests/portal)");
}
const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const BASE = process.env.HERALD_URL || fail("HERALD_URL is not set");
const KEY = process.env.HERALD_API_KEY || fail("HERALD_API_KEY is not set");
const JWT = process.env.HERALD_JWT_SECRET || fail("HERALD_JWT_SECRET is not set");
const SHOTS = process.env.SCREENSHOT_DIR || "";
if (SHOTS) mkdirSync(SHOTS, { recursive: true });

let step = 0;
const log = (m) => console.log(`[portal ${++step}] ${m}`);
const expect = (cond, msg) => { if (!cond) fail(msg); };

// --- A local webhook receiver that answers with a recognisable body. ---
let received = [];
const receiver = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    received.push({ headers: req.headers, body });
    if (req.url.startsWith("/gone")) {
      res.writeHead(410, { "content-type": "text/plain" });
      res.end("this endpoint is gone");
      return;
    }
    res.writeHead(200, { "content-type": "application/json", "x-receiver": "portal-test" });
    res.end(JSON.stringify({ receiver: "portal-test", n: received.length }));
  });
});
await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
const RECEIVER = `http://127.0.0.1:${receiver.address().port}/hook`;

// --- Admin API set-up: two tenants; tenant B has a destination. ---
async function admin(method, path, body) {
  const r = await fetch(`${BASE}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (!r.ok) fail(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
const suffix = Date.now().toString(36);
const A = `acme-${suffix}`, B = `globex-${suffix}`;
await admin("PUT", `/tenants/${A}`);
await admin("PUT", `/tenants/${B}`);
const destB = await admin("POST", `/tenants/${B}/destinations`, {
  type: "webhook", topics: "*", config: { url: RECEIVER },
});
const link = (await admin("GET", `/tenants/${A}/portal`)).redirect_url;
expect(link.includes("token="), `portal link without a token: ${link}`);

// --- The browser: Debian's Chromium with a fresh profile. ---
const profile = mkdtempSync(join(tmpdir(), "herald-portal-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
  viewport: { width: 1280, height: 860 },
  // The portal's CSP forbids inline scripts; axe-core is injected as one, for the test only.
  bypassCSP: true,
});
const page = context.pages()[0] || (await context.newPage());
page.setDefaultTimeout(10000);

async function axe(name) {
  await page.addScriptTag({ content: AXE });
  const res = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = res.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  if (bad.length) {
    fail(`axe on ${name}: ${bad.map((v) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join(", ")})`).join("; ")}`);
  }
}
async function shot(name, fullPage = false) {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });
}
async function text() { return await page.locator("main").innerText(); }
async function expectText(s, where) {
  const end = Date.now() + 5000;
  let t = "";
  while (Date.now() < end) {
    t = await text().catch(() => "");
    if (t.includes(s)) return;
    await page.waitForTimeout(100);
  }
  fail(`${where}: expected "${s}" on the page, got:\n${t.slice(0, 1500)}`);
}
// Clicks something that loads a new page, and waits for it.
async function go(locator) {
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), locator.click()]);
}
async function noOverflow(name) {
  const [sw, w] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  expect(sw <= w + 1, `${name}: the page is ${sw}px wide in a ${w}px viewport`);
}
// Reloads until `pred()` holds (deliveries are asynchronous).
async function until(pred, what, ms = 15000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await page.waitForTimeout(250);
    await page.reload();
  }
  fail(`timed out waiting for ${what}; page:\n${(await text()).slice(0, 1500)}`);
}

try {
  // 1. The link is exchanged for a cookie and the token leaves the URL.
  const resp = await page.goto(link);
  expect(!page.url().includes("token="), `token still in the URL: ${page.url()}`);
  expect(page.url().endsWith("/portal/destinations"), `landed on ${page.url()}`);
  expect(resp.ok(), `portal answered ${resp.status()}`);
  const cookies = await context.cookies();
  const c = cookies.find((c) => c.name === "herald_portal");
  expect(c && c.httpOnly && c.sameSite === "Strict", `session cookie: ${JSON.stringify(c)}`);
  await expectText("No destinations yet", "empty state");
  await axe("destinations (empty)");
  await shot("destinations-empty");
  log("link exchanged for an HttpOnly SameSite=Strict cookie; empty state shown");

  // 2. Wizard step 1: pick the webhook type.
  await go(page.getByRole("link", { name: "Add destination" }).first());
  await expectText("Step 1 of 2", "wizard step 1");
  await axe("wizard step 1");
  await shot("wizard-type");
  await page.getByRole("radio", { name: /Webhook/ }).check();
  await go(page.getByRole("button", { name: "Next: configure" }));
  await expectText("Step 2 of 2", "wizard step 2");
  await axe("wizard step 2");

  // 3. An invalid URL gets a field error next to the field.
  await page.getByRole("checkbox", { name: "user.created" }).check();
  const url = page.locator("input[name='config.url']");
  await url.fill("not a url");
  await go(page.getByRole("button", { name: "Create destination" }));
  const fieldErr = page.locator(".field.invalid:has(input[name='config.url']) .error");
  expect(await fieldErr.count() === 1, `no field error next to the URL field: ${page.url()} ${(await text()).slice(0, 800)}`);
  const errText = await fieldErr.innerText();
  expect(errText.length > 3, `empty field error`);
  expect(await url.getAttribute("aria-invalid") === "true", "URL input is not aria-invalid");
  expect(await page.getByRole("checkbox", { name: "user.created" }).isChecked(), "the topic choice was lost");
  await axe("wizard with a field error");
  await shot("wizard-field-error");
  log(`invalid URL refused next to the field: "${errText}"`);

  // 4. A valid URL creates the destination.
  await url.fill(RECEIVER);
  await go(page.getByRole("button", { name: "Create destination" }));
  await expectText("Destination created.", "after create");
  const destUrl = page.url().split("?")[0];
  const destId = decodeURIComponent(destUrl.split("/").pop());
  log(`destination ${destId} created through the wizard`);

  // 5. Send a test event; its attempt succeeds with the receiver's body.
  await go(page.getByRole("button", { name: "Send test event" }));
  await expectText("Test event sent.", "after test event");
  await until(async () => (await page.locator("tbody .badge.ok", { hasText: "Succeeded" }).count()) > 0, "the test event's attempt");
  expect(received.length >= 1, "the receiver got nothing");
  expect(JSON.parse(received[0].body).email === "ada@example.com", `receiver got ${received[0].body}`);
  await axe("destination overview");
  await go(page.getByRole("link", { name: /View attempt/ }).first());
  await expectText('"receiver":"portal-test"', "attempt page response body");
  await expectText("x-receiver: portal-test", "attempt page response headers");
  await expectText("Latency", "attempt page");
  // The request as sent: Herald's headers, with the signature masked.
  const sentSig = received[0].headers["webhook-signature"];
  expect(sentSig && sentSig.length > 20, `receiver got no signature: ${JSON.stringify(received[0].headers)}`);
  await expectText(`webhook-id: ${received[0].headers["webhook-id"]}`, "attempt page request headers");
  await expectText("webhook-signature: ", "attempt page request headers");
  expect(!(await text()).includes(sentSig), "the attempt page shows the full signature");
  await axe("attempt");
  await shot("attempt", true);
  log("test event delivered; the attempt page shows the receiver's response");

  // 6. Retry re-sends it.
  const before = received.length;
  await go(page.getByRole("button", { name: "Retry" }).first());
  await expectText("Retry queued.", "after retry");
  await until(async () => received.length > before && (await page.locator("tbody tr").count()) >= 2, "the retried attempt");
  await expectText("Test event", "event page marks test events");
  await axe("event");
  await shot("event");
  log("retry re-sent the event (2 attempts)");

  // 7. Disable and enable.
  await page.goto(destUrl);
  await go(page.getByRole("button", { name: "Disable" }));
  await expectText("Destination disabled.", "after disable");
  expect(await page.getByRole("button", { name: "Send test event" }).count() === 0, "test button on a disabled destination");
  await go(page.getByRole("button", { name: "Enable" }));
  await expectText("Destination enabled.", "after enable");
  log("disabled and enabled again");

  // 8. Rotate the secret: both secrets are shown during the overlap.
  const oldSecret = await page.locator("#secret-current").innerText();
  await go(page.getByRole("button", { name: "Rotate secret" }));
  await expectText("Signing secret rotated.", "after rotation");
  const newSecret = await page.locator("#secret-current").innerText();
  const prevSecret = await page.locator("#secret-previous").innerText();
  expect(newSecret !== oldSecret && prevSecret === oldSecret, "rotation did not keep the old secret as previous");
  await axe("destination after rotation");
  await shot("destination", true);
  log("secret rotated; current and previous secrets shown");

  // 9. Edit the filter; the test event's sample no longer matches and the page says so.
  await go(page.getByRole("link", { name: "Edit settings" }));
  await axe("settings");
  await page.locator("textarea[name='filter']").fill('{"data": {"role": "admin"}}');
  await shot("settings");
  await go(page.getByRole("button", { name: "Save settings" }));
  await expectText("Settings saved.", "after saving the filter");
  await expectText('{"data":{"role":"admin"}}', "filter shown on the overview");
  await go(page.getByRole("button", { name: "Send test event" }));
  await expectText("does not match this destination's filter", "test event refused by the filter");
  log("filter saved; a test event it rejects is refused in place");

  // 10. Events tab and topic catalog.
  await go(page.getByRole("link", { name: "Events and deliveries" }));
  await expectText("Test", "events list marks test events");
  await axe("events");
  await shot("events");
  await page.locator("select[name='status']").selectOption("success");
  await go(page.getByRole("button", { name: "Filter" }));
  expect(await page.locator("tbody .badge.ok", { hasText: "Succeeded" }).count() > 0, "events filtered by status: no succeeded attempt");
  await go(page.getByRole("link", { name: "Topic catalog" }));
  await page.getByRole("searchbox").fill("deleted");
  expect(await page.locator("[data-topic]:visible").count() === 1, "catalog search did not narrow to one topic");
  await axe("topics");
  await shot("topics");
  log("events list (with status filter) and topic catalog search");

  // 11. Destinations list, then delete with confirmation.
  await go(page.getByRole("link", { name: "Destinations" }));
  await expectText(new URL(RECEIVER).host, "destinations list shows the target");
  await axe("destinations");
  await shot("destinations");
  await page.goto(destUrl);
  await go(page.getByRole("link", { name: "Delete" }));
  await expectText("Delete this destination?", "confirmation");
  await axe("delete confirmation");
  await shot("delete-confirm");
  await go(page.getByRole("button", { name: "Delete permanently" }));
  await expectText("Destination deleted.", "after delete");
  await expectText("No destinations yet", "empty again");
  log("deleted after confirmation");

  // 12. Tenant isolation: tenant B's destination is refused to tenant A's session.
  for (const path of [`/portal/destinations/${destB.id}`, `/portal/destinations/${destB.id}/settings`]) {
    const r = await page.goto(`${BASE}${path}`);
    expect(r.status() === 404, `${path} answered ${r.status()} to another tenant`);
    await expectText("Not found", path);
  }
  await page.goto(`${BASE}/portal/destinations`);
  const csrf = await page.locator("input[name='_csrf']").first().getAttribute("value");
  const forged = await page.evaluate(async ([id, token]) => {
    const r = await fetch(`/portal/destinations/${id}/disable`, {
      method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" },
      body: `_csrf=${encodeURIComponent(token)}`,
    });
    return r.status;
  }, [destB.id, csrf]);
  expect(forged === 404, `disabling tenant B's destination answered ${forged}`);
  const stillB = await admin("GET", `/tenants/${B}/destinations/${destB.id}`);
  expect(stillB.disabled_at === null, "tenant B's destination was disabled by tenant A");
  log("tenant B's destination is invisible and untouchable from tenant A's session");

  // 13. CSRF: a POST without the token is refused.
  const noToken = await page.evaluate(async () => (await fetch("/portal/logout", { method: "POST" })).status);
  expect(noToken === 403, `POST without a CSRF token answered ${noToken}`);
  log("a POST without the CSRF token is refused (403)");

  // 14. Keyboard only: create a destination without the mouse.
  await page.goto(`${BASE}/portal/destinations`);
  async function tabTo(pred, what, max = 40) {
    for (let i = 0; i < max; i++) {
      await page.keyboard.press("Tab");
      if (await page.evaluate(pred)) return;
    }
    fail(`keyboard: could not reach ${what} with Tab`);
  }
  await tabTo(() => document.activeElement?.textContent?.includes("Add your first destination"), "the add link");
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/new$/);
  await tabTo(() => document.activeElement?.textContent?.includes("Next: configure"), "the Next button");
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/new\/webhook$/);
  await tabTo(() => document.activeElement?.value === "*", "All topics");
  await page.keyboard.press("Space");
  await tabTo(() => document.activeElement?.name === "config.url", "the URL field");
  await page.keyboard.type(RECEIVER);
  await page.keyboard.press("Enter");
  await expectText("Destination created.", "keyboard-created destination");
  await expectText("All topics (*)", "keyboard-created destination subscribes to *");
  await tabTo(() => document.activeElement?.textContent?.trim() === "Send test event", "Send test event");
  await page.keyboard.press("Enter");
  await expectText("Test event sent.", "keyboard test event");
  log("keyboard only: created a destination and sent a test event");
  const kbDest = page.url().split("?")[0];

  // 14b. A destination whose endpoint answers 410 is auto-disabled, and the portal says why.
  const gone = await admin("POST", `/tenants/${A}/destinations`, {
    type: "webhook", topics: ["user.created"], config: { url: `${RECEIVER.replace("/hook", "/gone")}` },
  });
  await page.goto(`${BASE}/portal/destinations`);
  const goneRow = page.locator("tr", { has: page.locator(`a[href="/portal/destinations/${gone.id}"]`) });
  await go(goneRow.getByRole("button", { name: /Send test/ }));
  await expectText("Test event sent.", "test event from the list");
  await page.goto(`${BASE}/portal/destinations/${gone.id}`);
  await until(async () => (await text()).includes("Auto-disabled"), "the 410 destination to be auto-disabled");
  await expectText("410 Gone", "auto-disable reason");
  await page.goto(`${BASE}/portal/destinations`);
  await expectText("Auto-disabled", "auto-disabled in the list");
  await axe("destinations with an auto-disabled one");
  log("a 410 answer auto-disables the destination; list and page show it with the reason");

  // 15. Layouts at 390 px.
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [name, path] of [["destinations", "/portal/destinations"], ["destination", kbDest.replace(BASE, "")],
    ["wizard", "/portal/destinations/new/webhook"], ["events", "/portal/events"], ["topics", "/portal/topics"]]) {
    await page.goto(`${BASE}${path}`);
    await noOverflow(`${name} at 390 px`);
    await axe(`${name} at 390 px`);
    if (name === "destinations" || name === "destination") await shot(`mobile-${name}`);
  }
  await page.setViewportSize({ width: 1280, height: 860 });
  for (const path of ["/portal/destinations", "/portal/events", "/portal/topics"]) {
    await page.goto(`${BASE}${path}`);
    await noOverflow(`${path} at 1280 px`);
  }
  log("layouts hold at 390 and 1280 px");

  // 16. An expired link shows the expiry page with the way back.
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const head = b64({ alg: "HS256", typ: "JWT" });
  const claims = b64({ iss: "herald", sub: A, iat: now - 2 * 86400, exp: now - 86400 });
  const sig = createHmac("sha256", JWT).update(`${head}.${claims}`).digest("base64url");
  const fresh = await chromium.launch({ executablePath: CHROMIUM, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"] });
  const p2 = await fresh.newPage({ viewport: { width: 1280, height: 700 } });
  const r2 = await p2.goto(`${BASE}/portal?token=${head}.${claims}.${sig}`);
  expect(r2.status() === 401, `expired link answered ${r2.status()}`);
  const t2 = await p2.locator("main").innerText();
  expect(t2.includes("This link has expired"), `expired page: ${t2}`);
  const back = await p2.getByRole("link", { name: /Back to/ }).getAttribute("href");
  expect(back === process.env.HERALD_PORTAL_REFERER_URL, `referer link ${back}`);
  if (SHOTS) await p2.screenshot({ path: join(SHOTS, "expired.png") });
  const r3 = await p2.goto(`${BASE}/portal/destinations`);
  expect(r3.status() === 401 && (await p2.locator("main").innerText()).includes("Your session has expired"), "no-session page");
  log("expired link and missing session show the expiry page with the referer link");

  // 17. The link's theme: dark, accessible too.
  const darkLink = (await admin("GET", `/tenants/${A}/portal?theme=dark`)).redirect_url;
  const darkCtx = await fresh.newContext({ viewport: { width: 1280, height: 760 }, bypassCSP: true });
  const p3 = await darkCtx.newPage();
  await p3.goto(darkLink);
  expect(await p3.locator("html").getAttribute("data-theme") === "dark", "theme=dark was not applied");
  await p3.addScriptTag({ content: AXE });
  const darkRes = await p3.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  const darkBad = darkRes.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(!darkBad.length, `axe in the dark theme: ${darkBad.map((v) => v.id).join(", ")}`);
  if (SHOTS) await p3.screenshot({ path: join(SHOTS, "dark.png") });
  await fresh.close();
  log("the link's theme=dark is applied and passes axe");

  console.log(`[portal] all ${step} checks passed`);
} finally {
  await context.close();
  receiver.close();
  rmSync(profile, { recursive: true, force: true });
}
