// `dfaiss dashboard` in a real headless browser (Debian's chromium driven by puppeteer-core)
// against real server processes: the page shows the servers and indexes, follows a server
// being killed, and a search from the box returns hits with their metadata.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { IndexClient } from '../../src/index.js';
import { CLI, startCluster, type TestCluster } from '../helpers/cluster.js';
import { CHILD_ENV, eventLog } from '../helpers/cli.js';

const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p): p is string => !!p && existsSync(p));
// scripts/setup.sh installs chromium; in CI a missing browser is a failure, never a skip.
if (!CHROMIUM && process.env.CI === 'true') throw new Error('chromium is missing (scripts/setup.sh installs it with apt-get): the dashboard test cannot run');
const skip = CHROMIUM ? false : 'chromium is not installed: run scripts/setup.sh as root';

const LABELS = ['T-shirt', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Boot'];
const DIM = 16;

let cluster: TestCluster;
let client: IndexClient;
let dashboard: ChildProcess;
let url: string;
let browser: Browser;
let page: Page;

before(async () => {
  if (skip) return;
  cluster = await startCluster(3, { serverArgs: ['--metrics-port', '0'] });
  client = await IndexClient.connect(cluster.discovery, { discoveryTimeoutMs: 5000 });
  await client.createIndex('products', { indexBuilderType: 'flat', dim: DIM, metric: 'l2' });
  for (let b = 0; b < 6; b++) {
    const vectors = Float32Array.from({ length: 100 * DIM }, (_, i) => Math.abs(Math.sin(b * 100 * DIM + i)));
    await client.addIndexData('products', vectors, Array.from({ length: 100 }, (_, i) => ({ sku: `sku-${b * 100 + i}`, label: LABELS[(b * 100 + i) % 10] })));
  }
  await client.syncTrain('products');
  // Still buffering for its shared training: the page shows its progress.
  await client.createIndex('reviews', { indexBuilderType: 'ivf_simple', dim: DIM, metric: 'dot', centroids: 8, trainNum: 2000 });
  await client.addIndexData('reviews', Float32Array.from({ length: 300 * DIM }, (_, i) => Math.cos(i)), Array.from({ length: 300 }, (_, i) => ({ review: i })));
  for (let i = 0; i < 20; i++) await client.search('products', Float32Array.from({ length: DIM }, (_, j) => (i + j) / 40), 5);

  dashboard = spawn(process.execPath, [CLI, 'dashboard', '--discover', cluster.discovery, '--port', '0', '--interval', '0.3'], { stdio: ['ignore', 'pipe', 'pipe'], env: CHILD_ENV });
  const ev = await eventLog(dashboard).wait<{ url: string }>('listening', undefined, 20_000);
  url = ev.url;
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  page = await browser.newPage();
  await page.setViewport({ width: 1360, height: 860 });
});

after(async () => {
  await browser?.close();
  if (dashboard && dashboard.exitCode === null) {
    const gone = new Promise((r) => dashboard.once('exit', r));
    process.kill(dashboard.pid!, 'SIGTERM');
    await gone;
  }
  await client?.close();
  await cluster?.stop();
});

/** Waits (bounded) until fn, evaluated in the page, returns true. */
async function until(fn: string, what: string, timeoutMs = 10_000): Promise<void> {
  await page.waitForFunction(fn, { timeout: timeoutMs, polling: 100 }).catch((err: Error) => {
    throw new Error(`${what}: ${err.message}`);
  });
}

test('the page loads with no external resource and shows every server and index of the live cluster', { skip }, async () => {
  const external: string[] = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(url)) external.push(r.url());
  });
  await page.goto(url, { waitUntil: 'load' });
  assert.equal(await page.title(), 'dfaiss dashboard');
  await until('document.querySelectorAll("#servers tr[data-up=true]").length === 3', 'three servers up');
  const rows = await page.$$eval('#servers tr[data-address]', (trs) => trs.map((tr) => tr.getAttribute('data-address')));
  assert.deepEqual(rows.sort(), cluster.servers.map((s) => `127.0.0.1:${s.port}`).sort());
  await until('document.querySelector("[data-index=products]")?.getAttribute("data-ntotal") === "600"', 'products: ntotal 600');
  const products = await page.$eval('[data-index=products]', (el) => ({ state: el.getAttribute('data-state'), shards: el.querySelectorAll('tbody tr').length, text: el.textContent }));
  assert.equal(products.state, 'TRAINED');
  assert.equal(products.shards, 3);
  const reviews = await page.$eval('[data-index=reviews]', (el) => ({ state: el.getAttribute('data-state'), text: el.textContent ?? '' }));
  assert.equal(reviews.state, 'NOT_TRAINED');
  assert.match(reviews.text, /buffering for training: 300 of 2000/);
  // Memory, connections and metrics ports come from the servers' status.
  // (Page-side code as strings: the tests are compiled without the DOM typings.)
  const first = (await page.evaluate('Array.from(document.querySelectorAll("#servers tr[data-address]")[0].children).map((td) => td.textContent)')) as string[];
  assert.match(first[3]!, /MiB/);
  assert.match(first[9]!, /^:\d+$/);
  assert.deepEqual(external, [], 'no CDN or other outside request');
});

