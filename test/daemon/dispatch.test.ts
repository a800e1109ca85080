/**
 * rexd's request table (src/daemon/dispatch.ts), built by the same registration
 * calls rexd makes: which session states may send each request, how a peer's is
 * authorized, what its handler needs of the process (the line privilege
 * separation will cut along), and the errors of a request that is unknown or
 * not allowed from a state.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { registerCalls } from '../../src/calls/service.js';
import { defaultConfig } from '../../src/config/index.js';
import { Feature, RequestTable } from '../../src/daemon/dispatch.js';
import { LoadMeter, registerLoad } from '../../src/daemon/load.js';
import { DaemonLog } from '../../src/daemon/log.js';
import type { PeerLink } from '../../src/daemon/peers.js';
import { Endpoint, pendingLocal, pendingTls, toClient, toPeer, toRestricted, type Authenticated, type Session } from '../../src/daemon/session.js';
import { registerExec } from '../../src/exec/executor/requests.js';
import { ExecService } from '../../src/exec/executor/service.js';
import { registerRfork } from '../../src/rfork/requests.js';
import { certInfo } from '../../src/keys/certs.js';
import type { Decision, Requester } from '../../src/keys/grants.js';
import { KeysService } from '../../src/keys/service.js';
import { KeyStore } from '../../src/keys/store.js';
import type { Reply } from '../../src/protocol/connection.js';
import { ProtocolError } from '../../src/protocol/frame.js';
import type { Message } from '../../src/protocol/messages.js';

const dir = mkdtempSync(join(tmpdir(), 'rex-dispatch-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = { ...defaultConfig({ home: dir, systemHostName: 'alpha', user: 'ann' }, 'alpha'), stateDirectory: join(dir, 'state') };
const log = pino({ level: 'silent' });

/** The table as rexd builds it, with `decide` as the grants. */
function table(decide: (who: Requester, anyProgram: boolean) => Decision = () => ({ ok: false, reason: 'no grant' })): { t: RequestTable; served: object[] } {
  const txlog = new DaemonLog(config, log);
  const served: object[] = [];
  const t = new RequestTable({ check: decide, deny: (from, reason, fatal) => txlog.deny(from, reason, fatal), logRefusal: () => undefined, record: (ev) => void served.push(ev), logHeartbeats: false });
  const meter = new LoadMeter('alpha');
  const peers = new Map<string, PeerLink>();
  const store = new KeyStore(config.stateDirectory);
  const keys = new KeysService({ config, store, name: 'alpha.ann', own: () => ({ id: 'k-own' }) as never, log, txlog, sessions: new Set() });
  registerLoad(t, { config, meter, peers });
  keys.register(t);
  // rexd loads its EXEC service on first use (a Feature); here it is made at once.
  const exec = t.feature(new Feature('exec', async () => new ExecService({ hostName: 'alpha', tempDirectory: dir, stateDirectory: config.stateDirectory, socket: join(dir, 'sock'), meter, log }, peers)));
  registerExec(t, exec, config, 'alpha.ann');
  registerRfork(t, exec, config, 'alpha.ann');
  registerCalls(t, { config, placement: async () => (await exec.get()).placer, peers, program: () => undefined, check: decide, log });
  return { t, served };
}

function endpoint(s: Session): Endpoint {
  const e = new Endpoint(s.transport === 'local' ? 'local' : '192.0.2.7', s);
  e.conn = { peer: undefined } as never; // handlers below that are reached do not use the connection
  return e;
}

const { certPem } = await new KeyStore(join(dir, 'beta')).create('beta.ann');
const cert = certInfo(Buffer.from(certPem), 'test certificate');
const auth: Authenticated = { identity: 'beta.ann', cert, requester: { id: cert.id, name: 'beta.ann', address: '192.0.2.7' }, programKey: false };
const client = () => endpoint(toClient(pendingLocal('alpha.ann', 'alpha', 4242), 'alpha.ann'));
const peer = () => endpoint(toPeer(pendingTls(cert), { ...auth, known: { name: 'beta.ann', id: cert.id, certPem, file: '' } }));
const restricted = () => endpoint(toRestricted(pendingTls(cert), auth, 'unknown key (test)'));

async function refusal(p: Promise<Reply>): Promise<ProtocolError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(ProtocolError);
  return e as ProtocolError;
}

