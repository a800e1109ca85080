/**
 * The monitor treats its session controllers as untrusted (docs/ROOT.md): a controller runs a user's code, so a
 * request it may not make, or a message that is not the channel's, ends that controller, and the monitor goes on
 * serving (the user's next connection starts a new one). The monitor runs here in this process, as root; its
 * controllers are test/fixtures/root/bad-controller.mjs, started through rex-session as a real test user.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { freePort } from '../../src/cluster/cluster.js';
import { loadConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/daemon/log.js';
import { Monitor } from '../../src/daemon/monitor.js';
import { KeyStore } from '../../src/keys/store.js';
import { readablePackage } from '../helpers/readable-package.js';
import { createTestUser, isRoot, notRootReason, removeTestUser, type TestUser } from '../helpers/users.js';

if (!isRoot) console.warn(`monitor-controller tests skipped: ${notRootReason}`);

const USER = 'rextest-mc-alice';


describe.skipIf(!isRoot)('a session controller that breaks the rules of its channel', () => {
  let dir: string;
  let pkg: ReturnType<typeof readablePackage>;
  let alice: TestUser;

  beforeAll(() => {
    pkg = readablePackage();
    spawnSync('pkill', ['-KILL', '-u', USER]);
    alice = createTestUser(USER);
    dir = mkdtempSync(join(tmpdir(), 'rex-monitor-'));
    chmodSync(dir, 0o755);
  });

  afterAll(() => {
    spawnSync('pkill', ['-KILL', '-u', USER]);
    removeTestUser(USER);
    if (dir && !process.env.KEEP) rmSync(dir, { recursive: true, force: true });
    pkg?.remove();
  });

  const cases = [
    ['a dial whose id is not a number', 'bad-request', 'session controller sent an invalid request; stopping it'],
    ['an operation the monitor does not offer', 'unknown-op', 'session controller sent an invalid request; stopping it'],
    ['a header that is not JSON', 'not-json', 'session controller broke the channel; stopping it'],
  ] as const;
  for (const [what, kind, logged] of cases) {
    // claim: root.controller-untrusted
    it(`${what} ends that controller; the monitor goes on serving`, async () => {
      const d = join(dir, kind);
      mkdirSync(d, { mode: 0o755 }); // alice reaches the socket below it
      const rc = join(dir, `${kind}.rc`);
      const port = await freePort();
      writeFileSync(rc, ['host-name : alpha', 'installation : root', `servers : alpha@127.0.0.1:${port}`, `state-directory : ${join(d, 'state')}`, `socket : ${join(d, 'run', 'rexd.sock')}`, ''].join('\n'));
      await new KeyStore(join(d, 'state')).create('alpha');
      const logFile = join(dir, `${kind}.log`);
      const fd = openSync(logFile, 'a');
      const log = createLogger('info', 'alpha', fd);
      const { config } = await loadConfig({ file: rc });
      const monitor = new Monitor(config, { log, configFile: rc, sets: { 'rex-test-bad': kind }, rexd: join(pkg.root, 'test', 'fixtures', 'root', 'bad-controller.mjs') });
      await monitor.start();
      try {
        const connect = () =>
          spawnSync('runuser', ['-u', alice.name, '--', process.execPath, '-e', `const s = require('net').connect(${JSON.stringify(join(d, 'run', 'rexd.sock'))}); s.on('error', () => {}); setTimeout(() => process.exit(0), 300);`], { encoding: 'utf8' });
        const text = () => readFileSync(logFile, 'utf8');
        const count = (what: string) => text().split('\n').filter((l) => l.includes(`"msg":"${what}"`)).length;
        connect();
        await vi.waitFor(() => expect(text()).toContain(logged), { timeout: 20_000, interval: 50 });
        await vi.waitFor(() => expect(count('session controller ended')).toBe(1), { timeout: 20_000, interval: 50 });
        expect(spawnSync('pgrep', ['-u', String(alice.uid), '-f', 'bad-controller.mjs']).status, 'no controller left running').toBe(1);
        // The next connection of the same user gets a new controller.
        connect();
        await vi.waitFor(() => expect(count('session controller started')).toBe(2), { timeout: 20_000, interval: 50 });
      } finally {
        await monitor.stop('test done');
        closeSync(fd);
      }
    }, 90_000);
  }
});