test('a search from the box returns hits with their metadata; "similar" searches with a hit\'s vector', { skip }, async () => {
  await page.select('#search-index', 'products');
  await page.$eval('#search-k', (el) => el.setAttribute('value', '5'));
  await page.click('#search-random');
  await until('document.querySelectorAll("#search-results tr[data-hit]").length === 5', 'five hits');
  const hits = (await page.evaluate('Array.from(document.querySelectorAll("#search-results tr[data-hit] td.meta")).map((td) => JSON.parse(td.textContent))')) as Array<{ sku: string; label: string }>;
  for (const h of hits) {
    assert.match(h.sku, /^sku-\d+$/);
    assert.ok(LABELS.includes(h.label));
  }
  assert.match(await page.$eval('#search-status', (el) => el.textContent ?? ''), /^5 hits from 3 servers in [\d.]+ ms$/);
  // "similar" on the third hit: its own vector is the nearest (l2 distance 0).
  await page.click('#search-results button[data-similar="2"]');
  await until(`document.querySelector("#search-results tr[data-hit='0'] td.meta")?.textContent === ${JSON.stringify(JSON.stringify(hits[2]))}`, 'the hit itself comes first');
  assert.equal(await page.$eval("#search-results tr[data-hit='0'] td.num", (td) => td.textContent), '0');
});

test('QPS and search latency follow the load on the servers', { skip }, async () => {
  // Searches for ~1.5 s while the dashboard polls every 0.3 s.
  const end = Date.now() + 1500;
  let n = 0;
  const load = (async () => {
    while (Date.now() < end) {
      await client.search('products', Float32Array.from({ length: DIM }, (_, j) => (n + j) / 50), 5);
      n++;
    }
  })();
  await until(
    'Array.from(document.querySelectorAll("#servers tr[data-up=true]")).every((tr) => parseFloat(tr.children[6].textContent) > 1 && / ms$/.test(tr.children[7].textContent))',
    'every server shows QPS > 1 and a search latency',
  );
  await load;
  assert.ok(n > 10, `searches run: ${n}`);
});

test('a killed server shows as DOWN within a few polls, and searches report it as missing', { skip }, async () => {
  const victim = cluster.servers[2]!;
  await cluster.kill(2);
  await until(`document.querySelector('#servers tr[data-address="127.0.0.1:${victim.port}"]')?.getAttribute('data-up') === 'false'`, 'the killed server is down');
  assert.match(await page.$eval('#summary', (el) => el.textContent ?? ''), /^2\/3 servers up/);
  assert.equal(await page.$eval(`#servers tr[data-address="127.0.0.1:${victim.port}"] td`, (td) => td.textContent), '2', 'a down server keeps its rank');
  assert.equal(await page.$$eval('#servers tr[data-up=true]', (trs) => trs.length), 2);
  await until('document.querySelector("[data-index=products]")?.querySelectorAll("tbody tr").length === 2', 'only the live shards are listed');
  await page.click('#search-random');
  await until('/PARTIAL: no answer from 127\\.0\\.0\\.1:' + victim.port + '/.test(document.querySelector("#search-status").textContent)', 'the search names the missing server');
  assert.equal(await page.$$eval('#search-results tr[data-hit]', (trs) => trs.length), 5);
  // Some load for the screenshot's QPS and latency columns.
  const end = Date.now() + 1000;
  while (Date.now() < end) await client.search('products', Float32Array.from({ length: DIM }, (_, j) => j / 30), 5, { allowPartial: true });
  await until('Array.from(document.querySelectorAll("#servers tr[data-up=true]")).every((tr) => / ms$/.test(tr.children[7].textContent))', 'latency shown');
  // The screenshot in the README: docs/dashboard.png (written when DFAISS_SCREENSHOT=1).
  const shot = await page.screenshot({ fullPage: true, type: 'png' });
  assert.ok(shot.length > 10_000 && shot.subarray(1, 4).toString() === 'PNG');
  if (process.env.DFAISS_SCREENSHOT === '1') {
    const docs = new URL('../../docs/', import.meta.url).pathname;
    mkdirSync(docs, { recursive: true });
    await page.screenshot({ path: join(docs, 'dashboard.png'), fullPage: true });
    assert.ok(readFileSync(join(docs, 'dashboard.png')).length > 10_000);
  }
});
