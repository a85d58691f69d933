/**
 * Record commands (issue 16): `dfaiss delete` and `dfaiss get` by record id, and the id
 * list parsing `dfaiss load --ids-from` shares. Ids: a token of digits (optionally signed)
 * is an integer id, anything else a string id (--string-ids keeps every token a string).
 */
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { IndexClient } from '../client/index-client.js';
import type { RecordId } from '../client/records.js';
import { ValidationError } from '../errors.js';
import { addClientSecurityOptions, clientSecurity, indexIdArg, run, secondsArg, table, type ClientSecurityCliOptions } from './common.js';

/** One id token: digits-only (and safe) -> integer, else the string itself. */
export function parseIdToken(token: string, strings = false): RecordId {
  if (!strings && /^-?\d+$/.test(token) && Number.isSafeInteger(Number(token))) return Number(token);
  return token;
}

/** Ids from a file: one per line (blank lines end nothing: every line is a row's id, so none may be empty). */
export async function readIdFile(path: string, strings = false): Promise<RecordId[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ValidationError('--ids-from', 'a readable file with one record id per line', `${path}: ${(err as Error).message}`);
  }
  const lines = text.split(/\r?\n/);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  lines.forEach((l, i) => {
    if (l === '') throw new ValidationError(`--ids-from line ${i + 1}`, 'a record id (lines may not be empty)', l);
  });
  return lines.map((l) => parseIdToken(l, strings));
}

interface RecordCliOpts extends ClientSecurityCliOptions {
  discoveryConfig: string;
  indexId: string;
  ids?: string;
  idsFrom?: string;
  stringIds: boolean;
  json: boolean;
  wait: number;
  timeout: number;
}

async function idsOf(o: RecordCliOpts): Promise<RecordId[]> {
  if ((o.ids === undefined) === (o.idsFrom === undefined)) throw new ValidationError('--ids / --ids-from', 'exactly one of them', undefined);
  const ids = o.ids !== undefined ? o.ids.split(',').map((t) => t.trim()).filter((t) => t !== '').map((t) => parseIdToken(t, o.stringIds)) : await readIdFile(o.idsFrom!, o.stringIds);
  if (ids.length === 0) throw new ValidationError('--ids', 'at least one record id', o.ids ?? o.idsFrom);
  return ids;
}

function common(cmd: Command, what: string): Command {
  cmd
    .requiredOption('--discovery-config <file>', 'discovery file of the cluster (alias: --discover)')
    .requiredOption('--index-id <id>', `index to ${what}`, indexIdArg)
    .option('--ids <list>', 'comma-separated record ids')
    .option('--ids-from <file>', 'record ids, one per line')
    .option('--string-ids', 'treat digits-only ids as strings too', false)
    .option('--json', 'print JSON', false)
    .option('--wait <sec>', 'how long to wait for the discovery file to list every server', secondsArg('--wait'), 10)
    .option('--timeout <sec>', 'deadline per call', secondsArg('--timeout', 0.1), 600);
  return addClientSecurityOptions(cmd);
}

async function withClient(o: RecordCliOpts, name: string, fn: (c: IndexClient) => Promise<void>): Promise<void> {
  const client = await IndexClient.connect(o.discoveryConfig, { ...clientSecurity(o), discoveryTimeoutMs: o.wait * 1000, callTimeoutMs: o.timeout * 1000, clientName: name });
  try {
    await fn(client);
  } finally {
    await client.close();
  }
}

export function registerRecordCommands(program: Command): void {
  common(program.command('delete').description('delete records by id on every server (durable when it returns); prints how many were deleted and the unknown ids'), 'delete from').action(
    run('delete', async (o: RecordCliOpts) => {
      const ids = await idsOf(o);
      await withClient(o, 'dfaiss-delete', async (client) => {
        const r = await client.delete(o.indexId, ids);
        if (o.json) process.stdout.write(`${JSON.stringify({ indexId: o.indexId, ...r })}\n`);
        else process.stdout.write(`deleted ${r.deleted} of ${ids.length} records from '${o.indexId}'${r.unknown.length ? `; unknown: ${r.unknown.map((x) => JSON.stringify(x)).join(', ')}` : ''}\n`);
      });
    }),
  );
  common(program.command('get').description('print records by id: metadata (and vectors with --embeddings); unknown ids are listed'), 'read').option('--embeddings', 'also print the stored vectors', false).action(
    run('get', async (o: RecordCliOpts & { embeddings: boolean }) => {
      const ids = await idsOf(o);
      await withClient(o, 'dfaiss-get', async (client) => {
        const r = await client.get(o.indexId, ids, { returnEmbeddings: o.embeddings });
        const records = r.records.map((x) => ({ id: x.id, metadata: x.metadata, ...(x.embedding ? { embedding: [...x.embedding] } : {}) }));
        if (o.json) {
          process.stdout.write(`${JSON.stringify({ indexId: o.indexId, records, unknown: r.unknown })}\n`);
          return;
        }
        const rows = records.map((x) => [JSON.stringify(x.id), JSON.stringify(x.metadata) ?? 'null', ...(o.embeddings ? [JSON.stringify(x.embedding!.map((v) => Number(v.toPrecision(6))))] : [])]);
        process.stdout.write(`${table(['ID', 'METADATA', ...(o.embeddings ? ['EMBEDDING'] : [])], rows)}\n`);
        if (r.unknown.length > 0) process.stdout.write(`unknown: ${r.unknown.map((x) => JSON.stringify(x)).join(', ')}\n`);
      });
    }),
  );
}
