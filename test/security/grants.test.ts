/**
 * The negative matrix of issue 12, grants: what a requester granted only one
 * program (or only some functions of it) may do on a real rexd, over its TLS
 * port and through a peer rexd. Each refusal is checked for its message (who,
 * which program, which path or function, how to grant it) and for its row in
 * the transaction log; what is granted is checked to still work.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { addGrant, invite, revokeGrants } from '../../src/keys/admin.js';
import { KeyStore, type OwnIdentity } from '../../src/keys/store.js';
import { pinKnownHost } from '../../src/keys/tls.js';
import { queryLog, type LogRow } from '../../src/log/txlog.js';
import type { StreamHandle } from '../../src/protocol/connection.js';
import type { MessageOf } from '../../src/protocol/messages.js';
import { RexClient } from '../../src/runtime/client.js';
import { distBin } from '../../src/util/paths.js';
import { buildLibrary, writeXml } from '../calls/helpers.js';
import { startCluster } from '../helpers/cluster.js';
import { Outsiders, type Outsider } from '../helpers/outsiders.js';

const run = promisify(execFile);

let cluster: LocalCluster;
let stop: () => Promise<void>;
let tmp: string;
let users: Outsiders;
/** The demo program's own executable, a symlink to it through `..`, and a symlink to /bin/sh named like it. */
let demoExe: string;
let evilDemo: string;
let envExe: string;
let beta: { store: KeyStore; host: string; port: number; logDb: string; entry: { name: string; address: string; port: number }; identity: string };

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'rex-sec-grants-'));
  users = new Outsiders(tmp);
  const lib = buildLibrary(tmp);
  const xml = writeXml(tmp, lib);
  mkdirSync(join(tmp, 'bin'));
  demoExe = join(tmp, 'bin', 'demo');
  writeFileSync(demoExe, '#!/bin/sh\necho "demo ran: $*"\n');
  chmodSync(demoExe, 0o755);
  envExe = join(tmp, 'bin', 'demo-env');
  writeFileSync(envExe, '#!/bin/bash\nenv | sort\n');
  chmodSync(envExe, 0o755);
  mkdirSync(join(tmp, 'evil'));
  evilDemo = join(tmp, 'evil', 'demo');
  symlinkSync('/bin/sh', evilDemo);
  ({ cluster, stop } = await startCluster(2, {
    netns: false,
    rc: [`programs : calltest=${lib}:${xml}, demo=${lib}:${xml} executables=${demoExe}:${envExe}, noexec=${lib}:${xml}`],
  }));
  await cluster.waitAllReachable();
  const b = cluster.host('beta');
  beta = { store: new KeyStore(b.stateDir), host: b.address, port: b.port, logDb: join(b.stateDir, 'rex-log.sqlite'), entry: { name: 'beta', address: b.address, port: b.port }, identity: b.identity };
}, 120_000);

afterAll(async () => {
  await stop?.();
  rmSync(tmp, { recursive: true, force: true });
});

/** A user elsewhere whose key `name` beta enrolled through a real invite token. */
async function enrolled(name: string): Promise<Outsider> {
  const { store, own } = await users.enrolled(name, { store: beta.store, name: beta.identity, entry: beta.entry });
  return { store, own };
}

function connect(who: { store: KeyStore; own: OwnIdentity }, program?: string): Promise<RexClient> {
  return RexClient.connectRemote({ host: beta.host, port: beta.port, own: who.own, pin: pinKnownHost(who.store, 'beta'), ...(program ? { program } : {}) });
}

type ExecFields = Partial<Omit<MessageOf<'EXEC'>, 'type' | 'stream'>>;

