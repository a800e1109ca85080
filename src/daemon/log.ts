/**
 * Structured logs for rexd: JSON lines through pino, one field set per event
 * (`peer`, `socket`, `err`), levels from rex.rc `log-level`.
 */
import { destination, pino, stdTimeFunctions, type Logger } from 'pino';
import type { LogLevel } from '../config/index.js';

export type { Logger };

/** A logger writing JSON lines to fd `fd` (stderr by default). */
export function createLogger(level: LogLevel, host: string, fd = 2): Logger {
  return pino({ level, base: { host, pid: process.pid }, timestamp: stdTimeFunctions.isoTime }, destination({ fd, sync: true }));
}
