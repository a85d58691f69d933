/**
 * Operating commands against a running cluster, found through its discovery file:
 * `dfaiss status`, `dfaiss search`, `dfaiss save`, `dfaiss drop`.
 */
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import type { IndexClientOptions } from '../client/api.js';
import { IndexClient } from '../client/index-client.js';
import { parseDiscovery, type ServerAddress } from '../discovery/discovery-file.js';
import { rpcClientSecurityOptions } from '../client/security-options.js';
import { RpcClient } from '../protocol/rpc-client.js';
import { prng } from '../util/random.js';
import { AuthError, DfaissError, ValidationError } from '../errors.js';
import { VectorFile } from '../loader/vector-file.js';
import { halfToFloat32 } from '../vectors.js';
import { filterArg, intArg } from './args.js';
import type { Filter } from '../filter/schema.js';
import { waitForDiscovery } from './wait-discovery.js';
import { addClientSecurityOptions, clientSecurity, formatBytes, indexIdArg, run, secondsArg, table, type ClientSecurityCliOptions } from './common.js';

interface IndexInfo {
  state?: string;
  ntotal?: number;
  buffered?: number;
  total?: number;
  dim?: number;
  metric?: string;
}

export interface ServerStatusRow {
  address: ServerAddress;
  up: boolean;
  /** Reachable but refused us (authentication / TLS): running, but not ours to query. */
  refused?: boolean;
  error?: string;
  rank?: number;
  threads?: number;
  rssBytes?: number;
  heapBytes?: number;
  indexes?: Record<string, IndexInfo>;
}

/**
 * Each listed server's status, asked one by one with short deadlines: a down server is a
 * row, not a failure. Through a bare RpcClient per server, not a one-server IndexClient,
 * whose status() would also finish a shared training it thinks is due from one shard's view.
 */
export async function clusterStatus(
  discoveryConfig: string,
  timeoutMs: number,
  security: Pick<IndexClientOptions, 'secret' | 'tls'> = {},
): Promise<{ expected: number; servers: ServerStatusRow[] }> {
  let text: string;
  try {
    text = await readFile(discoveryConfig, 'utf8');
  } catch (err) {
    throw new DfaissError(`cannot read discovery file ${discoveryConfig}: ${(err as Error).message}`);
  }
  const { expected, servers } = parseDiscovery(text, discoveryConfig);
  if (expected < 0) throw new DfaissError(`discovery file ${discoveryConfig} is empty: its first line must be the number of servers, then one "host,port" line per server`);
  const rows = await Promise.all(
    servers.map(async (address): Promise<ServerStatusRow> => {
      let client: RpcClient | null = null;
      try {
        client = await RpcClient.connect(address.host, address.port, { ...rpcClientSecurityOptions(security), connectTimeoutMs: timeoutMs, callTimeoutMs: timeoutMs, clientName: 'dfaiss-status' });
        const { result } = await client.call<Omit<ServerStatusRow, 'address' | 'up'>>('status', {});
        return { address, up: true, ...result };
      } catch (err) {
        const refused = err instanceof AuthError;
        return { address, up: false, ...(refused ? { refused } : {}), error: (err as Error).message };
      } finally {
        await client?.close();
      }
    }),
  );
  return { expected, servers: rows };
}

function clientOpts(o: { wait: number; timeout: number } & ClientSecurityCliOptions, name: string): IndexClientOptions {
  return { ...clientSecurity(o), discoveryTimeoutMs: o.wait * 1000, connectTimeoutMs: Math.min(o.timeout, 30) * 1000, callTimeoutMs: o.timeout * 1000, clientName: name, log: (m) => process.stderr.write(`dfaiss ${name.replace(/^dfaiss-/, '')}: ${m}\n`) };
}

/** Connects to the cluster of `--discovery-config`, runs `fn`, and closes the client whatever happens. */
async function withCluster(
  o: { discoveryConfig: string; wait: number; timeout: number } & ClientSecurityCliOptions,
  name: string,
  fn: (client: IndexClient) => Promise<void>,
  /** Connect to these servers only (already waited for). */
  only?: ServerAddress[],
): Promise<void> {
  // Waits here, saying what for; the client then reads the complete file at once.
  const listed = only ?? (await waitForDiscovery(o.discoveryConfig, { command: name.replace(/^dfaiss-/, ''), timeoutMs: o.wait * 1000, timeoutFlag: '--wait <sec>' }));
  const client = await IndexClient.connectTo(listed, clientOpts(o, name));
  try {
    await fn(client);
  } finally {
    await client.close();
  }
}

