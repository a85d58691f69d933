/**
 * Structured logs (pino, JSON lines on stderr). Level from DFAISS_LOG_LEVEL (default
 * 'info'). Per-request lines are 'debug' only: the original wrote five INFO lines per call.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(bindings: Record<string, unknown> = {}, level = process.env.DFAISS_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { pid: process.pid, ...bindings } }, pino.destination({ fd: 2, sync: false }));
}

/** A logger that drops everything (library use without logs). */
export const silentLogger: Logger = pino({ level: 'silent' });
