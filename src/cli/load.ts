/**
 * `dfaiss load`: the original's scripts/load_data.py. Streams a vector file into a
 * running cluster (found through its discovery file), trains if needed, waits until
 * TRAINED, saves and prints a summary. Ctrl-C stops after the batches in flight and says
 * which --start resumes the load.
 */
import { Option, type Command } from 'commander';
import { IndexClient } from '../client/index-client.js';
import type { IndexCfg } from '../config/index.js';
import { loadIndexCfgFile } from '../config/index-cfg.js';
import { LoadError, loadVectors, type LoadResult } from '../loader/load.js';
import { createProgressReporter, formatDuration, formatRate } from '../loader/progress.js';
import { VectorFile } from '../loader/vector-file.js';
import { intArg } from './args.js';
import { waitForDiscovery } from './wait-discovery.js';
import { addClientSecurityOptions, clientSecurity, indexIdArg, run, secondsArg, type ClientSecurityCliOptions } from './common.js';
import { readIdFile } from './records.js';
import { ValidationError } from '../errors.js';

interface LoadCliOpts extends ClientSecurityCliOptions {
  discoveryConfig: string;
  mmap: string;
  mmapSize?: number;
  dimension?: number;
  dstoreFp16: boolean;
  cfg?: string;
  bs: number;
  start: number;
  limit?: number;
  indexId: string;
  loadIndex: boolean;
  ncentroids?: number;
  inFlight?: number;
  save: boolean;
  append: boolean;
  json: boolean;
  discoveryTimeout: number;
  trainTimeout: number;
  progressInterval: number;
  rowIds: boolean;
  idsFrom?: string;
}


/** The loader's options (loadVectors, VectorFile.open) as this command's flags. */
const LOAD_FLAGS = { batchSize: '--bs', start: '--start', limit: '--limit', cfg: '--cfg', loadIndex: '--load-index', append: '--append' } as const;
const FILE_FLAGS = { dim: '--dimension', rows: '--mmap-size', fp16: '--dstore-fp16' } as const;

