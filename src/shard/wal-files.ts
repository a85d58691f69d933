/** WAL segment files: names, listing, and durable writes (shared with snapshots). */
import { open, readdir, type FileHandle } from 'node:fs/promises';

export const segmentName = (startSeq: number): string => `wal-${String(startSeq).padStart(16, '0')}.log`;

/** Writes `parts` back to back from `position`, 512 buffers per writev, finishing short writes. */
export async function writeAll(fh: FileHandle, parts: readonly Uint8Array[], position: number): Promise<void> {
  // writev takes at most IOV_MAX (1024) buffers per call on Linux.
  let pos = position;
  for (let i = 0; i < parts.length; i += 512) {
    const chunk = parts.slice(i, i + 512);
    const want = chunk.reduce((s, p) => s + p.byteLength, 0);
    let { bytesWritten } = await fh.writev(chunk, pos);
    pos += bytesWritten;
    if (bytesWritten < want) {
      // Short write: finish the rest one buffer at a time.
      let skip = bytesWritten;
      for (const p of chunk) {
        if (skip >= p.byteLength) {
          skip -= p.byteLength;
          continue;
        }
        const rest = p.subarray(skip);
        skip = 0;
        let off = 0;
        while (off < rest.byteLength) {
          ({ bytesWritten } = await fh.write(rest, off, rest.byteLength - off, pos));
          if (bytesWritten === 0) throw new Error('write made no progress');
          off += bytesWritten;
          pos += bytesWritten;
        }
      }
    }
  }
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The entries of `dir`; none when it does not exist (yet). Other errors are thrown. */
export async function readdirIfExists(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export async function listSegments(dir: string): Promise<Array<{ name: string; start: number }>> {
  return (await readdirIfExists(dir))
    .map((name) => ({ name, m: /^wal-(\d{16})\.log$/.exec(name) }))
    .filter((x) => x.m)
    .map((x) => ({ name: x.name, start: Number(x.m![1]) }))
    .sort((a, b) => a.start - b.start);
}

