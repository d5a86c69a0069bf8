// The web console in a real browser: Debian's Chromium driven by playwright-core, against
// the real berth binary (BERTH_BIN) on a fresh data dir. Run by scripts/test:
//   NODE_PATH=<dir with playwright-core> BERTH_BIN=... node --test tests/console/
// With BERTH_CONSOLE_SCREENSHOTS=DIR it also saves the screenshots shown in the README.
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { spawn, execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");

const BIN = process.env.BERTH_BIN;
const CHROMIUM = process.env.BERTH_CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.BERTH_CONSOLE_SCREENSHOTS;

let server, base, dataDir, admin, browser, page;

/** Starts `berth serve` on free ports; resolves with its base URL once it listens. */
function startServer() {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-console-"));
  server = spawn(BIN, ["serve", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--stomp-addr", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  server.stderr.on("data", (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`berth did not start:\n${stderr}`)), 30_000);
    let out = "";
    server.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/^listening http=(\S+)/m);
      if (m) {
        clearTimeout(timer);
        resolve(`http://${m[1]}`);
      }
    });
    server.on("exit", (code) => reject(new Error(`berth exited ${code}:\n${stderr}`)));
  });
}

/** The admin CLI, as a user would run it next to the console. */
function cli(...args) {
  return execFileSync(BIN, [...args, "--data-dir", dataDir, "--endpoint", base], { encoding: "utf8" });
}

async function shot(name) {
  if (SHOTS) {
    fs.mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  }
}

const flash = () => page.locator(".flash").innerText();
const bodies = () => page.locator("table.messages pre.body").allInnerTexts();

