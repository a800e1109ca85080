/**
 * rexd's logs: structured logs through pino (JSON lines, one field set per
 * event: `peer`, `socket`, `err`; levels from rex.rc `log-level`), and rexd's
 * side of the transaction log (src/log/txlog.ts): every authentication attempt
 * and answered request is a row, denials are rate-limited per source, and with
 * rex.rc log-fail-closed new work is refused while rows cannot be written
 * (docs/LOG.md).
 */
import { destination, pino, stdTimeFunctions, type Logger } from 'pino';
import type { LogLevel, RexConfig } from '../config/index.js';
import { LogShipper } from '../log/central.js';
import { TransactionLog, type LogEvent } from '../log/txlog.js';
import { ProtocolError } from '../protocol/frame.js';
import { DenialLog } from './admission.js';
import type { Endpoint } from './session.js';

export type { Logger };

/** A logger writing JSON lines to fd `fd` (stderr by default). */
export function createLogger(level: LogLevel, host: string, fd = 2): Logger {
  return pino({ level, base: { host, pid: process.pid }, timestamp: stdTimeFunctions.isoTime }, destination({ fd, sync: true }));
}

/** rexd's rows in the transaction log (opened at start, closed at stop). */
export class DaemonLog {
  private txlog: TransactionLog | undefined;
  private denials: DenialLog | undefined;
  private shipper: LogShipper | undefined;

  constructor(
    private readonly config: RexConfig,
    private readonly log: Logger,
  ) {}

  /**
   * Opens the transaction log `file`; with rex.rc rex-log-server, also starts sending its rows to that server,
   * as host `certHost`: the host of rexd's own certificate (never a name a peer could choose).
   */
  open(file: string, certHost: string = this.config.hostName): void {
    const { config } = this;
    const central = config.logServer !== '';
    this.txlog = new TransactionLog(file, config.hostName, {
      logger: this.log,
      retentionDays: config.logRetentionDays,
      maxBytes: config.logMaxSize,
      ...(central ? { onWritten: () => this.shipper?.nudge(), shippedId: () => (this.shipper ? this.txlog?.shippedTo(this.shipper.server) : undefined) } : {}),
    });
    if (central) {
      try {
        this.shipper = new LogShipper(config.logServer, certHost, this.txlog, { logger: this.log, where: 'rex.rc rex-log-server' });
      } catch (e) {
        // The URL was checked when rex.rc was read; this is the last guard: the local log goes on.
        this.log.error({ err: (e as Error).message }, 'transaction log server not used');
      }
    }
    this.denials = new DenialLog({ burst: config.logDenialsBurst, intervalMs: config.logDenialsInterval }, (ev, summary) => {
      this.txlog?.record(ev);
      if (summary) this.log.warn({ peer: ev.peerAddress }, ev.reason!);
    });
  }

  /** Logs one event; false when it was a denial counted for a summary row instead (then rexd's own log skips it too). */
  record(ev: LogEvent): boolean {
    try {
      // Denials are rate-limited per source and summed up (admission.ts, docs/LOG.md): a flood cannot flood the log.
      if (ev.outcome === 'denied' && this.denials) return this.denials.record(ev);
      this.txlog?.record(ev);
    } catch {
      /* never let logging break serving */
    }
    return true;
  }

  /** Logs an authorization denial of `from` and returns the DENIED error to answer with. */
  deny(from: Endpoint, reason: string, fatal = true): ProtocolError {
    const f = from.facts();
    if (this.record({ kind: 'auth', ...f, outcome: 'denied', reason })) this.log.info({ peer: f.peerAddress, identity: f.identity, id: f.identityId, reason }, 'access denied');
    return new ProtocolError('DENIED', reason, { fatal });
  }

  /**
   * rex.rc log-fail-closed: while the transaction log cannot be written, new
   * work from the TLS port is refused (the request table says which requests
   * are new work: heartbeats, membership and CANCEL are not).
   */
  refusal(): ProtocolError | undefined {
    if (this.config.logFailClosed && !this.txlog?.writableNow()) {
      return new ProtocolError('DENIED', `${this.config.hostName} refuses new work while its transaction log cannot be written (rex.rc log-fail-closed yes); try again later or on another host`, { fatal: false });
    }
    // rex.rc log-server-fail-closed: durable means committed by the log server; while rows cannot get there, no new work.
    if (this.config.logServerFailClosed && this.config.logServer !== '' && !this.shipper?.healthy) {
      return new ProtocolError('DENIED', `${this.config.hostName} refuses new work while its transaction log server cannot be reached (rex.rc log-server-fail-closed yes); try again later or on another host`, { fatal: false });
    }
    return undefined;
  }

  /** Sends what the local log holds to the log server, for at most `ms` (rexd's stop). */
  async drainCentral(ms: number): Promise<void> {
    this.txlog?.flush();
    await this.shipper?.drain(ms);
  }

  /** The central log's shipper, when rex.rc rex-log-server names one. */
  get central(): LogShipper | undefined {
    return this.shipper;
  }

  /** Writes the pending denial summaries and closes the database. */
  close(): void {
    this.denials?.close();
    // Rows not sent yet stay in the local log: the next start sends them.
    this.shipper?.close();
    this.txlog?.close();
  }
}
