/** WAL replay: every record after a sequence, in order, streamed one record at a time. */
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { StorageError } from '../errors.js';
import { crc32Update } from './crc.js';
import { listSegments } from './wal-files.js';
import { MAX_RECORD_BYTES, RECORD_HEADER, RECORD_MAGIC, SEGMENT_HEADER, SEGMENT_MAGIC, WAL_FORMAT_VERSION, decodeRecord, type WalRecord } from './wal-format.js';

export interface ReplayReport {
  records: number;
  lastSeq: number;
  /** What was skipped and why (torn tails, corrupt records). */
  skipped: string[];
}

/**
 * Reads every record with seq > afterSeq, in order, streaming (records are read one at a
 * time, never a whole segment). Stops at the first torn or corrupt record of a segment:
 * only the tail of a log can be torn by a crash; the rest of that segment is reported.
 */
export async function replayWal(dir: string, afterSeq: number, onRecord: (r: WalRecord) => void): Promise<ReplayReport> {
  const report: ReplayReport = { records: 0, lastSeq: afterSeq, skipped: [] };
  for (const seg of await listSegments(dir)) {
    const fh = await open(join(dir, seg.name), 'r');
    try {
      const { size } = await fh.stat();
      const head = Buffer.alloc(SEGMENT_HEADER);
      const { bytesRead } = await fh.read(head, 0, SEGMENT_HEADER, 0);
      if (bytesRead < SEGMENT_HEADER || head.readUInt32LE(0) !== SEGMENT_MAGIC) {
        report.skipped.push(`${seg.name}: no valid segment header (${size} bytes), skipped`);
        continue;
      }
      if (head.readUInt32LE(4) > WAL_FORMAT_VERSION) {
        throw new StorageError(`${seg.name}: WAL format ${head.readUInt32LE(4)} is newer than this dfaiss reads (${WAL_FORMAT_VERSION}); upgrade dfaiss`);
      }
      let pos = SEGMENT_HEADER;
      while (pos < size) {
        const problem = await readRecordAt(fh, pos, size);
        if (typeof problem === 'string') {
          report.skipped.push(`${seg.name} @${pos}: ${problem}; ignored ${size - pos} bytes from there`);
          break;
        }
        const { record, total } = problem;
        pos += total;
        if (record.seq <= report.lastSeq) continue;
        onRecord(record);
        report.records++;
        report.lastSeq = record.seq;
      }
    } finally {
      await fh.close();
    }
  }
  return report;
}

async function readRecordAt(fh: FileHandle, pos: number, size: number): Promise<{ record: WalRecord; total: number } | string> {
  if (size - pos < RECORD_HEADER) return 'torn record header';
  const h = Buffer.alloc(RECORD_HEADER);
  await fh.read(h, 0, RECORD_HEADER, pos);
  if (h.readUInt32LE(0) !== RECORD_MAGIC) return 'bad record magic';
  const total = h.readUInt32LE(8);
  if (total < RECORD_HEADER || total % 8 !== 0 || total > MAX_RECORD_BYTES) return `bad record length ${total}`;
  if (pos + total > size) return 'torn record (file ends inside it)';
  const body = Buffer.alloc(total - RECORD_HEADER);
  await fh.read(body, 0, body.byteLength, pos + RECORD_HEADER);
  let crc = crc32Update(0, h.subarray(8));
  crc = crc32Update(crc, body);
  if (crc !== h.readUInt32LE(4)) return 'checksum mismatch';
  return decodeRecord(h, body, total);
}