/** Sends one EXEC on `c` and collects its output; rejects with the refusal (ERROR on the stream). */
function exec(c: RexClient, path: string, fields: ExecFields = {}): Promise<{ code?: number; out: string }> {
  return new Promise((resolve, reject) => {
    let out = '';
    const h: StreamHandle = c.conn.openStream(
      { type: 'EXEC', path, argv: [path], window: 1 << 20, ...fields },
      {
        onMessage: (m) => {
          if (m.type === 'DATA' && m.data && m.data.byteLength > 0) {
            out += Buffer.from(m.data).toString('utf8');
            h.send({ type: 'WINDOW_UPDATE', increment: m.data.byteLength });
          }
          if (m.type === 'EXIT') resolve({ ...(m.code !== undefined ? { code: m.code } : {}), out });
        },
        onClose: (e) => {
          if (e) reject(e);
        },
      },
    );
  });
}

/** Beta's log rows about key `id` once `want` holds for them (rows are written in batches). */
async function rowsOf(id: string, want: (rows: LogRow[]) => boolean): Promise<LogRow[]> {
  let rows: LogRow[] = [];
  await vi.waitFor(
    () => {
      rows = queryLog(beta.logDb, { identity: id, limit: 1000 });
      if (!want(rows)) throw new Error(`log rows of ${id} not there yet: ${JSON.stringify(rows.map((r) => [r.kind, r.message_type, r.target, r.outcome]))}`);
    },
    { timeout: 10_000, interval: 50 },
  );
  return rows;
}

const denied = (type: string, target: string, reason: RegExp) => (r: LogRow) => r.kind === 'transaction' && r.message_type === type && r.target === target && r.outcome === 'denied' && reason.test(r.reason ?? '');

