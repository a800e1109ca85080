/**
 * Remote calls in rexd (docs/CALLS.md): the call-controller manager of this
 * host's programs, the routing of local clients' calls to peers, and CALL,
 * ENTRIES_GET, CANCEL and CALL_CLI in rexd's request table. A session is admitted by any
 * grant of its requester; each call is then checked for the program and
 * function it calls (authorize, below).
 */
import type { ProgramEntry, RexConfig } from '../config/index.js';
import { Feature, type Request, type RequestTable } from '../daemon/dispatch.js';
import type { Logger } from '../daemon/log.js';
import type { PeerLink } from '../daemon/peers.js';
import type { Endpoint } from '../daemon/session.js';
import type { Decision, Requester } from '../keys/grants.js';
import type { Placement } from '../placement/index.js';
import type { Reply } from '../protocol/connection.js';
import type { Message } from '../protocol/messages.js';
import type { CallIdentity, CallManager, CallManagerOptions } from './manager.js';
import type { CallRouter } from './router.js';

/** What the call side needs of the daemon. */
export interface CallsContext {
  config: Pick<RexConfig, 'hostName' | 'programs'>;
  /** The one placement of this rexd (src/placement/, owned by the EXEC service, loaded with it): `*` calls are placed by it. */
  placement: () => Promise<Placement>;
  peers: ReadonlyMap<string, PeerLink>;
  /** The rex.rc `programs` entry called `name`, its definitions read (rexd.ts). */
  program: CallManagerOptions['programs'];
  /** The grants check (src/keys/service.ts). */
  check(who: Requester, anyProgram: boolean, fn?: string): Decision;
  log: Logger;
}

/** The call side's code: the manager of this host's controllers (closed at stop) and the router. */
export interface CallSide {
  manager: CallManager;
  router: CallRouter;
}

/** The call side of one rexd. */
export interface CallService {
  /** Its manager and router, loaded on the first call (or when rexd warms its features). */
  side: Feature<CallSide>;
  /**
   * After rexd swapped in a reloaded `programs` list (SIGHUP, Rexd.reload): what changed, and every program's
   * controllers are retired, so the next call reads its entry and definitions again (an object rebuilt in place
   * counts too); calls already admitted finish on the controllers they have.
   */
  programsReloaded(before: readonly ProgramEntry[]): ProgramsDiff;
}

/** How a reload changed the rex.rc `programs` list, by name. */
export interface ProgramsDiff {
  added: string[];
  removed: string[];
  changed: string[];
  /** Programs whose controllers (running or idle) were retired. */
  retired: string[];
}

