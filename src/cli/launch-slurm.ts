/** `dfaiss launch slurm` (being written). */
import type { Command } from 'commander';

export function registerLaunchSlurm(launch: Command): void {
  launch.command('slurm').description('(not implemented yet)').action(() => {
    throw new Error('dfaiss launch slurm is not implemented yet');
  });
}
