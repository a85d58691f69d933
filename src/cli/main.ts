#!/usr/bin/env node
/** The `dfaiss` command line. Each subcommand lives in its own module under src/cli/. */
import { Command, Option } from 'commander';
import { LOG_FORMATS } from '../util/logger.js';
import { readFileSync } from 'node:fs';
import { registerServerCommand } from './server.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string; description: string };

/**
 * The subcommand on this command line (the first word that is not an option or the
 * value of --log-format), to load only what `dfaiss server` needs in a server process.
 */
function subcommand(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--log-format') i++;
    else if (!a.startsWith('-')) return a;
  }
  return undefined;
}

/**
 * The whole program, or (`serverOnly`) the `server` command alone: a server process then
 * never loads the client-side commands' modules (the loader, progress bars, the dashboard,
 * the launchers), which cost it several MiB of heap (issue 15, item 3).
 */
export async function buildProgram(serverOnly = false): Promise<Command> {
  const program = new Command('dfaiss')
    .description(pkg.description)
    .version(pkg.version, '-V, --version', 'print the dfaiss version')
    .showHelpAfterError()
    .configureHelp({ sortSubcommands: true })
    .addOption(new Option('--log-format <format>', 'logs on stderr: pretty (local ISO times), json, or auto = pretty on a terminal, JSON when piped').choices(LOG_FORMATS).default('auto'))
    // Set before any command builds its logger; servers started by `launch local` inherit it.
    .hook('preAction', (cmd) => {
      const format = (cmd.opts() as { logFormat?: string }).logFormat;
      if (format && (format !== 'auto' || process.env.DFAISS_LOG_FORMAT === undefined)) process.env.DFAISS_LOG_FORMAT = format;
    })
    .addHelpText('after', `
Examples:
  dfaiss launch local --num-servers 4 --save-dir ./data --discovery-config /tmp/discovery.txt --metrics-port 9100 &
  dfaiss load --discovery-config /tmp/discovery.txt --mmap vectors.npy --cfg idx_cfg.json --index-id docs
  dfaiss search --discovery-config /tmp/discovery.txt --index-id docs --random 3 -k 5
  dfaiss dashboard --discovery-config /tmp/discovery.txt --port 8080
Run 'dfaiss <command> --help' for a command's options and examples.`);

  registerServerCommand(program);
  if (serverOnly) return program;
  const { run } = await import('./common.js');
  program
    .command('info')
    .description('print the linked FAISS (version, SIMD level, BLAS, where it was built from) and native capabilities')
    .action(
      run('info', async () => {
        const native = await import('../native/index.js');
        console.log(JSON.stringify({ dfaiss: pkg.version, faiss: native.faissBuild, ompThreads: native.getOmpNumThreads() }, null, 2));
      }),
    );

  const [launch, load, ops, records, dashboard] = await Promise.all([import('./launch.js'), import('./load.js'), import('./ops.js'), import('./records.js'), import('./dashboard.js')]);
  launch.registerLaunchCommand(program);
  load.registerLoadCommand(program);
  ops.registerOpsCommands(program);
  records.registerRecordCommands(program);
  dashboard.registerDashboardCommand(program);
  return program;
}

/** Flags known by another name too: the original's load_data.py called the discovery file --discover. */
const FLAG_ALIASES: Record<string, string> = { '--discover': '--discovery-config' };

/** argv with aliased flags (`--discover f`, `--discover=f`) under their one name. */
function canonicalArgs(argv: readonly string[]): string[] {
  return argv.map((a) => {
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    const to = FLAG_ALIASES[flag];
    return to ? to + (eq > 0 ? a.slice(eq) : '') : a;
  });
}

const argv = canonicalArgs(process.argv);
await (await buildProgram(subcommand(argv.slice(2)) === 'server')).parseAsync(argv);