before(async () => {
  assert.ok(BIN, "BERTH_BIN must name the berth binary");
  base = await startServer();
  admin = JSON.parse(fs.readFileSync(path.join(dataDir, "credentials", "admin.json"), "utf8"));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Chromium must not reach out to the (closed) network on its own.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  page = await (await browser.newContext({ viewport: { width: 1200, height: 900 } })).newPage();
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

test("a wrong passcode is refused with a message, the right one logs in", async () => {
  await page.goto(base + "/");
  assert.match(page.url(), /\/console\/login$/, "the root leads to the login page");
  await page.fill("input[name=login]", admin.stompLogin);
  await page.fill("input[name=passcode]", "not-the-passcode");
  await page.click("button:has-text('Log in')");
  assert.match(await page.getByRole("alert").innerText(), /Login failed/);
  await shot("login");
  await page.fill("input[name=login]", admin.stompLogin);
  await page.fill("input[name=passcode]", admin.stompPasscode);
  await page.click("button:has-text('Log in')");
  await page.getByRole("heading", { name: "Queues" }).waitFor();
  assert.match(await page.locator("header").innerText(), /default\/admin/);
});

test("a bad setting is shown to the user, a good queue is created", async () => {
  await page.fill("input[name=name]", "orders");
  await page.fill("input[name=visibility]", "999999");
  await page.click("button:has-text('Create')");
  assert.match(await page.getByRole("alert").innerText(), /visibilityInSeconds/);
  await page.fill("input[name=name]", "orders");
  await page.fill("input[name=dead_letter_after]", "1");
  await page.click("button:has-text('Create')");
  await page.getByRole("heading", { name: "orders" }).waitFor();
  assert.equal(await flash(), "Created queue orders");
});

test("messages sent from the console are peeked with their bodies, markup shown as text", async () => {
  for (const [body, channel] of [["hello console", "c1"], ["<script>window.pwned = 1</script>", ""]]) {
    await page.fill("textarea[name=content]", body);
    await page.fill("input[name=channel]", channel);
    await page.click("button:has-text('Send')");
    assert.match(await flash(), /^Sent message \d+$/);
  }
  assert.deepEqual(await bodies(), ["hello console", "<script>window.pwned = 1</script>"]);
  assert.equal(await page.evaluate(() => window.pwned), undefined, "a body must never run as script");
  assert.match(await page.locator("ul.channels").innerText(), /c1/);
  assert.equal(await page.locator("#charts svg[aria-label=Rates]").count(), 1);
  // Looking leased nothing: the CLI still gets the first message, first delivery.
  const got = JSON.parse(cli("queue", "get-messages", "orders", "--channel", "c1", "--visibility", "0", "--json"));
  assert.deepEqual(got.messages.map((m) => [m.content, m.deliveryCount]), [["hello console", 1]]);
  if (SHOTS) {
    // Some traffic for the charts in the README's screenshot, over a few samples (5 s each).
    const queue = new URL(page.url()).pathname.split("/").pop();
    for (let round = 1; round <= 6; round++) {
      cli("queue", "put", queue, "--channel", "load", ...Array.from({ length: 8 * round }, (_, i) => `load ${round}.${i}`));
      cli("queue", "get-messages", queue, "--channel", "load", "--limit", String(3 * round), "--delete");
      await new Promise((resolve) => setTimeout(resolve, 5_500));
    }
    await page.reload();
    await shot("queue");
    for (let drained = 0; drained < 20; drained++) {
      const left = JSON.parse(cli("queue", "get-messages", queue, "--channel", "load", "--limit", "20", "--delete", "--json"));
      if (left.messages.length === 0) break;
    }
  }
});

test("the DLQ is peeked and redriven, then the queue purged", async () => {
  // Leased for 0 s with one delivery allowed: it is in the DLQ now.
  await page.reload();
  assert.deepEqual(await bodies(), ["<script>window.pwned = 1</script>"]);
  await page.click("nav.tabs a:has-text('Dead letter queue')");
  assert.deepEqual(await bodies(), ["hello console"]);
  await page.click("button:has-text('Redrive the DLQ')");
  assert.equal(await flash(), "Moved 1 message back from the DLQ");
  assert.equal((await bodies()).length, 2);
  await page.selectOption("select[name=target]", "BOTH");
  await page.click("button:has-text('Purge')");
  assert.equal(await flash(), "Purged (BOTH)");
  assert.deepEqual(await bodies(), []);
});

test("a form without the session's CSRF token changes nothing", async () => {
  await page.fill("textarea[name=content]", "kept");
  await page.click("button:has-text('Send')");
  const queuePath = new URL(page.url()).pathname;
  const forged = await page.request.post(base + queuePath + "/purge", { form: { target: "BOTH", csrf: "forged" } });
  assert.match(forged.url(), /\/console\/login$/);
  await page.reload();
  assert.deepEqual(await bodies(), ["kept"]);
});

test("settings are saved, the queue list shows counts, and the queue is deleted", async () => {
  await page.fill("input[name=visibility]", "45");
  await page.click("button:has-text('Save')");
  assert.equal(await flash(), "Settings saved");
  assert.equal(await page.inputValue("input[name=visibility]"), "45");
  await page.click("a:has-text('← Queues')");
  const row = page.locator("tr", { has: page.locator("a:has-text('orders')") });
  assert.deepEqual((await row.locator("td").allInnerTexts()).slice(0, 4), ["orders", "ACTIVE", "1", "0"]);
  await shot("queues");
  await row.locator("a").click();
  await page.click("button:has-text('Delete queue')");
  // Unticked, the browser does not send the form: still here, nothing said.
  await page.getByRole("heading", { name: "orders" }).waitFor();
  assert.equal(await page.locator(".flash").count(), 0);
  await page.check("input[name=confirm]");
  await page.click("button:has-text('Delete queue')");
  assert.match(await flash(), /^Deleted queue ocid1\.queue\./);
  assert.match(await page.locator("tbody").innerText(), /No queues yet/);
});

test("a queue with consumer groups shows each group's counts and messages, and reads one group", async () => {
  await page.goto(base + "/console");
  await page.fill("input[name=name]", "fanout");
  await page.check("input[name=consumer_groups]");
  await page.click("button:has-text('Create')");
  await page.getByRole("heading", { name: "fanout" }).waitFor();
  await page.fill("input[aria-label='Group name']", "audit");
  await page.fill("input[aria-label='Group filter']", ":a = ");
  await page.click("button:has-text('Add group')");
  assert.match(await page.getByRole("alert").innerText(), /filter: at character/);
  await page.fill("input[aria-label='Group name']", "audit");
  await page.fill("input[aria-label='Group filter']", "");
  await page.click("button:has-text('Add group')");
  assert.equal(await flash(), "Created consumer group audit");
  await page.fill("textarea[name=content]", "to both");
  await page.click("button:has-text('Send')");
  // Name, state, filter and visible messages of each group.
  const rowsNow = async () => {
    const rows = [];
    for (const row of await page.locator("table.groups tbody tr").all()) rows.push((await row.locator("td").allInnerTexts()).slice(0, 4));
    return rows;
  };
  assert.deepEqual(await rowsNow(), [["Primary Consumer Group", "ACTIVE", "", "1"], ["audit", "ACTIVE", "", "1"]]);
  // The CLI consumes the audit group's copy; the primary group keeps its own.
  const got = JSON.parse(cli("queue", "get-messages", "fanout", "--consumer-group", "audit", "--delete", "--json"));
  assert.deepEqual(got.messages.map((m) => m.content), ["to both"]);
  await page.reload();
  assert.deepEqual((await rowsNow()).map((r) => r[3]), ["1", "0"]);
  assert.deepEqual(await bodies(), ["to both"], "below: the primary group's messages");
  await page.click("table.groups a:has-text('audit')");
  assert.deepEqual(await bodies(), [], "the audit group's copy is consumed");
  assert.match(await page.locator("table.groups tr.current").innerText(), /audit/);
  await page.click("nav.tabs a:has-text('Dead letter queue')");
  assert.match(page.url(), /group=ocid1\.queueconsumergroup\./, "the tabs stay in the group");
  // A purge in the group empties that group only, and stays there.
  await page.fill("textarea[name=content]", "second");
  await page.click("button:has-text('Send')");
  await page.click("table.groups a:has-text('audit')");
  assert.deepEqual(await bodies(), ["second"]);
  await page.selectOption("select[name=target]", "BOTH");
  await page.click("button:has-text('Purge')");
  assert.equal(await flash(), "Purged (BOTH)");
  assert.match(page.url(), /group=ocid1\.queueconsumergroup\./);
  assert.deepEqual((await rowsNow()).map((r) => r[3]), ["2", "0"]);
  // A group that is not there leads back to the queue, said so.
  await page.goto(page.url().replace(/group=[^&]*/, "group=ocid1.queueconsumergroup.oc1..gone"));
  assert.equal(await flash(), "No such consumer group of this queue");
  assert.deepEqual(await bodies(), ["to both", "second"]);
});

test("logging out ends the session", async () => {
  await page.click("button:has-text('Log out')");
  assert.match(page.url(), /\/console\/login$/);
  await page.goto(base + "/console");
  assert.match(page.url(), /\/console\/login$/, "the old cookie no longer works");
});
