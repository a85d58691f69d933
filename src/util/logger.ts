/**
 * Structured logs (pino) on stderr. Level from DFAISS_LOG_LEVEL (default 'info').
 * Per-request lines are 'debug' only: the original wrote five INFO lines per call.
 * Format from DFAISS_LOG_FORMAT (the CLI's --log-format sets it, so servers started by a
 * launcher inherit it): 'json' (one JSON object a line, epoch-ms times, for log shippers),
 * 'pretty' (one readable line per event with local ISO times, via pino-pretty), or 'auto'
 * (the default: pretty when stderr is a terminal, JSON when it is piped or redirected).
 */
import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';
import type PinoPretty from 'pino-pretty';

// pino-pretty only when logs are pretty: a server whose stderr is a pipe never loads it
// (about 1 MiB of V8 heap per process; issue 15 item 3).
const require = createRequire(import.meta.url);

export type { Logger };

export const LOG_FORMATS = ['auto', 'pretty', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** True when logs should be pretty for this format and stderr. */
export function usePretty(format: string = process.env.DFAISS_LOG_FORMAT ?? 'auto'): boolean {
  return format === 'pretty' || (format !== 'json' && process.stderr.isTTY === true);
}

export function createLogger(bindings: Record<string, unknown> = {}, level = process.env.DFAISS_LOG_LEVEL ?? 'info', format?: string): Logger {
  const dest: DestinationStream = usePretty(format)
    ? (require('pino-pretty') as typeof PinoPretty)({
        destination: 2,
        sync: true, // a line logged just before process.exit() must not be lost
        translateTime: "SYS:yyyy-mm-dd'T'HH:MM:ss.lo", // local time with its UTC offset
        ignore: 'pid,hostname',
        colorize: process.stderr.isTTY === true,
        singleLine: true,
      })
    : pino.destination({ fd: 2, sync: false });
  return pino({ level, base: { pid: process.pid, ...bindings } }, dest);
}

/** A logger that drops everything (library use without logs). */
export const silentLogger: Logger = pino({ level: 'silent' });

/** What exitAfterFlush needs of the destination (a SonicBoom, for both formats). */
interface FlushableStream {
  writing?: boolean;
  flushSync?: () => void;
  once(event: 'drain' | 'error', fn: () => void): unknown;
}

/**
 * Exits once the log lines in flight are written or their write failed (at most 1 s).
 * pino's exit hook writes what is left with SonicBoom's flushSync, which retries a broken
 * pipe forever: a server whose stderr reader had gone hung on SIGTERM. Waiting for the write
 * lets the EPIPE arrive as an event (pino then turns the stream off); the hook is disarmed
 * because nothing is left for it to write.
 */
export function exitAfterFlush(logger: Logger, code: number): void {
  const dest = (logger as unknown as Record<symbol, FlushableStream | undefined>)[pino.symbols.streamSym];
  const exit = (): void => {
    if (dest && typeof dest.flushSync === 'function') dest.flushSync = () => {};
    process.exit(code);
  };
  if (!dest?.writing) return exit();
  setTimeout(exit, 1000).unref();
  dest.once('drain', exit);
  dest.once('error', exit);
}
