/** `dfaiss launch local` (being written). */
import type { Command } from 'commander';

export function registerLaunchLocal(launch: Command): void {
  launch.command('local').description('(not implemented yet)').action(() => {
    throw new Error('dfaiss launch local is not implemented yet');
  });
}
