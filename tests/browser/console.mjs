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
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawn, execFileSync } from "node:child_process";

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
// No page may run script it did not ship: an alert means a name got through unescaped.
const alerts = [];
page.on("dialog", (d) => { if (d.type() === "alert") alerts.push(d.message()); });
page.on("console", (m) => {
  // Only the console's pages (the identity provider's are its own business).
  if (m.type() === "error" && /Content Security Policy/.test(m.text()) && page.url().startsWith(base)) cspViolations.push(m.text());
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
await page.locator(".connector-card", { hasText: "DMS Simulator" }).first().click();
await page.waitForURL(/\/integrations\/cnr_/);
await check("integration", new URL(page.url()).pathname);

// Connect a System: the form of the DMS connector, a wrong key first.
await page.click("a.btn-primary:has-text('Connect')");
await page.waitForURL(/\/connect$/);
await check("connect", new URL(page.url()).pathname);
// A laptop's 1024 px: nothing wider than the window.
await page.setViewportSize({ width: 1024, height: 768 });
const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
if (overflow > 0) fail(`Connect a System is ${overflow} px wider than a 1024 px window`);
if (shots) await page.screenshot({ path: join(shots, "connect-1024.png") });
await page.setViewportSize({ width: 1280, height: 800 });
await page.fill("#name", "Showroom DMS");
await page.fill("#cred-api_key", "not-the-key");
await page.fill("#base_url", creds.dms_url);
await page.check("input[name=mode][value=agent_group]");
await page.selectOption("#group_id", creds.agent_group_id);
await page.click("button:has-text('Test Connection')");
await page.waitForSelector("#test-result .alert-error");
const failure = await page.textContent("#test-result");
if (!failure.includes("Auth Failure")) fail(`a wrong key was not an Auth Failure: ${failure}`);
if (shots) await page.screenshot({ path: join(shots, "connect-auth-failure.png") });
// The right key: Success, with a toast; what was typed is still there.
await page.fill("#cred-api_key", creds.dms_api_key);
await page.click("button:has-text('Test Connection')");
await page.waitForSelector("#test-result .alert-ok");
if (!(await page.textContent(".toasts")).includes("Connection test succeeded")) fail("no success toast after the test");
if ((await page.inputValue("#name")) !== "Showroom DMS") fail("the form lost what was typed");
if (shots) await page.screenshot({ path: join(shots, "connect-success.png") });
// Save & Activate: in My Connections, healthy.
await page.click("button:has-text('Save & Activate')");
await page.waitForURL(/\/connections\?done=connection_activated/);
const row = page.locator("tr", { hasText: "Showroom DMS" });
if (!(await row.textContent()).includes("healthy")) fail(`the new connection is not healthy: ${await row.textContent()}`);
if (!(await page.textContent(".toasts")).includes("Connection active")) fail("no toast after Save & Activate");
await check("connections", "/connections");
if (!(await page.textContent("table.list")).includes("Demo DMS")) fail("My Connections lacks Demo DMS");

// The row's menu: deactivate (confirm dialog), then reactivate.
await page.click("summary[aria-label='Actions for Showroom DMS']");
if (shots) await page.screenshot({ path: join(shots, "connections-menu.png") });
await page.locator("tr", { hasText: "Showroom DMS" }).locator("button:has-text('Deactivate')").click();
await page.waitForSelector("dialog#confirm[open]");
if (!(await page.textContent("dialog#confirm")).includes("No active orchestration uses it")) fail("the dialog does not say who uses the connection");
await page.focus("dialog#confirm [data-confirm-ok]");
await page.keyboard.press("Enter");
await page.waitForURL(/done=connection_deactivated/);
if (!(await page.textContent(".page-head")).includes("inactive")) fail("the connection is not shown inactive");
const connectionPath = new URL(page.url()).pathname;
await page.click("button:has-text('Reactivate')");
await page.waitForURL(/done=connection_activated/);
await check("connection", connectionPath);

// Rotate its credentials on its page.
await page.click("summary:has-text('Rotate credentials')");
await page.fill("#rot-api_key", creds.dms_api_key);
await page.click("button:has-text('Replace credentials')");
await page.waitForURL(/done=credentials_rotated/);
if (!(await page.textContent(".toasts")).includes("Credentials replaced")) fail("no toast after rotating");

// Delete it: the dialog says what goes.
await page.click(".toolbar button:has-text('Delete')");
await page.waitForSelector("dialog#confirm[open]");
if (!(await page.textContent("dialog#confirm")).includes("sealed credentials")) fail("the delete dialog does not say what is removed");
await page.focus("dialog#confirm [data-confirm-ok]");
await page.keyboard.press("Enter");
await page.waitForURL(/done=connection_deleted/);
if ((await page.textContent("table.list")).includes("Showroom DMS")) fail("the deleted connection is still listed");

await check("relays", "/relays");
if (process.env.DIBOP_XSS_NAME && !(await page.textContent("main")).includes(process.env.DIBOP_XSS_NAME)) fail("the relay group named as markup is not shown as text");
if (!(await page.textContent("table.list")).includes("online")) fail("the demo agent is not online on Relays");
page.once("dialog", (d) => d.accept());
await page.click("text=Add a relay");
await page.waitForSelector("#install-command");
const command = await page.textContent("#install-command");
if (!command.startsWith("dibop-agent enroll '")) fail(`no install command: ${command}`);
if (!(await page.textContent(".toasts")).includes("Enrollment token created")) fail("no success toast");
if (shots) await page.screenshot({ path: join(shots, "relays-add.png") });

// Run the shown command at "the dealer site" (here: a scratch directory
// instead of /etc and /var/lib) and see a second agent come online.
let agent = null;
if (process.env.DIBOP_AGENT_BIN && process.env.DIBOP_WALK_DIR) {
  const token = command.match(/enroll '([^']+)'/)[1];
  const dir = join(process.env.DIBOP_WALK_DIR, "second-agent");
  execFileSync(process.env.DIBOP_AGENT_BIN, ["enroll", token, "--data-dir", dir], { stdio: "pipe" });
  const config = join(dir, "agent.toml");
  writeFileSync(config, "[policy]\nallow = [\"127.0.0.1\"]\n[tunnel]\nkeep_alive_secs = 1\nreconnect_initial_ms = 100\nreconnect_max_ms = 1000\n");
  agent = spawn(process.env.DIBOP_AGENT_BIN, ["run", "--data-dir", dir, "--config", config], { stdio: "ignore" });
  let online = 0;
  for (let i = 0; i < 60 && online < 2; i++) {
    await page.goto(base + "/relays");
    online = await page.locator("table.list .badge.ok", { hasText: "online" }).count();
    if (online < 2) await page.waitForTimeout(500);
  }
  if (online < 2) fail(`the agent enrolled with the shown command did not come online (${online} online)`);
  console.log(JSON.stringify({ second_agent_online: true }));
}

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
// Create an API token: shown once, with a copy button.
await page.click("summary:has-text('Create an API token')");
await page.fill("#token-name", "Reporting");
await page.selectOption("#token-role", "viewer");
await page.click("button:has-text('Create token')");
await page.waitForSelector("#shown-secret");
if (!(await page.textContent("#shown-secret")).startsWith("dibop_")) fail("the new token was not shown");
if (!(await page.textContent(".toasts")).includes("API token created")) fail("no toast after creating a token");
if (shots) await page.screenshot({ path: join(shots, "users-token.png"), fullPage: true });
await check("sso", "/settings/sso");
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

// Single sign-on: the email's domain leads to the enterprise's provider,
// whose own pages sign the person in; back in the console, signed in.
if (process.env.DIBOP_SSO_EMAIL) {
  const email = process.env.DIBOP_SSO_EMAIL;
  await page.goto(base + "/sign-in");
  await page.fill("#sso-email", email);
  await page.click("button:has-text('Sign in with single sign-on')");
  await page.waitForSelector("input[name=login]");
  await page.fill("input[name=login]", email);
  await page.fill("input[name=password]", "any password");
  await page.click("button[type=submit]");
  for (let i = 0; i < 5 && !page.url().startsWith(base); i++) {
    // The provider's consent page, if it asks.
    await page.waitForLoadState();
    if (page.url().startsWith(base)) break;
    const next = page.locator("button[type=submit]");
    if (await next.count()) await next.first().click();
    await page.waitForTimeout(300);
  }
  await page.waitForURL(base + "/");
  const who = await page.textContent(".whoami .who");
  if (!who.includes(email) || !who.includes("operator")) fail(`single sign-on signed in as ${who}`);
  console.log(JSON.stringify({ signed_in_with_sso: email }));
}

if (cspViolations.length) fail(`CSP violations: ${cspViolations.join(" | ")}`);
if (alerts.length) fail(`a page ran an alert: ${alerts.join(" | ")}`);
if (agent) agent.kill();
await browser.close();
console.log(JSON.stringify({ ok: true }));
