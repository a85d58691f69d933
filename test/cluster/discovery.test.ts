// Issue 12, defects 5 and 9b: discovery errors say what is wrong (missing file, empty file,
// 1 of 4 servers listed) with the file name and how long connect() waited, in the original's
// words where they apply; a log line comes every few seconds while waiting; a file with more
// lines than its count warns, naming the ignored entries and the ones used.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient, TimeoutError } from '../../src/index.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

let dir: string;
let cluster: TestCluster;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dfaiss-disc12-'));
  cluster = await startCluster(2);
});

after(async () => {
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** connect() with a short deadline and a fast log; returns the error and the log lines. */
async function failedConnect(path: string): Promise<{ err: TimeoutError; lines: string[] }> {
  const lines: string[] = [];
  const started = Date.now();
  let caught: unknown;
  try {
    await IndexClient.connect(path, { discoveryTimeoutMs: 1300, discoveryLogIntervalMs: 300, log: (m) => lines.push(m) });
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof TimeoutError, `a TimeoutError, got ${String(caught)}`);
  assert.ok(Date.now() - started >= 1300, 'it waited the whole deadline');
  assert.ok(lines.length >= 2 && lines.length <= 6, `a log line every ~0.3 s while waiting (${lines.length})`);
  return { err: caught, lines };
}

describe('discovery errors (issue 12, defects 5 and 9b)', () => {
  it('a missing file: named, said to be missing, and how long it waited', async () => {
    const path = join(dir, 'missing.txt');
    const { err, lines } = await failedConnect(path);
    assert.match(err.message, new RegExp(`^discovery file ${path} does not exist\\. Timed out after waiting 1\\.\\d seconds: start the servers with --discovery-config`));
    assert.doesNotMatch(err.message, /-1 != 0/);
    for (const l of lines) assert.match(l, new RegExp(`^still waiting for servers \\(\\d+ s of 1 s\\): discovery file ${path} does not exist`));
  });

  it('an empty file', async () => {
    const path = join(dir, 'empty.txt');
    writeFileSync(path, '');
    const { err, lines } = await failedConnect(path);
    assert.match(err.message, new RegExp(`^discovery file ${path} is empty\\. Timed out after waiting 1\\.\\d seconds: its first line must be the number of servers`));
    assert.match(lines[0]!, /is empty/);
  });

  it('1 of 4 servers listed: the original words first, then which are listed', async () => {
    const path = join(dir, 'partial.txt');
    writeFileSync(path, `4\n127.0.0.1,${cluster.servers[0]!.port}\n`);
    const { err, lines } = await failedConnect(path);
    assert.match(err.message, new RegExp(`^4 != 1 in server list ${path}\\. Timed out after waiting 1\\.\\d seconds: it lists 1 of 4 servers \\(127\\.0\\.0\\.1,${cluster.servers[0]!.port}\\)`));
    assert.match(lines[0]!, /4 != 1 in server list .* it lists 1 of 4 servers/);
  });

  it('more lines than the count: a warning naming the ignored entries and the used ones', async () => {
    const path = join(dir, 'extra.txt');
    const [a, b] = cluster.servers.map((s) => `127.0.0.1,${s.port}`);
    writeFileSync(path, `2\n${a}\n${b}\n127.0.0.1,9\n`);
    const warnings: Array<Error & { code?: string }> = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const client = await IndexClient.connect(path, { discoveryTimeoutMs: 5000 });
      assert.equal(client.numServers, 2);
      assert.equal((await client.status()).length, 2, 'the first two (live) servers are used');
      await client.close();
      await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
    } finally {
      process.off('warning', onWarning);
    }
    const w = warnings.find((x) => x.code === 'DFAISS_DISCOVERY_EXTRA');
    assert.ok(w, `a DFAISS_DISCOVERY_EXTRA warning (got ${warnings.map((x) => x.message).join('; ')})`);
    assert.match(w.message, new RegExp(`lists 3 servers but its first line says 2: using the first 2 \\(${a}, ${b}\\) and ignoring 127\\.0\\.0\\.1,9`));
  });
});