describe('EXEC under a program grant', () => {
  it('runs only the program\'s executables: /bin/sh and a symlink to it named like the program are refused, the program\'s own executable runs', async () => {
    const pat = await enrolled('pat.root');
    addGrant(beta.store, 'pat.root', { program: 'demo' });
    const c = await connect(pat, 'demo');
    try {
      await expect(exec(c, '/bin/sh', { argv: ['sh', '-c', 'cat /etc/shadow'] })).rejects.toThrow(
        new RegExp(`DENIED: EXEC of /bin/sh refused: pat\\.root\\.demo \\(key ${pat.own.id}\\) is granted only program demo on beta\\.root, and /bin/sh is not one of its executables \\(${demoExe}, ${envExe}\\); to allow it, add it to executables= of the programs entry demo in rex\\.rc there`),
      );
      await expect(exec(c, evilDemo, { argv: ['demo', '-c', 'id'] })).rejects.toThrow(`EXEC of ${evilDemo} refused`);
      await expect(exec(c, '/bin/../bin/sh', { argv: ['sh', '-c', 'id'] })).rejects.toThrow('EXEC of /bin/../bin/sh refused');
      // A bare name is looked up in the client's PATH, and what it finds must still be one of the executables.
      await expect(exec(c, 'demo', { env: [`PATH=${join(tmp, 'evil')}`] })).rejects.toThrow('EXEC of demo refused');
      // A path that does not exist is refused the same way: the answer says nothing about beta's files.
      await expect(exec(c, '/no/such/file')).rejects.toThrow('EXEC of /no/such/file refused');
      expect(await exec(c, demoExe, { argv: ['demo', 'one'] })).toEqual({ code: 0, out: 'demo ran: one\n' });
      expect(await exec(c, join(tmp, 'evil', '..', 'bin', 'demo'), { argv: ['demo', 'two'] })).toEqual({ code: 0, out: 'demo ran: two\n' });
      // The program gets LANG/LC_*/TERM of the client's environment and nothing else: no exported bash function, no BASH_ENV.
      const seen = await exec(c, envExe, { env: ['LANG=C.UTF-8', 'LC_TIME=C', 'FOO=bar', 'BASH_FUNC_sort%%=() { /bin/cat /etc/hostname; }', 'BASH_ENV=/etc/hostname', 'LD_LIBRARY_PATH=/tmp', 'PATH=/tmp'] });
      expect(seen.code).toBe(0);
      expect(seen.out).toMatch(/^LANG=C\.UTF-8$/m);
      expect(seen.out).toMatch(/^LC_TIME=C$/m);
      expect(seen.out).toMatch(/^PATH=\/usr\/local\/bin:\/usr\/bin:\/bin$/m);
      expect(seen.out).not.toMatch(/FOO|BASH_FUNC|BASH_ENV|LD_LIBRARY_PATH/);
      expect(await exec(c, 'demo', { argv: ['demo', 'three'], env: [`PATH=${join(tmp, 'bin')}`] })).toEqual({ code: 0, out: 'demo ran: three\n' });
      // A hash naming other content does not make beta fetch and run the client's file: its own executable runs.
      const other = createHash('sha256').update('#!/bin/sh\ncat /etc/shadow\n').digest();
      expect(await exec(c, demoExe, { argv: ['demo', 'four'], sha256: other })).toEqual({ code: 0, out: 'demo ran: four\n' });
    } finally {
      c.close();
    }
    const rows = await rowsOf(pat.own.id, (rs) => rs.filter((r) => r.message_type === 'EXEC').length >= 10);
    expect(rows.find(denied('EXEC', '/bin/sh', /pat\.root\.demo .* is granted only program demo on beta\.root, and \/bin\/sh is not one of its executables/))).toMatchObject({ identity: 'pat.root.demo', identity_id: pat.own.id });
    expect(rows.some(denied('EXEC', evilDemo, /is not one of its executables/))).toBe(true);
    expect(rows.some(denied('EXEC', '/bin/../bin/sh', /is not one of its executables/))).toBe(true);
    expect(rows.filter((r) => r.message_type === 'EXEC' && r.outcome === 'ok').map((r) => r.target)).toEqual(expect.arrayContaining([demoExe, 'demo']));
    expect(rows.filter((r) => r.message_type === 'EXEC' && r.outcome === 'ok')).toHaveLength(5);
  }, 60_000);

  it('refuses an rfork image under a program grant', async () => {
    const quinn = await enrolled('quinn.root');
    addGrant(beta.store, 'quinn.root', { program: 'demo' });
    const c = await connect(quinn, 'demo');
    try {
      await expect(c.conn.request({ type: 'RFORK', path: '/proc/1/fd/3', imageData: Buffer.from('not even an image') }, 20_000)).rejects.toThrow(
        `DENIED: RFORK refused: quinn.root.demo (key ${quinn.own.id}) is granted only program demo on beta.root, and an image cannot be tied to that program's executables; rfork needs a grant for all programs (rex_key --grant quinn.root without --program)`,
      );
    } finally {
      c.close();
    }
    const rows = await rowsOf(quinn.own.id, (rs) => rs.some((r) => r.message_type === 'RFORK'));
    expect(rows.find(denied('RFORK', 'rfork image', /RFORK refused: quinn\.root\.demo/))).toBeDefined();
    expect(rows.some((r) => r.kind === 'transaction' && r.outcome === 'ok')).toBe(false);
  }, 30_000);

  it('a program with no executables, or no rex.rc entry, runs nothing and the refusal says what to add to rex.rc', async () => {
    const ruth = await enrolled('ruth.root');
    addGrant(beta.store, 'ruth.root', { program: 'noexec' });
    addGrant(beta.store, 'ruth.root', { program: 'ghost' });
    const a = await connect(ruth, 'noexec');
    const b = await connect(ruth, 'ghost');
    try {
      await expect(exec(a, demoExe)).rejects.toThrow(`is granted only program noexec on beta.root, whose rex.rc programs entry noexec lists no executables; add executables=/path/to/noexec to that entry to let it run them`);
      await expect(exec(b, demoExe)).rejects.toThrow(`is granted only program ghost on beta.root, whose rex.rc has no programs entry ghost; to let it run the program, add one with its executables there (programs : ghost=... executables=/path/to/ghost)`);
    } finally {
      a.close();
      b.close();
    }
    const rows = await rowsOf(ruth.own.id, (rs) => rs.filter((r) => r.message_type === 'EXEC').length >= 2);
    expect(rows.find(denied('EXEC', demoExe, /lists no executables/))).toMatchObject({ identity: 'ruth.root.noexec' });
    expect(rows.find(denied('EXEC', demoExe, /has no programs entry ghost/))).toMatchObject({ identity: 'ruth.root.ghost' });
  }, 30_000);

  it('a program key is limited to its program\'s executables even with a grant for all programs', async () => {
    const sam = await enrolled('sam.root.demo');
    addGrant(beta.store, 'sam.root');
    const c = await connect(sam, 'shell'); // the key says demo; the HELLO claim is ignored
    try {
      await expect(exec(c, '/bin/sh', { argv: ['sh', '-c', 'id'] })).rejects.toThrow(`EXEC of /bin/sh refused: sam.root.demo (key ${sam.own.id}) is granted only program demo`);
      expect(await exec(c, demoExe, { argv: ['demo', 'key'] })).toEqual({ code: 0, out: 'demo ran: key\n' });
      // Nor can it call another program than its own.
      await expect(c.call('beta.calltest.neg32', Uint8Array.of(1, 0, 0, 0))).rejects.toThrow(`DENIED: beta.calltest.neg32: sam.root.demo (key ${sam.own.id}) is a program key: it may call program demo only, not calltest`);
    } finally {
      c.close();
    }
    const rows = await rowsOf(sam.own.id, (rs) => rs.some((r) => r.message_type === 'CALL') && rs.filter((r) => r.message_type === 'EXEC').length >= 2);
    expect(rows.some(denied('EXEC', '/bin/sh', /is granted only program demo/))).toBe(true);
    expect(rows.some(denied('CALL', 'beta.calltest.neg32', /is a program key/))).toBe(true);
  }, 30_000);

  it('a grant for all programs keeps running anything', async () => {
    const tess = await enrolled('tess.root');
    addGrant(beta.store, 'tess.root', { program: 'demo' });
    addGrant(beta.store, 'tess.root');
    const c = await connect(tess, 'demo');
    try {
      expect(await exec(c, '/bin/sh', { argv: ['sh', '-c', 'echo free'] })).toEqual({ code: 0, out: 'free\n' });
    } finally {
      c.close();
    }
    const rows = await rowsOf(tess.own.id, (rs) => rs.some((r) => r.message_type === 'EXEC'));
    expect(rows.find((r) => r.message_type === 'EXEC')).toMatchObject({ target: '/bin/sh', outcome: 'ok' });
  }, 30_000);

  it('a peer rexd forwarding its local client\'s program gets the same limit', async () => {
    const alpha = cluster.host('alpha');
    revokeGrants(beta.store, alpha.identity);
    addGrant(beta.store, alpha.identity, { program: 'demo' });
    try {
      const c = await RexClient.connect({ socket: alpha.socket, program: 'demo' });
      try {
        await expect(exec(c, '/bin/sh', { argv: ['sh', '-c', 'cat /etc/shadow'], host: 'beta' })).rejects.toThrow(`EXEC of /bin/sh refused: ${alpha.identity}.demo (key ${alpha.id}) is granted only program demo on beta.root`);
        expect(await exec(c, demoExe, { argv: ['demo', 'relayed'], host: 'beta' })).toEqual({ code: 0, out: 'demo ran: relayed\n' });
      } finally {
        c.close();
      }
      const other = await RexClient.connect({ socket: alpha.socket, program: 'other' });
      try {
        await expect(exec(other, demoExe, { host: 'beta' })).rejects.toThrow(`DENIED: program other of ${alpha.identity} is not granted on beta.root: its grants cover only program demo`);
      } finally {
        other.close();
      }
      const rows = await rowsOf(alpha.id!, (rs) => rs.filter((r) => r.message_type === 'EXEC').length >= 3 && rs.some((r) => r.kind === 'auth' && /program other/.test(r.reason ?? '')));
      expect(rows.find(denied('EXEC', '/bin/sh', /is granted only program demo/))).toMatchObject({ identity: `${alpha.identity}.demo`, from_host: 'alpha' });
      expect(rows.find((r) => r.message_type === 'EXEC' && r.target === demoExe && r.outcome === 'ok')).toMatchObject({ identity: `${alpha.identity}.demo` });
      expect(rows.find((r) => r.kind === 'auth' && r.outcome === 'denied' && /program other of .* is not granted/.test(r.reason ?? ''))).toBeDefined();
    } finally {
      revokeGrants(beta.store, alpha.identity);
      addGrant(beta.store, alpha.identity);
    }
  }, 60_000);
});

