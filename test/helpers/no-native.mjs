// Preloaded with --import: this process cannot load native code. Any module that resolves to
// the FAISS binding or a .node file fails to import, and process.dlopen throws.
import { register } from 'node:module';

process.dlopen = () => {
  throw new Error('no native addons in this process');
};
register(
  'data:text/javascript,' +
    encodeURIComponent(`
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  if (/native\\/binding\\.js$|\\.node$/.test(r.url)) throw new Error('native code imported: ' + r.url + ' from ' + context.parentURL);
  return r;
}`),
);