export function registerLoadCommand(program: Command): void {
  const cmd = program
    .command('load')
    .description('bulk-load a vector file (raw float32/float16, .npy, .fvecs, .bvecs) into a running cluster; metadata = row number')
    .addHelpText('after', `
Examples:
  dfaiss load --discovery-config /tmp/discovery.txt --mmap vectors.npy --cfg idx_cfg.json --index-id docs
  dfaiss load --discovery-config /tmp/discovery.txt --mmap keys.mmap --dstore-fp16 --dimension 768 \\
      --cfg idx_cfg.json --index-id keys --bs 5000
  dfaiss load --discovery-config /tmp/discovery.txt --mmap vectors.npy --cfg idx_cfg.json --index-id docs \\
      --start 200000 --append      # resume an interrupted load

idx_cfg.json (the original's snake_case keys; unknown keys are an error):
  {"index_builder_type": "ivf_simple", "dim": 768, "centroids": 1024, "train_num": 100000, "metric": "dot", "nprobe": 16}`)
    .requiredOption('--discovery-config <file>', 'discovery file of the cluster (alias: --discover)')
    .requiredOption('--mmap <file>', 'vector file: .npy, .fvecs, .bvecs by extension, anything else raw row-major float32 (float16 with --dstore-fp16)')
    .option('--mmap-size <rows>', 'rows in the file (raw files: default file size / row size; others: at most the rows they hold)', intArg('--mmap-size', 0))
    .option('--dimension <d>', 'vector dimension (required for raw files without --cfg; checked against the file otherwise)', intArg('--dimension', 1, 65536))
    .option('--dstore-fp16', 'the raw file holds float16 (sent as float16; servers widen it natively)', false)
    .option('--cfg <file>', "index config JSON (the original's snake_case files work); needed unless --load-index finds a saved index")
    .option('--bs <rows>', 'rows per batch', intArg('--bs', 1, 10_000_000), 1000)
    .option('--start <row>', 'first row to load (resume an interrupted load with the row it printed)', intArg('--start', 0), 0)
    .option('--limit <rows>', 'load at most this many rows from --start', intArg('--limit', 0))
    .option('--index-id <id>', 'logical index to load into', indexIdArg, 'lang_en')
    .option('--load-index', 'load the saved index first (servers with nothing saved start empty with --cfg)', false)
    .option('--ncentroids <n>', 'override the config\'s centroids (the original script\'s flag)', intArg('--ncentroids', 1, 1 << 24))
    .option('--in-flight <n>', 'batches in flight at once (default: 2 x servers)', intArg('--in-flight', 1, 1024))
    .option('--no-save', 'do not save the index at the end')
    .option('--append', 'add to an index that already holds vectors (refused without it: e.g. resuming with --start)', false)
    .option('--json', 'print the summary as one JSON object', false)
    .option('--row-ids', 'store each row as a record whose id is its row number (upsert: a resumed load never stores a row twice)', false)
    .option('--ids-from <file>', 'record ids, one per line, line r for row r (digits-only lines are integer ids, others strings); stored with upsert')
    .option('--discovery-timeout <sec>', 'how long to wait for the discovery file to list every server (says what it waits for every few seconds; raise it for a SLURM job still queued)', secondsArg('--discovery-timeout'), 600)
    .option('--train-timeout <sec>', 'how long training and waiting for TRAINED may take', secondsArg('--train-timeout', 1), 86_400)
    .addOption(new Option('--progress-interval <sec>', 'seconds between progress lines when not on a terminal').argParser(secondsArg('--progress-interval')).default(5));
  addClientSecurityOptions(cmd).action(
      run('load', async (opts: LoadCliOpts) => {
        let cfg: IndexCfg | null = null;
        if (opts.cfg) {
          // A misspelled key ("nprob") is an error with a did-you-mean, not a silent default.
          cfg = await loadIndexCfgFile(opts.cfg, { unknownKeys: 'error' });
          if (opts.ncentroids !== undefined) cfg = { ...cfg, centroids: opts.ncentroids };
          if (opts.dimension !== undefined && opts.dimension !== cfg.dim) {
            throw new Error(`--dimension ${opts.dimension} disagrees with "dim": ${cfg.dim} in ${opts.cfg}`);
          }
        } else if (!opts.loadIndex) {
          throw new Error('--cfg <file> is required to create the index (or give --load-index to use a saved one)');
        }
        if (opts.rowIds && opts.idsFrom) throw new ValidationError('--row-ids / --ids-from', 'at most one of them', undefined);
        const idList = opts.idsFrom ? await readIdFile(opts.idsFrom) : null;
        const dimFrom = opts.dimension !== undefined ? '--dimension' : cfg ? `"dim": ${cfg.dim} in ${opts.cfg}` : undefined;
        const file = await VectorFile.open(opts.mmap, { dim: opts.dimension ?? cfg?.dim, ...(dimFrom ? { dimFrom } : {}), rows: opts.mmapSize, fp16: opts.dstoreFp16, names: FILE_FLAGS });
        if (idList && idList.length < Math.min(file.rows, opts.limit === undefined ? file.rows : opts.start + opts.limit)) {
          await file.close();
          throw new ValidationError('--ids-from', `one id per row to load (${file.rows} rows)`, `${idList.length} ids in ${opts.idsFrom}`);
        }
        const security = clientSecurity(opts);
        const servers = await waitForDiscovery(opts.discoveryConfig, { command: 'load', timeoutMs: opts.discoveryTimeout * 1000, timeoutFlag: '--discovery-timeout <sec>' }).catch(async (err: Error) => {
          await file.close();
          throw err;
        });
        const client = await IndexClient.connectTo(servers, {
          ...security,
          discoveryTimeoutMs: opts.discoveryTimeout * 1000,
          clientName: 'dfaiss-load',
          log: (m) => process.stderr.write(`dfaiss load: ${m}\n`),
          ...(opts.inFlight ? { maxAddsInFlight: opts.inFlight } : {}),
        });
        const progress = createProgressReporter({ intervalMs: opts.progressInterval * 1000 });
        const abort = new AbortController();
        let signals = 0;
        const onSignal = (): void => {
          signals++;
          if (signals === 1) {
            progress.note('load: interrupted: finishing the batches in flight (Ctrl-C again to quit now)');
            abort.abort();
          } else {
            progress.stop();
            process.stderr.write('load: quit without waiting; resume from the --start of the last progress line\n');
            process.exit(130);
          }
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        if (!opts.json) {
          const end = opts.limit === undefined ? file.rows : Math.min(file.rows, opts.start + opts.limit);
          process.stderr.write(
            `load: ${file.path}: ${file.format}, ${file.dtype}, ${file.rows} x ${file.dim}; rows ${opts.start}..${end - 1} into '${opts.indexId}' on ${client.numServers} servers, batches of ${opts.bs}\n`,
          );
        }
        let result: LoadResult;
        try {
          result = await loadVectors({
            client,
            connectSlow: (callTimeoutMs) => IndexClient.connect(opts.discoveryConfig, { ...security, callTimeoutMs, discoveryTimeoutMs: 60_000, clientName: 'dfaiss-load' }),
            file,
            indexId: opts.indexId,
            cfg,
            loadIndex: opts.loadIndex,
            batchSize: opts.bs,
            start: opts.start,
            limit: opts.limit,
            inFlight: opts.inFlight,
            trainTimeoutMs: opts.trainTimeout * 1000,
            save: opts.save,
            append: opts.append,
            signal: abort.signal,
            ...(opts.rowIds ? { idsForRows: (start: number, count: number) => Array.from({ length: count }, (_, i) => start + i) } : {}),
            ...(idList ? { idsForRows: (start: number, count: number) => idList.slice(start, start + count) } : {}),
            onProgress: (p) => progress.update(p),
            // The loader names its options; a user of this command knows them as flags.
            names: { ...LOAD_FLAGS, drop: `'dfaiss drop --index-id ${opts.indexId} --yes'` },
          });
        } catch (err) {
          progress.stop();
          if (err instanceof LoadError && opts.json) process.stdout.write(`${JSON.stringify({ error: err.message, resumeRow: err.resumeRow })}\n`);
          throw err;
        } finally {
          progress.stop();
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          await client.close();
          await file.close();
        }
        if (opts.json) process.stdout.write(`${JSON.stringify({ ...result, file: file.path, servers: client.numServers })}\n`);
        else process.stdout.write(summary(result, file, client.numServers));
        if (result.interrupted) process.exitCode = 130;
      }),
    );
}

function summary(r: LoadResult, file: VectorFile, servers: number): string {
  const lines = [
    `loaded ${r.rowsLoaded} vectors (rows ${r.start}..${r.resumeRow - 1}) of ${file.path} into '${r.indexId}' on ${servers} servers`,
    `  sending: ${r.addSeconds.toFixed(1)} s (${formatRate(r.vectorsPerSecond)} vectors/s); until TRAINED: ${r.trainSeconds.toFixed(1)} s; saving: ${r.saveSeconds.toFixed(1)} s; total ${formatDuration(r.totalSeconds)}`,
  ];
  if (r.interrupted) {
    lines.push(`  INTERRUPTED: resume with --start ${r.resumeRow} --append (what was sent stays in the servers' memory; 'dfaiss save' persists it)`);
  } else {
    lines.push(`  index: ${r.state}, ntotal ${r.ntotal}${r.syncTrainCalled ? ', trained by the loader (syncTrain)' : ''}${r.saved ? ', saved' : ', not saved (--no-save)'}`);
    if (r.resumeRow < file.rows) lines.push(`  next rows start at ${r.resumeRow} (--start ${r.resumeRow} --append)`);
  }
  return `${lines.join('\n')}\n`;
}
