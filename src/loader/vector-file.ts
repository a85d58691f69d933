/**
 * Streaming readers for vector files: raw row-major float32/float16 (the original's
 * `--mmap` datastore), NumPy .npy (float32, float16 or uint8, C order), and the
 * TEXMEX .fvecs / .bvecs formats. Rows are read on demand into a caller's buffer with
 * positioned reads, so a file of any size is never held in memory.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { extname } from 'node:path';
import { DfaissError, ValidationError } from '../errors.js';

export type VectorFileFormat = 'raw' | 'npy' | 'fvecs' | 'bvecs';
/** Element type as stored: float32, float16, or uint8 (converted to float32 when read). */
export type VectorDtype = 'f32' | 'f16' | 'u8';

export interface VectorFileOptions {
  /** Format; by default from the extension (.npy, .fvecs, .bvecs), anything else is raw. */
  format?: VectorFileFormat;
  /** Vector dimension: required for raw files; for the others it must match the file. */
  dim?: number;
  /**
   * Where `dim` came from, named in dimension errors. @default names.dim (the user may
   * never have given it: e.g. '"dim" in idx_cfg.json' or "the index 'docs' (dim 768)")
   */
  dimFrom?: string;
  /** Rows in a raw file (the original's --mmap-size); for the others at most the file's rows. */
  rows?: number;
  /** Raw files hold float16 (the original's --dstore-fp16). */
  fp16?: boolean;
  /** What the caller calls these options, for its errors (the CLI: its flags). @default the option names */
  names?: Partial<Record<'dim' | 'rows' | 'fp16', string>>;
}

/** An option's name in errors: the caller's (names) or the option's own. */
function nameOf(opts: VectorFileOptions, option: 'dim' | 'rows' | 'fp16'): string {
  return opts.names?.[option] ?? option;
}

export interface VectorFileInfo {
  path: string;
  format: VectorFileFormat;
  dtype: VectorDtype;
  /** Rows available. */
  rows: number;
  dim: number;
}

/** The buffer read() fills: float16 stays float16 (Uint16Array), everything else is float32. */
export type VectorBuffer = Float32Array | Uint16Array;

export class VectorFile implements VectorFileInfo {
  readonly path: string;
  readonly format: VectorFileFormat;
  readonly dtype: VectorDtype;
  readonly rows: number;
  readonly dim: number;
  /** Byte offset of row 0. */
  private readonly dataOffset: number;
  /** Bytes from one row to the next (fvecs/bvecs rows carry a 4-byte dimension header). */
  private readonly stride: number;
  private readonly fh: FileHandle;
  /** Scratch bytes for formats that need conversion (fvecs, bvecs, u8); grown on demand. */
  private scratch: Uint8Array = new Uint8Array(0);

  private constructor(fh: FileHandle, info: VectorFileInfo, dataOffset: number, stride: number) {
    this.fh = fh;
    this.path = info.path;
    this.format = info.format;
    this.dtype = info.dtype;
    this.rows = info.rows;
    this.dim = info.dim;
    this.dataOffset = dataOffset;
    this.stride = stride;
  }

