// Drives the /demo page in headless Chromium, as three people: Ann and Bob of acme, Cleo of
// globex. Prints one JSON object per line (what tests/gateway/test_browser.py asserts on) and
// writes screenshots. Any failed wait throws, and the script exits non-zero with the step.
//
//   node browser.mjs BASE_URL SCREENSHOT_DIR
//   env: CHROMIUM (default /usr/bin/chromium), SERVICE_TOKEN (a role=service token)
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, shots] = process.argv.slice(2);
const serviceToken = process.env.SERVICE_TOKEN;
const WAIT = 10_000;
mkdirSync(shots, { recursive: true });

const out = (obj) => console.log(JSON.stringify(obj));
let step = "start";
const at = (name) => {
  step = name;
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

async function person(name, user, company) {
  const context = await browser.newContext({ viewport: { width: 900, height: 720 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await page.goto(`${base}/demo`);
  await page.locator("#signin-dev").waitFor({ timeout: WAIT });
  await page.fill("#signin-dev [name=name]", name);
  await page.fill("#signin-dev [name=user]", user);
  await page.fill("#signin-dev [name=company]", company);
  await page.click("#signin-dev button[type=submit]");
  await page.waitForSelector('#conn[data-state="online"]', { timeout: WAIT });
  const p = { page, errors, name, user, company };
  people.push(p);
  return p;
}

async function openDocument(p, id, strategy) {
  await p.page.fill("#open-doc [name=documentId]", id);
  await p.page.selectOption("#open-doc [name=strategy]", strategy);
  await p.page.click("#open-doc button[type=submit]");
  await waitSaved(p);
}

async function waitSaved(p) {
  await p.page.waitForSelector('#doc-form:not([hidden])[data-state="saved"]', { timeout: WAIT });
}

async function waitValue(p, selector, expected) {
  await p.page.waitForFunction(
    ([s, v]) => document.querySelector(s)?.value === v,
    [selector, expected],
    { timeout: WAIT },
  );
}

const value = (p, selector) => p.page.inputValue(selector);
const text = (p, selector) => p.page.locator(selector).innerText();
const toasts = (p) => p.page.$$eval(".toast", (els) => els.map((e) => ({ event: e.dataset.event ?? null, text: e.innerText })));

async function publish(event, companyId, data, userId) {
  const res = await fetch(`${base}/api/events`, {
    method: "POST",
    headers: { Authorization: `Bearer ${serviceToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ event, companyId, userId, data }),
  });
  if (!res.ok) throw new Error(`POST /api/events ${event}: ${res.status} ${await res.text()}`);
}

/** Two pages' screenshots side by side in one PNG (as two windows would be). */
async function sideBySide(a, b, file, clip) {
  const [left, right] = await Promise.all([a.page.screenshot({ clip }), b.page.screenshot({ clip })]);
  const page = await browser.newPage({ viewport: { width: 2 * clip.width + 36, height: clip.height + 24 } });
  const img = (buf) => `<img src="data:image/png;base64,${buf.toString("base64")}">`;
  await page.setContent(
    `<body style="margin:0;padding:12px;background:#3b4252;display:flex;gap:12px">${img(left)}${img(right)}</body>`,
  );
  await page.screenshot({ path: join(shots, file) });
  await page.close();
}

async function run() {
  at("sign in");
  const ann = await person("Ann Builder", "ann", "acme");
  const bob = await person("Bob Foreman", "bob", "acme");
  const cleo = await person("Cleo Surveyor", "cleo", "globex");

  at("presence");
  await ann.page.waitForSelector('#online [data-user-id="bob"]', { timeout: WAIT });
  out({ check: "presence", ann: await ann.page.$$eval("#online li", (l) => l.map((e) => e.dataset.userId)) });

  // -- live editing of a merge document ------------------------------------------------------
  at("open the merge document");
  await openDocument(ann, "rfi-7", "merge");
  await bob.page.click("#refresh-docs");
  await bob.page.click('#doc-list [data-document-id="rfi-7"]');
  await waitSaved(bob);

  at("Ann types, Bob sees it");
  const title = "RFI 7 – Level 3 slab pour sequence";
  const notes = "Pour starts at grid line C.\nPump truck booked for 7:00.";
  const typingSeen = bob.page.waitForFunction(
    () => document.querySelector("#typing")?.textContent?.includes("Ann Builder"),
    null,
    { timeout: WAIT },
  );
  await ann.page.click("#field-title");
  await ann.page.keyboard.type(title, { delay: 5 });
  await ann.page.click("#field-notes");
  await ann.page.keyboard.type(notes, { delay: 5 });
  await typingSeen;
  await ann.page.selectOption("#field-status", "open");
  await waitValue(bob, "#field-title", title);
  await waitValue(bob, "#field-notes", notes);
  await waitValue(bob, "#field-status", "open");
  out({ check: "live", bobTitle: await value(bob, "#field-title"), bobNotes: await value(bob, "#field-notes") });

  at("both type at once, in different places");
  await bob.page.click("#field-notes");
  await bob.page.keyboard.press("Control+End");
  await ann.page.click("#field-notes");
  await ann.page.keyboard.press("Control+Home");
  await Promise.all([
    ann.page.keyboard.type("URGENT: ", { delay: 12 }),
    bob.page.keyboard.type("\nConcrete: C30/37.", { delay: 12 }),
  ]);
  await Promise.all([waitSaved(ann), waitSaved(bob)]);
  const both = `URGENT: ${notes}\nConcrete: C30/37.`;
  await waitValue(ann, "#field-notes", both);
  await waitValue(bob, "#field-notes", both);
  const caret = await ann.page.$eval("#field-notes", (e) => e.selectionStart);
  out({ check: "concurrent", notes: await value(ann, "#field-notes"), annCaret: caret });

  at("screenshot: the editor with two users");
  await bob.page.click("#field-notes");
  await bob.page.keyboard.type(" Slump 120 mm.", { delay: 30 });
  await ann.page.waitForFunction(() => document.querySelector("#typing")?.textContent?.includes("Bob"), null, { timeout: WAIT });
  await Promise.all([waitSaved(ann), waitSaved(bob)]);
  await sideBySide(ann, bob, "editor-two-users.png", { x: 0, y: 0, width: 900, height: 720 });

  // -- another company sees nothing ----------------------------------------------------------
  at("Cleo (another company)");
  await cleo.page.click("#refresh-docs");
  const cleoDocs = await cleo.page.$$eval("#doc-list [data-document-id]", (l) => l.map((e) => e.dataset.documentId));
  await cleo.page.goto(`${base}/demo#doc=rfi-7`);
  await cleo.page.waitForSelector('#conn[data-state="online"]', { timeout: WAIT });
  await cleo.page.waitForFunction(() => document.querySelector("#doc-error")?.textContent?.includes("another company"), null, { timeout: WAIT });
  out({ check: "isolation", cleoDocs, cleoError: await text(cleo, "#doc-error"), cleoFormHidden: await cleo.page.$eval("#doc-form", (e) => e.hidden) });

  // -- ERP events as toasts ------------------------------------------------------------------
  at("ERP events");
  await publish("invoice:paid", "acme", { id: "inv-1", invoiceNumber: "INV-2024-001", amount: 12500, paidAt: "2024-01-15T10:30:00.000Z", paidBy: "client-9" });
  await publish("notification:new", "acme", { id: "n-1", title: "Inspection booked", message: "Level 3 rebar inspection on Tuesday", type: "info", userId: "ann", createdAt: "2024-01-15T10:30:00.000Z" });
  await ann.page.waitForSelector('.toast[data-event="notification:new"]', { timeout: WAIT });
  await ann.page.waitForSelector('.toast[data-event="invoice:paid"]', { timeout: WAIT });
  await bob.page.waitForSelector('.toast[data-event="invoice:paid"]', { timeout: WAIT });
  out({ check: "toasts", ann: await toasts(ann), bob: await toasts(bob) });

  // -- a manual conflict ---------------------------------------------------------------------
  at("open the manual document");
  await openDocument(ann, "punch-12", "manual");
  await bob.page.click("#refresh-docs");
  await bob.page.click('#doc-list [data-document-id="punch-12"]');
  await waitSaved(bob);

  at("Bob goes offline, both edit the title");
  await bob.page.click("#offline-toggle");
  await bob.page.waitForSelector('#conn[data-state="offline"]', { timeout: WAIT });
  await ann.page.fill("#field-title", "Fix handrail on stair B");
  await waitSaved(ann);
  await bob.page.fill("#field-title", "Replace handrail on stair B");
  await bob.page.fill("#field-notes", "Welds cracked at landing 2.");
  await bob.page.waitForSelector('#save-state[data-state="offline"]', { timeout: WAIT });

  at("Bob comes back: the conflict dialog opens in both");
  await bob.page.click("#offline-toggle");
  await Promise.all([
    ann.page.waitForSelector("#conflict-dialog[open]", { timeout: WAIT }),
    bob.page.waitForSelector("#conflict-dialog[open]", { timeout: WAIT }),
  ]);
  await bob.page.waitForSelector('#conflict-dialog[data-mine="true"]', { timeout: WAIT });
  const dialog = async (p) => ({
    mine: await p.page.$eval("#conflict-dialog", (e) => e.dataset.mine),
    conflictId: await p.page.$eval("#conflict-dialog", (e) => e.dataset.conflictId),
    summary: await text(p, "#conflict-summary"),
    original: await p.page.$eval('#conflict-compare .original[data-field="title"]', (e) => e.textContent),
    incoming: await p.page.$eval('#conflict-compare .incoming[data-field="title"]', (e) => e.textContent),
    conflicted: await p.page.$$eval("#conflict-compare .field.conflicted", (l) => l.map((e) => e.textContent)),
    buttons: await p.page.$$eval("#conflict-actions button", (l) => l.map((e) => e.textContent)),
  });
  out({ check: "conflict", ann: await dialog(ann), bob: await dialog(bob) });
  await sideBySide(ann, bob, "conflict-dialog.png", { x: 0, y: 0, width: 900, height: 720 });

  at("Ann keeps Bob's version: both dialogs close");
  await ann.page.click("#keep-theirs");
  await Promise.all([
    ann.page.waitForSelector("#conflict-dialog:not([open])", { state: "attached", timeout: WAIT }),
    bob.page.waitForSelector("#conflict-dialog:not([open])", { state: "attached", timeout: WAIT }),
  ]);
  await waitValue(ann, "#field-title", "Replace handrail on stair B");
  await waitValue(bob, "#field-title", "Replace handrail on stair B");
  await Promise.all([waitSaved(ann), waitSaved(bob)]);
  out({
    check: "resolved",
    ann: { title: await value(ann, "#field-title"), notes: await value(ann, "#field-notes"), version: await ann.page.$eval("#doc-form", (e) => e.dataset.version) },
    bob: { title: await value(bob, "#field-title"), notes: await value(bob, "#field-notes"), version: await bob.page.$eval("#doc-form", (e) => e.dataset.version) },
    annToasts: await toasts(ann),
  });

  at("a second conflict, settled with Edit…");
  await ann.page.click("#offline-toggle");
  await ann.page.waitForSelector('#conn[data-state="offline"]', { timeout: WAIT });
  await bob.page.fill("#field-title", "Replace handrail, stair B (urgent)");
  await waitSaved(bob);
  await ann.page.fill("#field-title", "Handrail stair B: order parts");
  await ann.page.click("#offline-toggle");
  await bob.page.waitForSelector("#conflict-dialog[open]", { timeout: WAIT });
  await ann.page.waitForSelector('#conflict-dialog[open][data-mine="true"]', { timeout: WAIT });
  await ann.page.click("#edit-resolution");
  await ann.page.fill('#conflict-edit [name="title"]', "Replace handrail, stair B: parts ordered");
  await ann.page.click("#save-resolution");
  await waitValue(bob, "#field-title", "Replace handrail, stair B: parts ordered");
  await waitValue(ann, "#field-title", "Replace handrail, stair B: parts ordered");
  await bob.page.waitForSelector("#conflict-dialog:not([open])", { state: "attached", timeout: WAIT });
  out({ check: "edited", title: await value(bob, "#field-title") });

  // -- Cleo heard nothing of it --------------------------------------------------------------
  at("Cleo saw nothing");
  await cleo.page.click("#refresh-docs");
  out({
    check: "cleo",
    toasts: await toasts(cleo),
    typing: await text(cleo, "#typing"),
    online: await cleo.page.$$eval("#online li", (l) => l.map((e) => e.dataset.userId)),
    docs: await cleo.page.$$eval("#doc-list [data-document-id]", (l) => l.map((e) => e.dataset.documentId)),
    dialogOpen: await cleo.page.$eval("#conflict-dialog", (e) => e.open),
  });
  out({ check: "errors", ann: ann.errors, bob: bob.errors, cleo: cleo.errors });
}

const people = [];
try {
  await run();
} catch (err) {
  console.error(`step "${step}" failed: ${err.stack || err}`);
  for (const p of people) {
    const form = await p.page
      .evaluate(() => ({
        title: document.querySelector("#field-title")?.value,
        notes: document.querySelector("#field-notes")?.value,
        state: document.querySelector("#doc-form")?.dataset.state,
        version: document.querySelector("#doc-form")?.dataset.version,
      }))
      .catch(() => null);
    console.error(`${p.user}: form ${JSON.stringify(form)} errors ${JSON.stringify(p.errors)}`);
    await p.page.screenshot({ path: join(shots, `failed-${p.user}.png`) }).catch(() => undefined);
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
