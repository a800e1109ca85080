#!/usr/bin/env node
/**
 * `rexd`: the REX daemon. In the foreground it logs JSON lines to stderr; by
 * default it detaches, logs to <state-directory>/log/rexd.log and returns once
 * the daemon answers on its socket. `--stop` and `--status` act on the rexd of
 * the same configuration, found by its pidfile; SIGHUP makes a running rexd
 * reload its configuration (Rexd.reload).
 */
import { closeSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { LoadedConfig } from '../config/index.js';
import { daemonPaths, readPid, type DaemonPaths } from '../daemon/paths.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { toJson } from './format.js';
import { exitQuietlyOnClosedOutput, reportError, runMain } from './main.js';
import { processAlive } from '../util/proc.js';
import { isRexdProgram } from '../util/paths.js';

interface Opts {
  foreground?: boolean;
  stop?: boolean;
  status?: boolean;
  json?: boolean;
  testMode?: boolean;
  session?: boolean;
  hostController?: boolean;
  config?: string;
  set: string[];
}

function parseSets(sets: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of sets) {
    const i = s.indexOf('=');
    if (i <= 0) throw new RexError(ErrorCodes.USAGE, `--set ${s}: expected KEY=VALUE, e.g. --set log-level=debug`);
    out[s.slice(0, i).trim()] = s.slice(i + 1).trim();
  }
  return out;
}

async function load(opts: Opts): Promise<LoadedConfig> {
  const { loadConfig } = await import('../config/index.js');
  const loaded = await loadConfig({ ...(opts.config ? { file: opts.config } : {}), overrides: parseSets(opts.set) });
  // At start and at every reload: a log server's password only from a file no one else can read.
  if (loaded.config.logServer) (await import('../log/central.js')).checkServerSecret(loaded);
  return loaded;
}

async function foreground(opts: Opts): Promise<void> {
  // A SIGHUP during start-up (a `systemctl reload` racing the start) must not kill the daemon, which is
  // what Node does without a handler: it is kept and acted on once rexd serves.
  let earlyHup = false;
  const onEarlyHup = () => {
    earlyHup = true;
  };
  process.on('SIGHUP', onEarlyHup);
  // The daemon itself (calls, the program registry with its ELF/DWARF readers, TLS, the log database) is
  // loaded only here: `rexd` without --foreground, `rexd --help` and usage errors need none of it.
  const [{ createLogger }, { Rexd }] = await Promise.all([import('../daemon/log.js'), import('../daemon/rexd.js')]);
  const loaded = await load(opts);
  const log = createLogger(loaded.config.logLevel, loaded.config.hostName);
  const { enableTestMode, testSwitchesInEnvironment, TEST_SWITCHES } = await import('../util/testmode.js');
  const switches = testSwitchesInEnvironment();
  if (opts.testMode) {
    enableTestMode();
    log.warn({ switches: Object.fromEntries(switches.map((k) => [k, process.env[k]])), honoured: Object.keys(TEST_SWITCHES) }, 'TEST MODE: this rexd honours test switches that make it misbehave on purpose; never run it so for real work');
  } else if (switches.length) {
    log.warn({ ignored: switches }, 'test switches in the environment are ignored (they act only with rexd --test-mode)');
  }
  if (loaded.config.installation === 'root' && !opts.session) {
    // The root installation's privileged part (docs/ROOT.md): it serves no request itself.
    if (opts.testMode) throw new RexError(ErrorCodes.USAGE, '--test-mode is refused in the root installation: test switches make rexd misbehave on purpose', { where: 'rex.rc installation' });
    const { Monitor } = await import('../daemon/monitor.js');
    const m = new Monitor(loaded.config, { log, configFile: loaded.files[0] ?? opts.config ?? '', sets: parseSets(opts.set) });
    await m.start();
    const stopMonitor = (sig: string) => void m.stop(`received ${sig}`).then(() => process.exit(0));
    process.on('SIGTERM', () => stopMonitor('SIGTERM'));
    process.on('SIGINT', () => stopMonitor('SIGINT'));
    process.off('SIGHUP', onEarlyHup);
    process.on('SIGHUP', () => {
      log.info({ signal: 'SIGHUP' }, 'reloading the configuration');
      void m.reload(async () => (await load(opts)).config);
    });
    tellReady();
    return;
  }
  let session: import('../daemon/channel.js').SessionChannel | undefined;
  if (opts.session) {
    // A session controller, started by the monitor through rex-session: fd REX_SESSION_FD is its channel.
    const fd = Number(process.env.REX_SESSION_FD);
    if (!Number.isInteger(fd) || fd < 3) throw new RexError(ErrorCodes.USAGE, '--session is for the root rexd to start a session controller (REX_SESSION_FD names its channel)');
    const { SessionChannel } = await import('../daemon/channel.js');
    session = new SessionChannel(fd);
  }
  let hostController: { cert: import('../keys/certs.js').CertInfo } | undefined;
  if (opts.hostController) {
    // The host controller (docs/ROOT.md section 7): the monitor gives it the host key's certificate, never the key.
    if (!session) throw new RexError(ErrorCodes.USAGE, '--host-controller goes with --session (the root rexd starts it)');
    const { certInfo } = await import('../keys/certs.js');
    hostController = { cert: certInfo(Buffer.from(process.env.REX_HOST_CERT ?? '', 'base64'), 'REX_HOST_CERT (the host certificate from the monitor)') };
  }
  const d = new Rexd(loaded.config, { log, ...(session ? { session, pidFile: false } : {}), ...(hostController ? { hostController } : {}) });
  await d.start();
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'shutting down');
    d.stop(`received ${sig}`).then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // The same files and --set overrides as at start, read as they are now (docs/CONFIG.md, Reload).
  const reload = () => {
    log.info({ signal: 'SIGHUP' }, 'reloading the configuration');
    void d.reload(() => load(opts));
  };
  process.off('SIGHUP', onEarlyHup);
  process.on('SIGHUP', reload);
  if (earlyHup) reload();
  // Bad input must never take the daemon down; a bug that escapes a handler is logged loudly and the daemon exits so a supervisor restarts it clean.
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e.stack ?? String(e) }, 'uncaught exception');
    void d.stop('internal error').finally(() => process.exit(70));
  });
  tellReady();
  // Serving now: the code of exec, rfork and calls is read in the background, so that neither start-up nor the
  // first EXEC or call waits for it (docs/ARCHITECTURE.md, How rexd loads).
  void d.warm();
}

