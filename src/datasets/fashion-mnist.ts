/**
 * Fashion-MNIST from Debian's `dataset-fashion-mnist` package: 60k train + 10k test
 * images of 28x28 = 784 pixels, read as float32 vectors scaled to [0, 1].
 */
import { existsSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';
export const FASHION_MNIST_DIM = 784;

export function fashionMnistAvailable(dir = FASHION_MNIST_DIR): boolean {
  return existsSync(join(dir, 'train-images-idx3-ubyte.gz'));
}

/** Reads an IDX3 image file (optionally gzipped) into a row-major Float32Array. */
export function readIdxImages(path: string, limit = Infinity): { n: number; dim: number; data: Float32Array } {
  let raw = readFileSync(path);
  if (raw[0] === 0x1f && raw[1] === 0x8b) raw = gunzipSync(raw);
  const magic = raw.readUInt32BE(0);
  if (magic !== 0x00000803) throw new Error(`${path}: not an IDX3 ubyte image file (magic 0x${magic.toString(16)})`);
  const count = raw.readUInt32BE(4);
  const dim = raw.readUInt32BE(8) * raw.readUInt32BE(12);
  const n = Math.min(count, limit);
  const data = new Float32Array(n * dim);
  for (let i = 0; i < n * dim; i++) data[i] = raw[16 + i]! / 255;
  return { n, dim, data };
}

/** The train split (60k x 784) and test split (10k x 784), optionally truncated. */
export function loadFashionMnist(opts: { dir?: string; trainLimit?: number; testLimit?: number } = {}): {
  dim: number;
  train: Float32Array;
  test: Float32Array;
} {
  const dir = opts.dir ?? FASHION_MNIST_DIR;
  const train = readIdxImages(join(dir, 'train-images-idx3-ubyte.gz'), opts.trainLimit);
  const test = readIdxImages(join(dir, 't10k-images-idx3-ubyte.gz'), opts.testLimit);
  return { dim: train.dim, train: train.data, test: test.data };
}

/** The ten Fashion-MNIST classes, by label. */
export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'] as const;

/** Reads an IDX1 label file (optionally gzipped): one byte per item. */
export function readIdxLabels(path: string, limit = Infinity): Uint8Array {
  let raw = readFileSync(path);
  if (raw[0] === 0x1f && raw[1] === 0x8b) raw = gunzipSync(raw);
  const magic = raw.readUInt32BE(0);
  if (magic !== 0x00000801) throw new Error(`${path}: not an IDX1 ubyte label file (magic 0x${magic.toString(16)})`);
  const n = Math.min(raw.readUInt32BE(4), limit);
  return Uint8Array.from(raw.subarray(8, 8 + n));
}

/** Train and test labels (0-9, see FASHION_MNIST_CLASSES), optionally truncated like loadFashionMnist. */
export function loadFashionMnistLabels(opts: { dir?: string; trainLimit?: number; testLimit?: number } = {}): { train: Uint8Array; test: Uint8Array } {
  const dir = opts.dir ?? FASHION_MNIST_DIR;
  return {
    train: readIdxLabels(join(dir, 'train-labels-idx1-ubyte.gz'), opts.trainLimit),
    test: readIdxLabels(join(dir, 't10k-labels-idx1-ubyte.gz'), opts.testLimit),
  };
}
