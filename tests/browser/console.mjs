// Walks the DIBOP console in real Chromium as an admin would, checks each
// page with axe-core, and (with a third argument) saves a screenshot of
// each page at 1280x800 for docs/console.md.
//
//   node tests/browser/console.mjs <base-url> <dev-credentials.json> [screenshot-dir]
//
// Needs playwright-core and axe-core (npm; scripts/test installs them under
// target/test-deps, reached through NODE_PATH) and Debian's chromium.
// Prints one JSON line per page and exits non-zero on the first failure.
import { createRequire } from "node:module";
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(process.env.NODE_PATH ? join(process.env.NODE_PATH, "x.js") : import.meta.url);
const { chromium } = require("playwright-core");
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const [base, credentialsPath, shots] = process.argv.slice(2);
const creds = JSON.parse(readFileSync(credentialsPath, "utf8"));
const admin = creds.enterprise_admin;
if (shots) mkdirSync(shots, { recursive: true });

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
const cspViolations = [];
page.on("console", (m) => {
  if (m.type() === "error" && /Content Security Policy/.test(m.text())) cspViolations.push(m.text());
});

async function check(name, path) {
  const response = await page.goto(base + path);
  if (!response || response.status() !== 200) fail(`${path}: status ${response && response.status()}`);
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  console.log(JSON.stringify({ page: name, path, violations: result.violations.map((v) => `${v.impact}:${v.id}`) }));
  if (serious.length) fail(`${path}: ${serious.map((v) => `${v.id} (${v.nodes.map((n) => n.target).join(", ")})`).join("; ")}`);
  if (shots) await page.screenshot({ path: join(shots, `${name}.png`) });
}

// Sign in as a person would: the form, then the dashboard.
await page.goto(base + "/");
if (!page.url().includes("/sign-in")) fail("not sent to the sign-in page");
await check("sign-in", "/sign-in");
await page.fill("#email", admin.email);
await page.fill("#password", "not the password");
await page.click("button[type=submit]");
if (!(await page.textContent(".alert-error")).includes("wrong")) fail("a wrong password was not reported");
await page.fill("#password", admin.password);
await page.click("button[type=submit]");
await page.waitForURL(base + "/");

await check("dashboard", "/");
const agents = await page.textContent(".tile:nth-child(2) .figure");
if (agents.trim() !== "1") fail(`the dashboard shows ${agents} agents online, not 1`);

await check("integrations", "/integrations");
await page.fill("#q", "DMS");
await page.press("#q", "Enter");
await page.waitForURL(/q=DMS/);
const cards = await page.locator(".connector-card").count();
if (cards < 1) fail("searching for DMS found no integration");
await page.locator(".connector-card").first().click();
await page.waitForURL(/\/integrations\/cnr_/);
await check("integration", new URL(page.url()).pathname);

await check("connections", "/connections");
if (!(await page.textContent("table.list")).includes("Demo DMS")) fail("My Connections lacks Demo DMS");

await check("relays", "/relays");
if (!(await page.textContent("table.list")).includes("online")) fail("the demo agent is not online on Relays");
page.once("dialog", (d) => d.accept());
await page.click("text=Add a relay");
await page.waitForSelector("#install-command");
const command = await page.textContent("#install-command");
if (!command.startsWith("dibop-agent enroll '")) fail(`no install command: ${command}`);
if (!(await page.textContent(".toasts")).includes("Enrollment token created")) fail("no success toast");
if (shots) await page.screenshot({ path: join(shots, "relays-add.png") });

// Revoke the demo agent: a confirm dialog first, then the agent is cut off.
await page.goto(base + "/relays");
await page.click("button:has-text('Revoke')");
await page.waitForSelector("dialog#confirm[open]");
if (shots) await page.screenshot({ path: join(shots, "relays-revoke.png") });
await page.focus("dialog#confirm [data-confirm-ok]");
await page.keyboard.press("Enter");
await page.waitForURL(/done=agent_revoked/);
if (!(await page.textContent("table.list")).includes("revoked")) fail("the agent is not shown revoked");
if (!(await page.textContent(".toasts")).includes("Agent revoked")) fail("no toast after revoking");

await check("users", "/settings/users");
await check("audit", "/audit");

// Keyboard: the skip link is the first stop and moves to the content.
await page.keyboard.press("Tab");
if ((await page.evaluate(() => document.activeElement.className)) !== "skip") fail("the skip link is not the first tab stop");

// Sign out from the account menu.
await page.click(".whoami summary");
await page.click("text=Sign out");
await page.waitForURL(/\/sign-in\?signed_out=1/);
await page.goto(base + "/connections");
if (!page.url().includes("/sign-in")) fail("the console still opens after signing out");

if (cspViolations.length) fail(`CSP violations: ${cspViolations.join(" | ")}`);
await browser.close();
console.log(JSON.stringify({ ok: true }));