/** Tells the parent (rexd without --foreground, or rex cluster) that this rexd serves. */
function tellReady(): void {
  if (process.env.REX_READY_FD) {
    try {
      const fd = Number(process.env.REX_READY_FD);
      writeSync(fd, 'ready\n');
      closeSync(fd);
    } catch {
      /* parent gone: nothing to tell */
    }
  }
}

async function background(opts: Opts, argv: string[]): Promise<void> {
  const [{ spawn }, { RexClient }] = await Promise.all([import('node:child_process'), import('../runtime/client.js')]);
  const loaded = await load(opts);
  const paths = daemonPaths(loaded.config.stateDirectory, loaded.config.socket);
  mkdirSync(dirname(paths.logFile), { recursive: true, mode: 0o700 });
  const logFd = openSync(paths.logFile, 'a', 0o600);
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--foreground', ...argv], { detached: true, stdio: ['ignore', logFd, logFd] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const code = await Promise.race([exited, new Promise<'wait'>((r) => setTimeout(() => r('wait'), 100))]);
    if (code !== 'wait') {
      const tail = readFileSync(paths.logFile, 'utf8').trim().split('\n').slice(-3).join('\n');
      throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `rexd exited during start-up (status ${code}); last log lines:\n${tail}`, { where: paths.logFile });
    }
    try {
      const c = await RexClient.connect({ socket: paths.socket, timeoutMs: 1000 });
      c.close();
      break;
    } catch {
      if (Date.now() > deadline) throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `rexd did not answer on ${paths.socket} within 10 s`, { where: paths.logFile });
    }
  }
  child.unref();
  process.stdout.write(`rexd: host ${loaded.config.hostName} started (pid ${child.pid}), socket ${paths.socket}, log ${paths.logFile}\n`);
  process.exit(0);
}

/** LSB exit statuses (init-script actions): `status` of a daemon that is not running, and other actions on one. */
const EXIT_STATUS_NOT_RUNNING = 3;
const EXIT_NOT_RUNNING = 7;

/** How long --stop waits for the daemon to exit after SIGTERM. */
const STOP_WAIT_MS = 15_000;

/** The pid of the rexd that wrote `paths.pidFile`, if that process is alive and is a rexd (not a reused pid). */
function runningPid(paths: DaemonPaths): number | undefined {
  const pid = readPid(paths.pidFile);
  if (pid === undefined) return undefined;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.some((a) => isRexdProgram(a)) ? pid : undefined;
  } catch {
    return undefined; // gone: a pidfile left by a daemon that crashed
  }
}

