/**
 * `npm run bench`: dfaiss against in-process FAISS on a fixed scenario (see run.ts).
 *
 * OpenMP reads OMP_WAIT_POLICY once, when libgomp is loaded (with the native addon), so
 * it is set here before anything imports the binding: spinning OpenMP workers in this
 * process would steal a core from the servers.
 */
process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
const { main } = await import('./run.js');
await main(process.argv.slice(2));
