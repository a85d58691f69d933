// One `dfaiss server` process serving several ranks (issue 15, item 3): each rank has its own
// port, storage sub-folder and FAISS thread setting; a kill -9 of the process takes all its
// ranks down and a restart brings them all back with their data; a batch that had to move
// because that process died holding it is counted once (its revocation reaches the rank).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient, IndexState } from '../../src/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { RpcClient } from '../../src/protocol/index.js';
import { shardDir } from '../../src/server/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { runMovingClient } from '../helpers/mover.js';
import { runCli } from '../helpers/cli.js';

const dim = 8;
const ROWS = 10;
const data = new SyntheticDataset({ dim, seed: 33 });

async function until(what: string, cond: () => Promise<boolean>): Promise<void> {
  for (let i = 0; !(await cond()); i++) {
    assert.ok(i < 500, what);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('4 ranks in 2 processes: own ports, folders and threads; kill -9 of a process brings both its ranks back; a batch moved off it counts once', { timeout: 120_000 }, async () => {
  const cluster = await startCluster(4, { ranksPerProcess: 2 });
  try {
    const s = cluster.servers;
    assert.equal(s[0]!.proc, s[1]!.proc, 'ranks 0 and 1 share a process');
    assert.equal(s[2]!.proc, s[3]!.proc);
    assert.notEqual(s[0]!.proc.pid, s[2]!.proc.pid);
    assert.equal(new Set(s.map((x) => x.port)).size, 4, 'a port per rank');

    // Threads per rank: setting rank 0's leaves rank 1 (same process) as it was.
    const raw0 = await RpcClient.connect('127.0.0.1', s[0]!.port);
    assert.equal(raw0.server.rank, 0);
    await raw0.call('setOmpNumThreads', { threads: 2 });
    await raw0.close();
    const setup = await IndexClient.connect(cluster.discovery);
    const threads = new Map((await setup.status()).map((st) => [st.rank, st.threads]));
    assert.deepEqual([...threads].sort(([a], [b]) => a - b), [[0, 2], [1, 1], [2, 1], [3, 1]]);
    await setup.createIndex('mv', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
    await setup.close();
    for (let r = 0; r < 4; r++) assert.ok(existsSync(shardDir(cluster.saveDir, null, 'mv', r)), `rank ${r} has its own folder`);

    // The process of ranks 0-1 dies right after its first add is in a log, before replying.
    const ports = s.map((x) => x.port);
    await cluster.kill(0);
    await cluster.start(0, ['--port', String(ports[0]), '--load-index'], { DFAISS_TEST_DIE_AFTER_WAL: '1' });
    const batches = await runMovingClient(cluster.discovery, ROWS);
    assert.equal(s[0]!.proc.signalCode, 'SIGKILL', 'the process of ranks 0-1 died holding a batch');

    // Both ranks come back, on their ports, with what they had logged.
    await cluster.start(0, ['--port', String(ports[0]), '--load-index']);
    assert.deepEqual(cluster.servers.map((x) => x.port), ports);
    assert.equal(cluster.servers[0]!.proc, cluster.servers[1]!.proc);
    const client = await IndexClient.connect(cluster.discovery);
    try {
      await until('shards settle', async () => (await client.getState('mv')) === IndexState.TRAINED);
      assert.equal(await client.getNtotal('mv'), batches * ROWS, 'every vector counted once');
      const r = await client.search('mv', data.base(batches * ROWS, 0), 2);
      for (let q = 0; q < batches * ROWS; q++) {
        const want = [Math.floor(q / ROWS), q % ROWS];
        assert.deepEqual(r.metadata[q]![0], want, `vector ${q} is stored`);
        assert.notDeepEqual(r.metadata[q]![1], want, `vector ${q} is stored twice`);
      }
      const status = await client.status();
      assert.equal(status.length, 4);
      const tomb = status.filter((st) => st.rank < 2).map((st) => (st.indexes as Record<string, { tombstoned: number }>).mv!.tombstoned);
      assert.equal(tomb[0]! + tomb[1]!, ROWS, 'the rank that had stored the moved batch tombstoned it');
      await until('held revocations delivered', async () => (await client.status()).every((st) => (st.indexes as Record<string, { heldRevocations: number }>).mv!.heldRevocations === 0));
      assert.deepEqual(client.pendingRevocations, []);
    } finally {
      await client.close();
    }
  } finally {
    await cluster.stop();
  }
});

test('a process whose second rank cannot listen exits with one line and leaves no discovery line for its first rank', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-ranks-fail-'));
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  try {
    const busy = (blocker.address() as { port: number }).port;
    const discovery = join(dir, 'discovery.txt');
    const r = await runCli(['server', '--rank', '0', '--ranks-per-process', '2', '--port', `0,${busy}`, '--save-dir', join(dir, 'data'), '--discovery-config', discovery], { timeoutMs: 20_000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`port ${busy} on 127.0.0.1 is already in use`));
    assert.equal(existsSync(discovery) ? readFileSync(discovery, 'utf8') : '', '', 'no line for rank 0, which did listen for a moment');
  } finally {
    await new Promise((r) => blocker.close(r));
    rmSync(dir, { recursive: true, force: true });
  }
});