describe('who and what a grant covers', () => {
  it('refuses a program the grant does not cover, for EXEC and for calls', async () => {
    const uma = await enrolled('uma.root');
    addGrant(beta.store, 'uma.root', { program: 'demo' });
    const c = await connect(uma, 'calltest');
    try {
      await expect(exec(c, demoExe)).rejects.toThrow(`DENIED: program calltest of uma.root is not granted on beta.root: its grants cover only program demo`);
      await expect(c.call('beta.calltest.neg32', Uint8Array.of(1, 0, 0, 0))).rejects.toThrow('DENIED: beta.calltest.neg32: program calltest of uma.root is not granted on beta.root: its grants cover only program demo');
    } finally {
      c.close();
    }
    const rows = await rowsOf(uma.own.id, (rs) => rs.some((r) => r.message_type === 'CALL') && rs.some((r) => r.kind === 'auth' && r.outcome === 'denied'));
    expect(rows.find((r) => r.kind === 'auth' && r.outcome === 'denied')).toMatchObject({ identity: 'uma.root.calltest', reason: expect.stringContaining('program calltest of uma.root is not granted') as unknown as string });
    expect(rows.some(denied('CALL', 'beta.calltest.neg32', /program calltest of uma\.root is not granted/))).toBe(true);
    expect(rows.some((r) => r.kind === 'transaction' && r.outcome === 'ok')).toBe(false);
  }, 30_000);

  it('refuses a user the grants do not name (a grant for another HOST.USER covers nobody else)', async () => {
    await enrolled('vic.root');
    const wes = await enrolled('wes.root');
    addGrant(beta.store, 'vic.root');
    const c = await connect(wes);
    try {
      await expect(exec(c, '/bin/sh', { argv: ['sh', '-c', 'id'] })).rejects.toThrow(`DENIED: wes.root (key ${wes.own.id}) has no grant on beta.root; its owner can run \`rex_key --grant wes.root\` there`);
    } finally {
      c.close();
    }
    // The refusal ends that session; a new one is refused the same way for a call.
    const d = await connect(wes, 'calltest');
    try {
      await expect(d.call('beta.calltest.neg32', Uint8Array.of(1, 0, 0, 0))).rejects.toThrow(`DENIED: wes.root.calltest (key ${wes.own.id}) has no grant on beta.root`);
    } finally {
      d.close();
    }
    const rows = await rowsOf(wes.own.id, (rs) => rs.filter((r) => r.kind === 'auth' && r.outcome === 'denied').length >= 2);
    expect(rows.filter((r) => r.kind === 'auth' && r.outcome === 'denied').every((r) => /wes\.root(\.calltest)? \(key .*\) has no grant on beta\.root/.test(r.reason ?? ''))).toBe(true);
    expect(rows.some((r) => r.kind === 'transaction' && r.outcome === 'ok')).toBe(false);
  }, 30_000);

  it('functions= (rex_key --functions) allows only the functions it names: others are refused, and ENTRIES lists only those', async () => {
    const xena = await enrolled('xena.root');
    const said = await cluster.rexKey('beta', ['--grant', 'xena.root', '--program', 'calltest', '--functions', 'neg32,inc64']);
    expect(said).toContain('granted: grant xena.root program=calltest functions=neg32,inc64');
    const c = await connect(xena);
    try {
      const r = await c.call('beta.calltest.neg32', Uint8Array.of(5, 0, 0, 0));
      expect(Buffer.from(r.output).readInt32LE(0)).toBe(-5);
      await expect(c.call('beta.calltest.crash', Uint8Array.of(1, 0, 0, 0))).rejects.toThrow(
        `DENIED: beta.calltest.crash: function crash of program calltest is not granted to xena.root.calltest (key ${xena.own.id}) on beta.root: its grants allow only neg32, inc64 (line`,
      );
      await expect(c.call('beta.calltest.crash', Uint8Array.of(1, 0, 0, 0))).rejects.toThrow('its owner can run `rex_key --grant xena.root --program calltest --functions neg32,inc64,crash` there');
      expect((await c.entries('beta.calltest')).map((e) => e.name).sort()).toEqual(['inc64', 'neg32']);
      // A grant of some functions runs nothing by EXEC.
      const p = await connect(xena, 'calltest');
      await expect(exec(p, demoExe)).rejects.toThrow('is granted only functions neg32, inc64 of program calltest on beta.root (functions=), which allows those calls and no EXEC');
      p.close();
    } finally {
      c.close();
    }
    const rows = await rowsOf(xena.own.id, (rs) => rs.filter((r) => r.message_type === 'CALL').length >= 3 && rs.some((r) => r.message_type === 'EXEC'));
    expect(rows.find(denied('CALL', 'beta.calltest.crash', /function crash of program calltest is not granted/))).toMatchObject({ identity: 'xena.root' });
    expect(rows.find((r) => r.message_type === 'CALL' && r.outcome === 'ok')).toMatchObject({ target: 'beta.calltest.neg32' });
    expect(rows.some(denied('EXEC', demoExe, /functions=/))).toBe(true);
  }, 60_000);

  it('deny= (rex_key --deny) refuses the functions it names, the others work', async () => {
    const yan = await enrolled('yan.root');
    await cluster.rexKey('beta', ['--grant', 'yan.root', '--program', 'calltest', '--deny', 'crash,hang']);
    const c = await connect(yan);
    try {
      await expect(c.call('beta.calltest.crash', Uint8Array.of(1, 0, 0, 0))).rejects.toThrow(
        `DENIED: beta.calltest.crash: function crash of program calltest is not granted to yan.root.calltest (key ${yan.own.id}) on beta.root: its grants allow all but crash, hang (line`,
      );
      const r = await c.call('beta.calltest.neg32', Uint8Array.of(9, 0, 0, 0));
      expect(Buffer.from(r.output).readInt32LE(0)).toBe(-9);
      const names = (await c.entries('beta.calltest')).map((e) => e.name);
      expect(names).toContain('neg32');
      expect(names).not.toContain('crash');
      expect(names).not.toContain('hang');
    } finally {
      c.close();
    }
    const rows = await rowsOf(yan.own.id, (rs) => rs.filter((r) => r.message_type === 'CALL').length >= 2);
    expect(rows.find(denied('CALL', 'beta.calltest.crash', /its grants allow all but crash, hang/))).toMatchObject({ identity: 'yan.root' });
    expect(rows.find((r) => r.message_type === 'CALL' && r.outcome === 'ok')).toMatchObject({ target: 'beta.calltest.neg32' });
  }, 60_000);

  it('rex_key refuses --functions without a program and a bad function name, and writes nothing', async () => {
    const before = readFileSync(beta.store.grantsFile, 'utf8');
    const noProgram = await run(process.execPath, [distBin('rex_key'), '--config', cluster.host('beta').rcFile, '--grant', 'zoe.root', '--functions', 'neg32']).catch((e: { code: number; stderr: string }) => e);
    expect((noProgram as { code: number }).code).not.toBe(0);
    expect((noProgram as { stderr: string }).stderr).toContain('--functions needs --program (or a HOST.USER.PROGRAM name): functions belong to a program');
    const badName = await run(process.execPath, [distBin('rex_key'), '--config', cluster.host('beta').rcFile, '--grant', 'zoe.root', '--program', 'calltest', '--deny', 'neg32;rm']).catch((e: { code: number; stderr: string }) => e);
    expect((badName as { code: number }).code).not.toBe(0);
    expect((badName as { stderr: string }).stderr).toContain('deny=: "neg32;rm" is not a function name (a C identifier');
    expect(readFileSync(beta.store.grantsFile, 'utf8')).toBe(before);
  }, 30_000);
});