async function stopDaemon(opts: Opts): Promise<number> {
  const loaded = await load(opts);
  const paths = daemonPaths(loaded.config.stateDirectory, loaded.config.socket);
  const pid = runningPid(paths);
  if (pid === undefined) {
    process.stdout.write(`rexd: not running (no live rexd in ${paths.pidFile})\n`);
    return EXIT_NOT_RUNNING;
  }
  try {
    process.kill(pid, 'SIGTERM');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') {
      process.stdout.write(`rexd: not running (pid ${pid} of ${paths.pidFile} has just exited)\n`);
      return EXIT_NOT_RUNNING;
    }
    throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `cannot signal rexd (pid ${pid}): ${(e as Error).message}`, {
      where: paths.pidFile,
      hint: 'it runs as another user: stop it as that user or as root (systemctl stop rexd for the installed service)',
    });
  }
  const deadline = Date.now() + STOP_WAIT_MS;
  while (processAlive(pid)) {
    if (Date.now() > deadline) {
      throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `rexd (pid ${pid}) was sent SIGTERM but has not exited within ${STOP_WAIT_MS / 1000} s`, {
        where: paths.logFile,
        hint: `its log says what it is waiting for; \`kill -KILL ${pid}\` ends it without a goodbye to its peers`,
      });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  process.stdout.write(`rexd: host ${loaded.config.hostName} stopped (pid ${pid})\n`);
  return 0;
}

async function showStatus(opts: Opts): Promise<number> {
  const loaded = await load(opts);
  const paths = daemonPaths(loaded.config.stateDirectory, loaded.config.socket);
  const pid = runningPid(paths);
  const host = loaded.config.hostName;
  /** What --status says, as --json prints it; the text is made from it. */
  const status: {
    host: string;
    running: boolean;
    pidFile: string;
    pid?: number;
    since?: string;
    socket?: string;
    log?: string;
    installation?: 'root';
    sessionControllers?: { user: string; pid: number }[];
    listen?: string;
    peers?: { name: string; reachable: boolean }[];
    jobs?: number;
    load?: number;
    error?: string;
  } = { host, running: pid !== undefined, pidFile: paths.pidFile };
  const print = (text: string) => process.stdout.write(opts.json ? toJson(status) : text);
  if (pid === undefined) {
    print(`rexd: host ${host} is not running (no live rexd in ${paths.pidFile})\n`);
    return EXIT_STATUS_NOT_RUNNING;
  }
  Object.assign(status, { pid, since: new Date(statSync(paths.pidFile).mtimeMs).toISOString(), socket: paths.socket, log: paths.logFile });
  const lines = [`rexd: host ${host} is running (pid ${pid}) since ${status.since}`, `  socket: ${paths.socket}`, `  log: ${paths.logFile}`];
  if (loaded.config.installation === 'root' && process.getuid?.() === 0) {
    // root is no client of a root installation (permit-root): what runs is read from /proc instead.
    const { sessionControllers } = await import('../daemon/monitor.js');
    const ctls = sessionControllers(pid);
    Object.assign(status, { installation: 'root', sessionControllers: ctls.map((c) => ({ user: c.user, pid: c.pid })) });
    lines.push('  installation: root', `  session controllers: ${ctls.length ? ctls.map((c) => `${c.user} (pid ${c.pid})`).join(', ') : 'none'}`);
    print(lines.join('\n') + '\n');
    return 0;
  }
  // As an ordinary client: what the daemon itself says (a reload or a restart may have changed what rex.rc says now).
  const { RexClient } = await import('../runtime/client.js');
  try {
    const c = await RexClient.connect({ socket: paths.socket, timeoutMs: 2000 });
    try {
      const [hosts, load] = await Promise.all([c.hosts(), c.load()]);
      const self = hosts.find((h) => h.self) ?? hosts[0];
      const addr = self?.address;
      if (addr !== undefined) {
        status.listen = `${addr.includes(':') ? `[${addr}]` : addr}:${self?.port ?? '?'}`;
        lines.push(`  listen: ${status.listen}`);
      }
      const peers = hosts.filter((h) => h !== self);
      status.peers = peers.map((h) => ({ name: h.name, reachable: h.reachable === true }));
      lines.push(`  peers: ${peers.length ? peers.map((h) => `${h.name} (${h.reachable ? 'reachable' : 'unreachable'})`).join(', ') : 'none'}`);
      Object.assign(status, { jobs: load.jobs ?? 0, load: load.load });
      lines.push(`  jobs: ${load.jobs ?? 0}, load ${load.load.toFixed(2)}`);
    } finally {
      c.close();
    }
  } catch (e) {
    status.error = `not answering on its socket: ${(e as Error).message}`;
    lines.push(`  ${status.error}`);
  }
  print(lines.join('\n') + '\n');
  return 0;
}

