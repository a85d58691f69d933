/**
 * `npm run bench`: dfaiss against in-process FAISS on a fixed scenario (see run.ts);
 * `npm run bench -- --scale`: fan-out to 64 servers and 768-d fp16 loads (scale.ts).
 *
 * OpenMP reads OMP_WAIT_POLICY once, when libgomp is loaded (with the native addon), so
 * it is set here before anything imports the binding: spinning OpenMP workers in this
 * process would steal a core from the servers.
 */
process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
const argv = process.argv.slice(2);
if (argv.includes('--scale')) {
  // The scale benchmark (issue 15) is a separate scenario with its own options.
  const { runScale } = await import('./scale.js');
  await runScale(argv);
} else {
  const { main } = await import('./run.js');
  await main(argv);
}