describe('the request table', () => {
  it('lists the requests rexd serves with who may send each, its authorization and its privilege', () => {
    // Containing, not equal: a new request is one entry in its feature's module, not an edit here too.
    expect(table().t.describe()).toEqual(expect.arrayContaining([
      { type: 'LOAD_GET', roles: ['client', 'peer'], auth: 'grant-any', privilege: [], newWork: false },
      { type: 'HOSTS_GET', roles: ['client', 'peer'], auth: 'grant-any', privilege: [], newWork: false },
      { type: 'PING', roles: ['client', 'peer'], auth: 'grant', privilege: ['host-key'], newWork: true },
      { type: 'ENROLL', roles: ['restricted', 'peer'], auth: 'handler', privilege: ['key-store'], newWork: true },
      { type: 'EXEC', roles: ['client', 'peer'], auth: 'grant', privilege: ['user', 'host-key'], newWork: true },
      { type: 'CALL', roles: ['client', 'peer'], auth: 'grant-any', privilege: ['user', 'host-key'], newWork: true },
      { type: 'ENTRIES_GET', roles: ['client', 'peer'], auth: 'grant-any', privilege: ['user', 'host-key'], newWork: true },
      { type: 'CANCEL', roles: ['client', 'peer'], auth: 'grant-any', privilege: ['user', 'host-key'], newWork: false },
    ]));
  });

  it('takes one entry per message type', () => {
    const { t } = table();
    expect(() => t.register('PING', { roles: ['client'], auth: 'grant', privilege: [], newWork: false, handler: () => ({ type: 'PONG' }) })).toThrow(/PING is registered twice/);
  });

  it('answers a type with no entry UNSUPPORTED, from the owner and from a peer alike', async () => {
    const { t } = table(() => ({ ok: true, grant: {} as never }));
    for (const from of [client(), peer()]) {
      const e = await refusal(t.serve(from, { type: 'DATA', stream: 5, fd: 0 } as Message));
      expect(e).toMatchObject({ proto: 'UNSUPPORTED', fatal: false, message: 'DATA is not a request rexd serves' });
    }
  });

  it('tells a session that may only ENROLL its reason, and closes it, whatever else it sends', async () => {
    const { t } = table();
    for (const m of [{ type: 'LOAD_GET', stream: 1 }, { type: 'DATA', stream: 3, fd: 0 }] as Message[]) {
      const e = await refusal(t.serve(restricted(), m));
      expect(e).toMatchObject({ proto: 'DENIED', fatal: true, message: 'unknown key (test)' });
    }
  });

  it('refuses ENROLL on the local socket with the reason', async () => {
    const e = await refusal(table().t.serve(client(), { type: 'ENROLL', stream: 1 }));
    expect(e).toMatchObject({ proto: 'BAD_REQUEST', fatal: false, message: 'ENROLL is served on the TLS port only (rex_key --distribute)' });
  });

  it("checks a peer's grant before the handler: for its forwarded program where the entry says so, any grant for load", async () => {
    const asked: [string | undefined, boolean][] = [];
    const { t, served } = table((who, anyProgram) => {
      asked.push([who.program, anyProgram]);
      return { ok: false, reason: `no grant for ${who.program ?? 'any program'}` };
    });
    const from = peer();
    const m: Message = { type: 'PING', stream: 1, program: 'render' };
    expect(await refusal(t.serve(from, m))).toMatchObject({ proto: 'DENIED', fatal: false, message: 'no grant for render' });
    expect(await refusal(t.serve(from, { type: 'HOSTS_GET', stream: 3 }))).toMatchObject({ proto: 'DENIED', message: 'no grant for any program' });
    expect(asked).toEqual([
      ['render', false],
      [undefined, true],
    ]);
    // The log row of the forwarded request names the program it was made for.
    t.served(from, { msg: m, requestBytes: 20, responseBytes: 40, ms: 1, error: new ProtocolError('DENIED', 'no grant for render', { fatal: false }) });
    expect(served).toEqual([expect.objectContaining({ kind: 'transaction', identity: 'beta.ann.render', identityId: cert.id, fromHost: 'beta', messageType: 'PING', outcome: 'denied' })]);
  });

  it('serves the owner without a grants check, and logs heartbeats only when they fail', async () => {
    const { t, served } = table(() => {
      throw new Error('the owner is not checked against the grants');
    });
    const from = client();
    const m: Message = { type: 'LOAD_GET', stream: 1 };
    expect(await t.serve(from, m)).toMatchObject({ type: 'LOAD', host: 'alpha' });
    expect(await t.serve(from, { type: 'PING', stream: 3 })).toMatchObject({ type: 'PONG', host: 'alpha', hops: 0 });
    t.served(from, { msg: m, requestBytes: 12, responseBytes: 80, ms: 1 });
    expect(served).toEqual([]);
  });
});
