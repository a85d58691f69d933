/** `dfaiss launch local|slurm`: start a set of index servers and publish them in a discovery file. */
import type { Command } from 'commander';
import { registerLaunchLocal } from './launch-local.js';
import { registerLaunchSlurm } from './launch-slurm.js';

export function registerLaunchCommand(program: Command): void {
  const launch = program.command('launch').description('start a set of index servers (on this machine or on a SLURM cluster)');
  registerLaunchLocal(launch);
  registerLaunchSlurm(launch);
}
