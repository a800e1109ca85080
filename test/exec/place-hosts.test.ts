// REX_PLACE_HOSTS, the client's limit on placement (docs/PLACEMENT.md "Limiting placement"): what the variable
// may hold, and that anything else is refused naming it rather than placing anywhere.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRexName } from '../../src/config/values.js';
import { parsePlaceHosts } from '../../src/placement/index.js';
import { RexError } from '../../src/util/errors.js';
import { distBin, packageRoot } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { configureProperties, runs } from '../helpers/property.js';

configureProperties();

describe('REX_PLACE_HOSTS (docs/PLACEMENT.md)', () => {
  it('names separated by commas or white space, repeats once; unset or blank is no limit', () => {
    expect(parsePlaceHosts('n1,n2, n3\tn2\n')).toEqual(['n1', 'n2', 'n3']);
    expect(parsePlaceHosts(undefined)).toBeUndefined();
    expect(parsePlaceHosts(' , ')).toEqual([]);
    expect(parsePlaceHosts('')).toBeUndefined();
  });

  // claim: placement.among-negative
  it('a name that is no REX host name is a usage error naming the variable and the name', () => {
    for (const bad of ['n1;id', 'n1,.hidden', 'a.b', '-x', 'n1,$(id)', 'x'.repeat(64)]) {
      expect(() => parsePlaceHosts(bad)).toThrow(/REX_PLACE_HOSTS: ".*" is not a host name/);
    }
    expect(() => parsePlaceHosts(Array.from({ length: 1025 }, (_, i) => `h${i}`).join(','))).toThrow(/1025 hosts, at most 1024/);
  });

  // claim: placement.among-fuzz
  it('whatever the variable holds, the result is valid host names or a RexError', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.array(fc.oneof(fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_-]{0,8}$/), fc.string({ maxLength: 6 })), { maxLength: 8 }).map((a) => a.join(','))), (v) => {
        try {
          const r = parsePlaceHosts(v);
          if (r !== undefined) for (const n of r) expect(isRexName(n)).toBe(true);
        } catch (e) {
          expect(e).toBeInstanceOf(RexError);
        }
      }),
      { numRuns: runs(500) },
    );
  });
});

describe('REX_PLACE_HOSTS on a cluster: rex run through the Node CLI and through the native front end (librex)', () => {
  let stop: () => Promise<void>;
  let socket: string;
  const FRONTS = [
    ['the Node CLI', [process.execPath, distBin('rex')]],
    ['the native front end', [join(packageRoot(), 'native', 'build', 'bin', 'rex')]],
  ] as const;
  const run = (argv: readonly string[], env: Record<string, string>) => spawnSync(argv[0]!, [...argv.slice(1)], { encoding: 'utf8', env: { ...process.env, REX_SOCKET: socket, ...env }, timeout: 30_000 });

  beforeAll(async () => {
    const c = await startCluster(3);
    stop = c.stop;
    await c.cluster.waitAllReachable();
    socket = c.cluster.host('alpha').socket;
  }, 90_000);
  afterAll(async () => {
    await stop?.();
  });

  for (const [what, rex] of FRONTS) {
    // claim: placement.among-clients
    it(`${what}: placed only among the named hosts (not the origin unless named); a named host wins; none reachable or a bad name is refused`, () => {
      for (let i = 0; i < 4; i++) {
        const r = run([...rex, 'run', '--json', 'true'], { REX_PLACE_HOSTS: 'beta,gamma' });
        expect(r.status, r.stderr).toBe(0);
        expect(['beta', 'gamma']).toContain((JSON.parse(r.stdout.trim().split('\n').pop()!) as { host: string }).host);
      }
      const named = run([...rex, 'run', '--json', '--host', 'alpha', 'true'], { REX_PLACE_HOSTS: 'gamma' });
      expect((JSON.parse(named.stdout.trim().split('\n').pop()!) as { host: string }).host).toBe('alpha');
      const none = run([...rex, 'run', 'true'], { REX_PLACE_HOSTS: 'zeta' });
      expect(none.status).not.toBe(0);
      expect(none.stderr).toMatch(/none of the hosts this request may be placed on \(zeta\) is a reachable host of this cluster/);
      const bad = run([...rex, 'run', 'true'], { REX_PLACE_HOSTS: 'beta;id' });
      expect(bad.status).not.toBe(0);
      expect(bad.stderr).toMatch(/REX_PLACE_HOSTS: "beta;id" is not a host name/);
    }, 60_000);
  }
});