  /** Opens a vector file and reads its layout (header, dimension, row count). */
  static async open(path: string, opts: VectorFileOptions = {}): Promise<VectorFile> {
    const format = opts.format ?? formatFromPath(path);
    let size: number;
    try {
      const st = await stat(path);
      if (!st.isFile()) throw new Error('not a regular file');
      size = st.size;
    } catch (err) {
      throw new DfaissError(`cannot read vector file ${path}: ${(err as Error).message}`);
    }
    if (opts.dim !== undefined && (!Number.isSafeInteger(opts.dim) || opts.dim < 1 || opts.dim > 65536)) {
      throw new ValidationError(opts.dimFrom ?? nameOf(opts, 'dim'), 'an integer from 1 to 65536', opts.dim);
    }
    if (opts.rows !== undefined && (!Number.isSafeInteger(opts.rows) || opts.rows < 0)) {
      throw new ValidationError(nameOf(opts, 'rows'), 'a non-negative number of rows', opts.rows);
    }
    const fh = await open(path, 'r');
    try {
      const layout = await readLayout(fh, path, format, size, opts);
      let rows = layout.rows;
      if (opts.rows !== undefined) {
        if (opts.rows > rows) {
          throw new ValidationError(nameOf(opts, 'rows'), `at most the ${rows} rows ${path} holds (${describeLayout(format, layout.dtype, layout.dim)})`, opts.rows);
        }
        rows = opts.rows;
      }
      return new VectorFile(fh, { path, format, dtype: layout.dtype, rows, dim: layout.dim }, layout.dataOffset, layout.stride);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** A buffer for `rows` vectors of this file's output type. */
  allocate(rows: number): VectorBuffer {
    return this.dtype === 'f16' ? new Uint16Array(rows * this.dim) : new Float32Array(rows * this.dim);
  }

  /**
   * Reads rows [start, start + count) into the front of `out` (from allocate()) and returns
   * the filled view (count * dim elements).
   */
  async read(start: number, count: number, out: VectorBuffer): Promise<VectorBuffer> {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(count) || start < 0 || count < 0 || start + count > this.rows) {
      throw new ValidationError('rows', `a range within [0, ${this.rows}) of ${this.path}`, `[${start}, ${start + count})`);
    }
    const { dim } = this;
    const n = count * dim;
    if (out.length < n) throw new ValidationError('buffer', `room for ${count} rows of ${dim}`, `${out.length} elements`);
    const view = out.subarray(0, n);
    const position = this.dataOffset + start * this.stride;
    if (this.format !== 'fvecs' && this.format !== 'bvecs' && this.dtype !== 'u8') {
      // Stored exactly as sent: read straight into the output.
      await this.readFully(new Uint8Array(view.buffer, view.byteOffset, view.byteLength), position);
      return view;
    }
    const bytes = count * this.stride;
    if (this.scratch.length < bytes) this.scratch = new Uint8Array(bytes);
    const raw = this.scratch.subarray(0, bytes);
    await this.readFully(raw, position);
    const f32 = view as Float32Array;
    if (this.format === 'npy' || this.format === 'raw') {
      for (let i = 0; i < n; i++) f32[i] = raw[i]!;
      return view;
    }
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const floats = this.format === 'fvecs' ? new Float32Array(raw.buffer, raw.byteOffset, bytes / 4) : null;
    for (let r = 0; r < count; r++) {
      const off = r * this.stride;
      const d = dv.getInt32(off, true);
      if (d !== dim) {
        throw new DfaissError(`${this.path}: row ${start + r} says dimension ${d}, the file's first row says ${dim} (corrupt or mixed-dimension file)`);
      }
      if (floats) f32.set(floats.subarray(off / 4 + 1, off / 4 + 1 + dim), r * dim);
      else for (let j = 0; j < dim; j++) f32[r * dim + j] = raw[off + 4 + j]!;
    }
    return view;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  private async readFully(target: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < target.length) {
      const { bytesRead } = await this.fh.read(target, done, target.length - done, position + done);
      if (bytesRead === 0) throw new DfaissError(`${this.path}: unexpected end of file at byte ${position + done} (was it truncated while loading?)`);
      done += bytesRead;
    }
  }
}

export function formatFromPath(path: string): VectorFileFormat {
  const ext = extname(path).toLowerCase();
  if (ext === '.npy') return 'npy';
  if (ext === '.fvecs') return 'fvecs';
  if (ext === '.bvecs') return 'bvecs';
  return 'raw';
}

interface Layout {
  dtype: VectorDtype;
  dim: number;
  rows: number;
  dataOffset: number;
  stride: number;
}

const BYTES: Record<VectorDtype, number> = { f32: 4, f16: 2, u8: 1 };

function describeLayout(format: VectorFileFormat, dtype: VectorDtype, dim: number): string {
  return `${format}, ${dtype === 'f32' ? 'float32' : dtype === 'f16' ? 'float16' : 'uint8'}, dimension ${dim}`;
}

async function readLayout(fh: FileHandle, path: string, format: VectorFileFormat, size: number, opts: VectorFileOptions): Promise<Layout> {
  const dimFrom = opts.dimFrom ?? nameOf(opts, 'dim');
  const checkDim = (dim: number, from: string): void => {
    if (opts.dim !== undefined && opts.dim !== dim) {
      throw new ValidationError(dimFrom, `${dim}, the dimension ${from} of ${path}`, opts.dim);
    }
  };
  switch (format) {
    case 'raw': {
      if (opts.dim === undefined) throw new ValidationError(nameOf(opts, 'dim'), `the vector dimension of the raw file ${path}`, undefined);
      const dtype: VectorDtype = opts.fp16 ? 'f16' : 'f32';
      const stride = opts.dim * BYTES[dtype];
      const rows = Math.floor(size / stride);
      if (opts.rows === undefined && size % stride !== 0) {
        throw new ValidationError(
          dimFrom,
          `a dimension whose row size divides the file: ${path} has ${size} bytes, not a multiple of ${stride} (${opts.dim} x ${dtype === 'f16' ? 'float16' : 'float32'}); check ${dimFrom} and ${nameOf(opts, 'fp16')}, or give ${nameOf(opts, 'rows')}`,
          opts.dim,
        );
      }
      return { dtype, dim: opts.dim, rows, dataOffset: 0, stride };
    }
    case 'npy': {
      const h = await readNpyHeader(fh, path, size);
      if (opts.fp16 && h.dtype !== 'f16') {
        throw new ValidationError(nameOf(opts, 'fp16'), `not to be given for ${path}: its header says ${h.descr}`, true);
      }
      checkDim(h.dim, 'in the .npy header');
      const stride = h.dim * BYTES[h.dtype];
      if (h.dataOffset + h.rows * stride > size) {
        throw new DfaissError(`${path}: the header promises ${h.rows} x ${h.dim} values but the file is too short (truncated?)`);
      }
      return { dtype: h.dtype, dim: h.dim, rows: h.rows, dataOffset: h.dataOffset, stride };
    }
    case 'fvecs':
    case 'bvecs': {
      if (opts.fp16) throw new ValidationError(nameOf(opts, 'fp16'), `not to be given for ${path} (${format} files hold ${format === 'fvecs' ? 'float32' : 'uint8'})`, true);
      if (size < 4) throw new DfaissError(`${path}: empty ${format} file`);
      const head = new Uint8Array(4);
      await fh.read(head, 0, 4, 0);
      const dim = new DataView(head.buffer).getInt32(0, true);
      if (dim < 1 || dim > 65536) throw new DfaissError(`${path}: first row's dimension is ${dim}: not a ${format} file?`);
      checkDim(dim, `in the first row`);
      const stride = 4 + dim * (format === 'fvecs' ? 4 : 1);
      if (size % stride !== 0) {
        throw new DfaissError(`${path}: ${size} bytes is not a whole number of ${format} rows of dimension ${dim} (${stride} bytes each)`);
      }
      return { dtype: format === 'fvecs' ? 'f32' : 'u8', dim, rows: size / stride, dataOffset: 0, stride };
    }
  }
}

/** Parses a .npy header (format versions 1-3): dtype, 2-D shape, C order. */
async function readNpyHeader(fh: FileHandle, path: string, size: number): Promise<{ dtype: VectorDtype; descr: string; rows: number; dim: number; dataOffset: number }> {
  const pre = new Uint8Array(12);
  await fh.read(pre, 0, 12, 0);
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  if (size < 12 || magic.some((b, i) => pre[i] !== b)) throw new DfaissError(`${path}: not a .npy file (bad magic)`);
  const major = pre[6]!;
  const dv = new DataView(pre.buffer);
  const [lenBytes, headerLen] = major === 1 ? [2, dv.getUint16(8, true)] : [4, dv.getUint32(8, true)];
  if (major < 1 || major > 3) throw new DfaissError(`${path}: unsupported .npy format version ${major}`);
  const start = 8 + lenBytes;
  const headerBytes = new Uint8Array(headerLen);
  await fh.read(headerBytes, 0, headerLen, start);
  const header = Buffer.from(headerBytes).toString(major === 3 ? 'utf8' : 'latin1');
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) throw new DfaissError(`${path}: cannot parse the .npy header ${JSON.stringify(header.trim())}`);
  if (fortran === 'True') throw new DfaissError(`${path}: Fortran-order arrays are not supported; save it with np.ascontiguousarray(a)`);
  const dtypes: Record<string, VectorDtype> = { '<f4': 'f32', '<f2': 'f16', '|u1': 'u8', '<u1': 'u8' };
  const dtype = dtypes[descr];
  if (!dtype) throw new DfaissError(`${path}: dtype ${descr} is not supported; use little-endian float32 ('<f4'), float16 ('<f2') or uint8`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (shape.length !== 2 || shape.some((v) => !Number.isSafeInteger(v) || v < 0) || shape[1] === 0) {
    throw new DfaissError(`${path}: expected a 2-D array (rows, dimension), the header says shape (${shapeText})`);
  }
  return { dtype, descr, rows: shape[0]!, dim: shape[1]!, dataOffset: start + headerLen };
}