/** Registers CALL, ENTRIES_GET and CANCEL; the call manager and router they are served by are made on first use. */
export function registerCalls(table: RequestTable, ctx: CallsContext): CallService {
  const { config, peers } = ctx;
  /** The endpoint of each connection that called: authorize() is given the connection only. */
  const endpoints = new WeakMap<object, Endpoint>();
  // rex.rc's programs, read at each use: a SIGHUP reload assigns the new list into `config`.
  const offers = (name: string): boolean => config.programs.some((p) => p.name === name);
  const side = table.feature(
    new Feature<CallSide>('calls', async () => {
      // CALL_CLI's code (the Node CLI's `rex call`) is read here too: a native `rex call` finds it warm.
      const [{ CallManager }, { CallRouter }, placement] = await Promise.all([import('./manager.js'), import('./router.js'), ctx.placement(), import('./cli.js')]);
      const manager = new CallManager({
        host: config.hostName,
        programs: ctx.program,
        offers,
        authorize: (who, program, fn) => authorize(who, program, fn),
        log: ctx.log,
      });
      const router = new CallRouter({
        manager,
        host: config.hostName,
        offers,
        placement,
        peers: () =>
          [...peers.values()].map((p) => ({
            name: p.entry.name,
            reachable: p.state.reachable,
            connect: async () => (p.connection ?? (await p.connectNow())) ?? { error: p.state.error ?? 'not connected yet' },
          })),
      });
      return { manager, router };
    }),
  );

  /** Local clients' requests may be routed to peers, peers' are served here. */
  const handle = async (m: Message, req: Request): Promise<Reply> => {
    const { from, session } = req;
    endpoints.set(from.conn, from);
    const program = session.state === 'client' ? session.program : session.requester.program;
    const identity: CallIdentity = {
      name: session.identity,
      conn: from.conn,
      ...(session.identityId ? { id: session.identityId } : {}),
      ...(program ? { program } : {}),
      address: from.address,
    };
    return (await side.get()).router.handle(m, { identity, mayForward: session.state === 'client' });
  };

  /**
   * The grants decide calls, with the called program as the requester's program and the called function
   * checked against functions=/deny= (docs/CALLS.md, Security). `fn` is undefined (or the manager's internal
   * "\0entries") for ENTRIES_GET: the program must be granted, and ENTRIES lists only the granted functions.
   */
  const authorize = (who: CallIdentity, program: string, fn?: string): true | string => {
    const s = who.conn ? endpoints.get(who.conn)?.session : undefined;
    if (s?.state === 'client') return true; // the owner, checked by uid at HELLO
    if (!s || s.state === 'pending') return `${who.name} is not authenticated`;
    const r = s.requester;
    if (s.programKey && r.program !== program) {
      return `${r.name}.${r.program} (key ${r.id}) is a program key: it may call program ${r.program} only, not ${program}`;
    }
    const d = ctx.check({ ...r, program }, false, fn === undefined || fn === '\0entries' ? undefined : fn);
    return d.ok ? true : d.reason;
  };

  // Read after the handler ran: the router is loaded then.
  const routedTarget = (m: Message & { target: string }): string => side.loaded?.router.routed.get(m) ?? m.target;
  // Calls act as the user (controllers run its programs) and may go to a peer over this host's key.
  table.register('CALL', { roles: ['client', 'peer'], auth: 'grant-any', privilege: ['user', 'host-key'], newWork: true, target: routedTarget, handler: handle });
  table.register('ENTRIES_GET', { roles: ['client', 'peer'], auth: 'grant-any', privilege: ['user', 'host-key'], newWork: true, target: routedTarget, handler: handle });
  // CANCEL ends work already admitted: it is no new work, even while the transaction log is down.
  table.register('CANCEL', { roles: ['client', 'peer'], auth: 'grant-any', privilege: ['user', 'host-key'], newWork: false, handler: handle });
  // The native front end's `rex call` (src/calls/cli.ts): the owner on the local socket only, and nothing it
  // could not do with ENTRIES_GET and CALL itself, which it sends through this table as that same client.
  table.register('CALL_CLI', {
    roles: ['client'],
    auth: 'grant-any',
    privilege: ['user', 'host-key'],
    newWork: true,
    target: (m) => m.target,
    refuse: { peer: 'CALL_CLI is served to local clients only: a remote caller sends ENTRIES_GET and CALL (docs/PROTOCOL.md 4.7.1)' },
    handler: async (m, req) => (await import('./cli.js')).serveCallCli(table, m, req),
  });
  const programsReloaded = (before: readonly ProgramEntry[]): ProgramsDiff => {
    const old = new Map(before.map((p) => [p.name, JSON.stringify(p)]));
    const now = new Map(config.programs.map((p) => [p.name, JSON.stringify(p)]));
    return {
      added: [...now.keys()].filter((n) => !old.has(n)),
      removed: [...old.keys()].filter((n) => !now.has(n)),
      changed: [...now].filter(([n, v]) => old.has(n) && old.get(n) !== v).map(([n]) => n),
      // Not loaded yet: no controller has run, the first call reads the new entries.
      retired: side.loaded?.manager.retire() ?? [],
    };
  };
  return { side, programsReloaded };
}
