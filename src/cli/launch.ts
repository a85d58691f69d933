/** `dfaiss launch local|slurm`: start a set of index servers and publish them in a discovery file. */
import type { Command } from 'commander';
import { registerLaunchLocal } from './launch-local.js';
import { registerLaunchSlurm } from './launch-slurm.js';

export function registerLaunchCommand(program: Command): void {
  const launch = program
    .command('launch')
    .description('start a set of index servers (on this machine or on a SLURM cluster)')
    .addHelpText('after', `
Examples:
  dfaiss launch local --num-servers 4 --save-dir ./data --discovery-config /tmp/discovery.txt
  dfaiss launch slurm --log-dir ~/logs --discovery-config ~/discovery.txt --num-servers 64 --partition dev`);
  registerLaunchLocal(launch);
  registerLaunchSlurm(launch);
}