/**
 * rexd's options, once: commander's program is made from them, and so is the parse of the daemon's own start
 * (below). `flags` is commander's syntax; `short` and `type` are node:util parseArgs'.
 */
const OPTIONS = {
  foreground: { flags: '-f, --foreground', short: 'f', type: 'boolean', help: 'stay in the foreground and log JSON lines to stderr' },
  stop: { flags: '--stop', type: 'boolean', help: 'stop the running rexd of this configuration and wait until it has exited (exit status 7 if none runs)' },
  status: { flags: '--status', type: 'boolean', help: 'say whether the rexd of this configuration runs, and how (exit status 3 if it does not)' },
  json: { flags: '--json', type: 'boolean', help: 'with --status: print it as JSON' },
  config: { flags: '-c, --config <file>', short: 'c', type: 'string', help: 'rex.rc to use (default: ./rex.rc, ~/rex.rc, $REX_ROOT/etc/rex.rc)' },
  set: { flags: '-s, --set <key=value>', short: 's', type: 'string', multiple: true, help: 'override one rex.rc key (repeatable)' },
  'test-mode': { flags: '--test-mode', type: 'boolean', hidden: true, help: "honour REX's test switches (REX_EXEC_TEST_HIDE, REX_TEST_*): for REX's own tests only" },
  session: { flags: '--session', type: 'boolean', hidden: true, help: 'run as a session controller of the root rexd (started by it, never by hand: docs/ROOT.md)' },
  'host-controller': { flags: '--host-controller', type: 'boolean', hidden: true, help: "with --session: run as the root rexd's host controller (started by it as rex.rc host-user, never by hand: docs/ROOT.md section 7)" },
} as const;

async function run(opts: Opts): Promise<void> {
  if (opts.stop && opts.status) throw new RexError(ErrorCodes.USAGE, '--stop and --status go alone');
  if (opts.json && !opts.status) throw new RexError(ErrorCodes.USAGE, '--json goes with --status');
  if (opts.stop) process.exitCode = await stopDaemon(opts);
  else if (opts.status) process.exitCode = await showStatus(opts);
  else if (opts.foreground || opts.session) await foreground(opts);
  else await background(opts, process.argv.slice(2));
}

/**
 * The daemon's own start, `rexd --foreground [-c FILE] [-s KEY=VALUE]... [--test-mode]` (what systemd, `rex cluster`
 * and a detaching rexd run) or a session controller's, `rexd --session ...` (what the root installation's monitor runs), parsed strictly by node:util: rexd's start-up does not load commander (some 10 ms:
 * docs/ARCHITECTURE.md, How rexd loads). Undefined for any other command line, which commander parses: help,
 * --stop, --status, the detaching start, and every usage error with its message.
 */
function daemonStart(argv: string[]): Opts | undefined {
  try {
    const { values } = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false });
    if (!(values.foreground || values.session) || values.stop || values.status) return undefined;
    return { foreground: true, set: values.set ?? [], ...(values.config !== undefined ? { config: values.config } : {}), ...(values['test-mode'] ? { testMode: true } : {}), ...(values.session ? { session: true } : {}), ...(values['host-controller'] ? { hostController: true } : {}) };
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  const start = daemonStart(process.argv.slice(2));
  if (start) {
    exitQuietlyOnClosedOutput();
    await run(start);
    return;
  }
  const { Command, Option } = await import('commander');
  const program = new Command('rexd').description('REX daemon: serves this host to the cluster and local REX clients');
  for (const o of Object.values(OPTIONS)) {
    const opt = new Option(o.flags, o.help);
    if ('multiple' in o) opt.default([]).argParser((v: string, prev: string[]) => [...prev, v]);
    if ('hidden' in o) opt.hideHelp();
    program.addOption(opt);
  }
  await runMain(program.action(run));
}

// No top-level await: rexd's bundle is CommonJS, run through the code cache (src/cli/launch.cts).
main().catch((e: unknown) => {
  process.exitCode = reportError('rexd', e);
});
