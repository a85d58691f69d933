#!/usr/bin/env node
/** The `dfaiss` command line. Each subcommand lives in its own module under src/cli/. */
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { run } from './common.js';
import { registerLaunchCommand } from './launch.js';
import { registerLoadCommand } from './load.js';
import { registerOpsCommands } from './ops.js';
import { registerRecordCommands } from './records.js';
import { registerServerCommand } from './server.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string; description: string };

export function buildProgram(): Command {
  const program = new Command('dfaiss')
    .description(pkg.description)
    .version(pkg.version, '-V, --version', 'print the dfaiss version')
    .showHelpAfterError()
    .configureHelp({ sortSubcommands: true });

  program
    .command('info')
    .description('print the linked FAISS (version, SIMD level, BLAS, where it was built from) and native capabilities')
    .action(
      run('info', async () => {
        const native = await import('../native/index.js');
        console.log(JSON.stringify({ dfaiss: pkg.version, faiss: native.faissBuild, ompThreads: native.getNumThreads() }, null, 2));
      }),
    );

  registerServerCommand(program);
  registerLaunchCommand(program);
  registerLoadCommand(program);
  registerOpsCommands(program);
  registerRecordCommands(program);
  return program;
}

await buildProgram().parseAsync(process.argv);
