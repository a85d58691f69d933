/**
 * Load progress for people: a cli-progress bar (vectors/s, ETA) on a terminal, and a plain
 * line every few seconds otherwise (log files, CI), so redirected output stays readable.
 */
import cliProgress from 'cli-progress';
import type { LoadProgress } from './load.js';

export interface ProgressReporter {
  update(p: LoadProgress): void;
  /** Prints a message without breaking the bar. */
  note(message: string): void;
  stop(): void;
}

export interface ProgressOptions {
  stream?: NodeJS.WriteStream;
  /** Draw a bar; default: when the stream is a TTY. */
  tty?: boolean;
  /** Plain mode: at most one line per this many ms (0 = every update). @default 5000 */
  intervalMs?: number;
  /** Prefix of plain lines. @default 'load' */
  label?: string;
}

export function formatRate(perSecond: number): string {
  return Math.round(perSecond).toLocaleString('en-US');
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

export function createProgressReporter(opts: ProgressOptions = {}): ProgressReporter {
  const stream = opts.stream ?? process.stderr;
  const tty = opts.tty ?? stream.isTTY === true;
  const label = opts.label ?? 'load';
  let phase: LoadProgress['phase'] = 'adding';

  if (tty) {
    const bar = new cliProgress.SingleBar(
      {
        stream,
        format: `${label} {bar} {percentage}% | {value}/{total} vectors | {speed} vectors/s | ETA {eta_formatted} | {phase}`,
        hideCursor: true,
        etaBuffer: 40,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(p) {
        const speed = formatRate(p.elapsedMs > 0 ? (p.done / p.elapsedMs) * 1000 : 0);
        if (!started) {
          bar.start(p.total, p.done, { speed, phase: p.phase });
          started = true;
        } else bar.update(p.done, { speed, phase: p.phase });
      },
      note(message) {
        if (started) bar.stop();
        started = false;
        stream.write(`${message}\n`);
      },
      stop() {
        if (started) bar.stop();
        started = false;
      },
    };
  }

  const intervalMs = opts.intervalMs ?? 5000;
  let last = -Infinity;
  let lastDone = -1;
  const line = (p: LoadProgress): void => {
    const rate = p.elapsedMs > 0 ? (p.done / p.elapsedMs) * 1000 : 0;
    const pct = p.total > 0 ? ((100 * p.done) / p.total).toFixed(1) : '100.0';
    const eta = rate > 0 ? formatDuration((p.total - p.done) / rate) : '?';
    stream.write(`${label}: ${p.done}/${p.total} vectors (${pct}%), ${formatRate(rate)} vectors/s, ETA ${eta}\n`);
    lastDone = p.done;
  };
  return {
    update(p) {
      if (p.phase !== phase) {
        phase = p.phase;
        if (p.phase === 'training') stream.write(`${label}: all vectors sent; waiting until every shard is TRAINED (training, adding buffered vectors)\n`);
        if (p.phase === 'saving') stream.write(`${label}: saving the index\n`);
        return;
      }
      const now = performance.now();
      // Always report the last batch; otherwise at most once per interval.
      if (p.phase === 'adding' && p.done !== lastDone && (p.done === p.total || now - last >= intervalMs)) {
        last = now;
        line(p);
      }
    },
    note(message) {
      stream.write(`${message}\n`);
    },
    stop() {},
  };
}