/** The index's dimension from the servers' status. */
async function indexDim(client: IndexClient, indexId: string): Promise<number> {
  const dims = (await client.status()).map((s) => (s.indexes as Record<string, IndexInfo> | undefined)?.[indexId]?.dim).filter((d) => d !== undefined);
  if (dims.length === 0) throw new DfaissError(`unknown index '${indexId}': no server has it (see 'dfaiss status')`);
  return dims[0]!;
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
  return value;
}

export function registerOpsCommands(program: Command): void {
  program
    .command('status')
    .addHelpText('after', `
Examples:
  dfaiss status --discovery-config /tmp/discovery.txt
  dfaiss status --discovery-config /tmp/discovery.txt --json | jq '.servers[] | {rank, up}'`)
    .description('per server: rank, address, up/down, memory, and each index\'s state, ntotal and buffered vectors (exit code 2 when a server is down)')
    .requiredOption('--discovery-config <file>', 'discovery file of the cluster (alias: --discover)')
    .option('--timeout <sec>', 'deadline per server', secondsArg('--timeout', 0.1), 3)
    .option('--json', 'print JSON', false)
    .action(
      run('status', async (o: { discoveryConfig: string; timeout: number; json: boolean } & ClientSecurityCliOptions) => {
        const { expected, servers } = await clusterStatus(o.discoveryConfig, o.timeout * 1000, clientSecurity(o));
        const missing = Math.max(0, expected - servers.length);
        const down = servers.filter((s) => !s.up).length;
        if (o.json) {
          process.stdout.write(`${JSON.stringify({ expected, missing, up: servers.length - down, down, servers }, jsonReplacer, 2)}\n`);
        } else {
          const rows: string[][] = [];
          for (const s of servers) {
            const base = [s.rank === undefined ? '?' : String(s.rank), `${s.address.host}:${s.address.port}`, s.up ? 'up' : s.refused ? 'REFUSED' : 'DOWN', s.up ? formatBytes(s.rssBytes ?? NaN) : '-'];
            const ids = Object.keys(s.indexes ?? {}).sort();
            if (!s.up || ids.length === 0) rows.push([...base, s.up ? '(none)' : '-', '-', '-', '-']);
            for (const id of ids) {
              const i = s.indexes![id]!;
              rows.push([...base, id, i.state ?? '?', String(i.ntotal ?? '?'), String(i.buffered ?? '?')]);
            }
          }
          process.stdout.write(`${table(['RANK', 'ADDRESS', 'STATUS', 'RSS', 'INDEX', 'STATE', 'NTOTAL', 'BUFFERED'], rows)}\n`);
          const totals = new Map<string, number>();
          for (const s of servers) for (const [id, i] of Object.entries(s.indexes ?? {})) totals.set(id, (totals.get(id) ?? 0) + (i.ntotal ?? 0));
          const refused = servers.filter((s) => s.refused).length;
          const summary = [`${servers.length - down}/${expected} servers up`];
          if (down - refused) summary.push(`${down - refused} down`);
          if (refused) summary.push(`${refused} refused this client (check --secret-file / --tls-ca)`);
          if (missing) summary.push(`${missing} not listed in ${o.discoveryConfig} yet`);
          for (const [id, n] of [...totals].sort()) summary.push(`${id}: ntotal ${n}`);
          process.stdout.write(`${summary.join('; ')}\n`);
          for (const s of servers) if (!s.up) process.stdout.write(`${s.address.host}:${s.address.port} ${s.refused ? 'refused us' : 'is down'}: ${s.error}\n`);
        }
        if (down > 0 || missing > 0) process.exitCode = 2;
      }),
    );

  program
    .command('search')
    .addHelpText('after', `
Examples:
  dfaiss search --discovery-config /tmp/discovery.txt --index-id docs --random 3 -k 5
  dfaiss search --discovery-config /tmp/discovery.txt --index-id docs --queries q.npy --nq 10 --json
  dfaiss search --discovery-config /tmp/discovery.txt --index-id docs --random 1 --allow-partial   # some servers down
  dfaiss search --discovery-config /tmp/discovery.txt --index-id docs --random 2 --filter '{"lang": "en", "year": {"$gte": 2020}}'
  dfaiss search --discovery-config /tmp/discovery.txt --index-id docs --random 2 --filter @filter.json   # docs/filters.md`)
    .description('search an index with queries from a vector file or random vectors; prints a table or JSON')
    .requiredOption('--discovery-config <file>', 'discovery file of the cluster (alias: --discover)')
    .requiredOption('--index-id <id>', 'index to search', indexIdArg)
    .option('--queries <file>', 'query vectors: .npy, .fvecs, .bvecs, or raw float32 (the index\'s dimension)')
    .option('--random <n>', 'n random queries (uniform in [0, 1), like the original load script\'s check)', intArg('--random', 1, 100_000))
    .option('--nq <n>', 'use at most the first n queries of --queries', intArg('--nq', 1))
    .option('--seed <n>', 'seed of --random', intArg('--seed', 0), 1)
    .option('-k, --k <k>', 'hits per query', intArg('-k', 1, 4096), 10)
    .option('--filter <json>', 'search only the records this filter admits: JSON or @file (docs/filters.md)', filterArg('--filter'))
    .option('--allow-partial', 'answer from the servers that are up when some are down (lists the missing ones) instead of failing', false)
    .option('--json', 'print JSON', false)
    .option('--wait <sec>', 'how long to wait for the discovery file to list every server', secondsArg('--wait'), 10)
    .option('--timeout <sec>', 'deadline per call', secondsArg('--timeout', 0.1), 60)
    .action(
      run('search', async (o: { discoveryConfig: string; indexId: string; queries?: string; random?: number; nq?: number; seed: number; k: number; filter?: Filter; allowPartial: boolean; json: boolean; wait: number; timeout: number } & ClientSecurityCliOptions) => {
        if ((o.queries === undefined) === (o.random === undefined)) throw new ValidationError('--queries / --random', 'exactly one of them', undefined);
        // With --allow-partial, servers already down are left out of the client (connecting
        // to every server would fail) and reported as missing with the ones the search loses.
        const down: Array<{ server: string; error: string }> = [];
        let only: ServerAddress[] | undefined;
        let partialDim: number | undefined;
        if (o.allowPartial) {
          await waitForDiscovery(o.discoveryConfig, { command: 'search', timeoutMs: o.wait * 1000, timeoutFlag: '--wait <sec>' });
          const { servers } = await clusterStatus(o.discoveryConfig, Math.min(o.timeout, 5) * 1000, clientSecurity(o));
          for (const s of servers) if (!s.up) down.push({ server: `${s.address.host}:${s.address.port}`, error: s.error ?? 'down' });
          only = servers.filter((s) => s.up).map((s) => s.address);
          if (only.length === 0) throw new DfaissError(`no server of ${o.discoveryConfig} is up: ${down.map((d) => `${d.server}: ${d.error}`).join('; ')}`);
          partialDim = servers.map((s) => s.indexes?.[o.indexId]?.dim).find((d) => d !== undefined);
          if (partialDim === undefined) throw new DfaissError(`unknown index '${o.indexId}': no reachable server has it (see 'dfaiss status')`);
        }
        await withCluster(o, 'dfaiss-search', async (client) => {
          const dim = partialDim ?? (await indexDim(client, o.indexId));
          let queries: Float32Array;
          if (o.queries) {
            const file = await VectorFile.open(o.queries, { dim, dimFrom: `the index '${o.indexId}' (dim ${dim})` });
            try {
              const n = Math.min(file.rows, o.nq ?? file.rows);
              if (n === 0) throw new DfaissError(`${o.queries} holds no vectors`);
              const raw = await file.read(0, n, file.allocate(n));
              queries = raw instanceof Uint16Array ? halfToFloat32(raw) : raw;
            } finally {
              await file.close();
            }
          } else {
            const rand = prng(o.seed);
            queries = Float32Array.from({ length: o.random! * dim }, () => rand());
          }
          const nq = queries.length / dim;
          const t0 = performance.now();
          const r = await client.search(o.indexId, queries, o.k, { allowPartial: o.allowPartial, ...(o.filter ? { filter: o.filter } : {}) });
          const ms = performance.now() - t0;
          const missing = [...down, ...(r.missing ?? [])];
          if (o.json) {
            const results = r.scores.map((scores, q) => ({ query: q, hits: scores.map((score, i) => ({ score, ...(r.ids ? { id: r.ids[q]![i] } : {}), metadata: r.metadata[q]![i] })) }));
            process.stdout.write(`${JSON.stringify({ indexId: o.indexId, k: o.k, nq, ms: Number(ms.toFixed(3)), ...(o.allowPartial ? { missing } : {}), ...(r.matches !== undefined ? { matches: r.matches } : {}), results }, jsonReplacer)}\n`);
          } else {
            const rows: string[][] = [];
            r.scores.forEach((scores, q) => scores.forEach((score, i) => rows.push([String(q), String(i + 1), String(Number(score.toPrecision(6))), JSON.stringify(r.metadata[q]![i], jsonReplacer) ?? 'null'])));
            process.stdout.write(`${table(['QUERY', 'RANK', 'SCORE', 'METADATA'], rows)}\n`);
            process.stdout.write(`${nq} queries, top-${o.k}, ${ms.toFixed(1)} ms across ${client.numServers + down.length - missing.length} servers${r.matches !== undefined ? `; the filter admits ${r.matches} searchable records` : ''}\n`);
            if (missing.length > 0) process.stdout.write(`PARTIAL: no answer from ${missing.map((m) => m.server).join(', ')}: their hits are missing (exit code 2)\n`);
          }
          if (missing.length > 0) process.exitCode = 2;
        }, only);
      }),
    );

  program
    .command('save')
    .addHelpText('after', `
Example:
  dfaiss save --discovery-config /tmp/discovery.txt --index-id docs`)
    .description('save an index on every server (each writes its shard under its storage folder)')
    .requiredOption('--discovery-config <file>', 'discovery file of the cluster (alias: --discover)')
    .requiredOption('--index-id <id>', 'index to save', indexIdArg)
    .option('--wait <sec>', 'how long to wait for the discovery file to list every server', secondsArg('--wait'), 10)
    .option('--timeout <sec>', 'how long the save may take', secondsArg('--timeout', 1), 3600)
    .action(
      run('save', async (o: { discoveryConfig: string; indexId: string; wait: number; timeout: number } & ClientSecurityCliOptions) => {
        await withCluster(o, 'dfaiss-save', async (client) => {
          const t0 = performance.now();
          await client.saveIndex(o.indexId);
          const ntotal = await client.getNtotal(o.indexId);
          process.stdout.write(`saved '${o.indexId}' on ${client.numServers} servers (ntotal ${ntotal}) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
        });
      }),
    );

  program
    .command('drop')
    .addHelpText('after', `
Example:
  dfaiss drop --discovery-config /tmp/discovery.txt --index-id docs --yes`)
    .description('drop an index: removes it from memory and deletes its saved files on every server')
    .requiredOption('--discovery-config <file>', 'discovery file of the cluster (alias: --discover)')
    .requiredOption('--index-id <id>', 'index to drop', indexIdArg)
    .option('--yes', 'really delete it (required)', false)
    .option('--wait <sec>', 'how long to wait for the discovery file to list every server', secondsArg('--wait'), 10)
    .option('--timeout <sec>', 'deadline per call', secondsArg('--timeout', 1), 600)
    .action(
      run('drop', async (o: { discoveryConfig: string; indexId: string; yes: boolean; wait: number; timeout: number } & ClientSecurityCliOptions) => {
        if (!o.yes) throw new ValidationError('--yes', `to be given: dropping '${o.indexId}' deletes it from memory and disk on every server`, undefined);
        await withCluster(o, 'dfaiss-drop', async (client) => {
          await client.dropIndex(o.indexId);
          process.stdout.write(`dropped '${o.indexId}' on ${client.numServers} servers\n`);
        });
      }),
    );
  for (const name of ['status', 'search', 'save', 'drop']) addClientSecurityOptions(program.commands.find((c) => c.name() === name)!);

}
