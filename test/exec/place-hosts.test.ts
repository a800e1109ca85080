// REX_PLACE_HOSTS, the client's limit on placement (docs/PLACEMENT.md "Limiting placement"): what the variable
// may hold, and that anything else is refused naming it rather than placing anywhere.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRexName } from '../../src/config/values.js';
import { parsePlaceHosts } from '../../src/placement/index.js';
import { RexError } from '../../src/util/errors.js';
import { TAG_CRITICAL } from '../../src/protocol/constants.js';
import { bodyToFrame, frameToMessage } from '../../src/protocol/messages.js';
import { distBin, packageRoot } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { buildDemoLibrary } from '../../src/cluster/calldemo.js';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { configureProperties, runs } from '../helpers/property.js';

configureProperties();

describe('REX_PLACE_HOSTS (docs/PLACEMENT.md)', () => {
  it('names separated by commas or white space, repeats once; unset or blank is no limit', () => {
    expect(parsePlaceHosts('n1,n2, n3\tn2\n')).toEqual(['n1', 'n2', 'n3']);
    expect(parsePlaceHosts(undefined)).toBeUndefined();
    expect(parsePlaceHosts(' , ')).toEqual([]);
    expect(parsePlaceHosts('')).toBeUndefined();
  });

  // claim: placement.among-critical
  it('among travels with the CRITICAL bit (an older rexd refuses it, UNSUPPORTED, rather than placing anywhere), and decodes back', () => {
    for (const m of [
      { type: 'EXEC', stream: 1, path: 'hostname', argv: ['hostname'], among: ['n1', 'n2'] },
      { type: 'CALL', stream: 1, target: '*.demo.fib', input: new Uint8Array(4), among: ['n1', 'n2'] },
    ] as const) {
      const f = bodyToFrame(m as never, 1);
      expect(f.attrs.filter((a) => a.kind === 'string' && (a.value === 'n1' || a.value === 'n2')).map((a) => a.tag & TAG_CRITICAL)).toEqual([TAG_CRITICAL, TAG_CRITICAL]);
      expect((frameToMessage(f) as { among?: string[] }).among).toEqual(['n1', 'n2']);
      // What a rexd that does not know the tag does with it: refuse, never ignore.
      const unknown = { ...f, attrs: f.attrs.map((a) => (a.tag & TAG_CRITICAL ? { ...a, tag: 0x7ff0 | TAG_CRITICAL } : a)) };
      expect(() => frameToMessage(unknown as typeof f)).toThrow(/critical attribute 32752 is not known/);
    }
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

describe('REX_PLACE_HOSTS on a cluster: rex run (Node CLI, native front end), rex call and rcall()', () => {
  let stop: () => Promise<void>;
  let socket: string;
  const FRONTS = [
    ['the Node CLI', [process.execPath, distBin('rex')]],
    ['the native front end', [join(packageRoot(), 'native', 'build', 'bin', 'rex')]],
  ] as const;
  const run = (argv: readonly string[], env: Record<string, string>) => spawnSync(argv[0]!, [...argv.slice(1)], { encoding: 'utf8', env: { ...process.env, REX_SOCKET: socket, ...env }, timeout: 30_000 });

  let cluster: LocalCluster;
  let demoDir: string;
  let rcallPid: string;

  beforeAll(async () => {
    // Every host offers the demo program, so that a call placed anywhere could land on any of them.
    demoDir = mkdtempSync(join(tmpdir(), 'rex-test-place-'));
    const { rcLine } = buildDemoLibrary(demoDir);
    const c = await startCluster(3, { rc: [rcLine] });
    stop = c.stop;
    cluster = c.cluster;
    await c.cluster.waitAllReachable();
    socket = c.cluster.host('alpha').socket;
    // rcall() from C: prints the pid of the call controller that ran demo.controller_pid, or the error.
    execFileSync('make', ['-s', '-C', join(packageRoot(), 'native'), 'build/lib/librex.a'], { stdio: 'pipe' });
    const src = join(demoDir, 'rcall_pid.c');
    writeFileSync(
      src,
      '#include <errno.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <rex.h>\nint main(int argc, char **argv) {\n  int32_t pid = 0;\n  long rc = rcall(argc > 1 ? argv[1] : "*.demo.controller_pid", NULL, 0, &pid, sizeof pid);\n  if (rc < 0) { printf("error %s: %s\\n", rex_err_name(errno), rex_last_error()); return 1; }\n  printf("%d\\n", (int)pid);\n  return 0;\n}\n',
    );
    rcallPid = join(demoDir, 'rcall_pid');
    execFileSync('cc', ['-std=c11', '-Wall', '-Werror', '-I', join(packageRoot(), 'native', 'include'), '-o', rcallPid, src, join(packageRoot(), 'native', 'build', 'lib', 'librex.a'), '-lm']);
  }, 120_000);
  afterAll(async () => {
    await stop?.();
    if (demoDir) rmSync(demoDir, { recursive: true, force: true });
  });

  /** Which host's rexd a process descends from (call controllers are the serving rexd's). */
  const hostOf = (pid: number): string | undefined => {
    const rexds = new Map(cluster.hosts.map((h) => [h.pid, h.name]));
    for (let p = pid, i = 0; p > 1 && i < 20; i++) {
      if (rexds.has(p)) return rexds.get(p);
      p = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
    }
    return undefined;
  };

  // claim: placement.among-calls
  it('remote calls to * (rex call and C rcall()) are placed only among the named hosts; none offering it is NO_ENTRY saying so', () => {
    for (const env of [{ REX_PLACE_HOSTS: 'gamma' }, { REX_PLACE_HOSTS: 'beta' }]) {
      const node = run([process.execPath, distBin('rex'), 'call', '*.demo.controller_pid', '--json'], env);
      expect(node.status, node.stderr).toBe(0);
      expect(hostOf(Number(/(\d+)/.exec(node.stdout)?.[1]))).toBe(env.REX_PLACE_HOSTS);
      const c = run([rcallPid], env);
      expect(c.status, c.stdout).toBe(0);
      expect(hostOf(Number(c.stdout.trim()))).toBe(env.REX_PLACE_HOSTS);
    }
    // A named host wins over the limit, as for rex run.
    const named = run([rcallPid, 'alpha.demo.controller_pid'], { REX_PLACE_HOSTS: 'gamma' });
    expect(hostOf(Number(named.stdout.trim()))).toBe('alpha');
    const none = run([process.execPath, distBin('rex'), 'call', '*.demo.fib', '20'], { REX_PLACE_HOSTS: 'zeta' });
    expect(none.status).not.toBe(0);
    expect(none.stderr).toMatch(/no reachable host offers program 'demo' \(asked only zeta \(REX_PLACE_HOSTS\)/);
    const bad = run([rcallPid], { REX_PLACE_HOSTS: 'beta;id' });
    expect(bad.stdout).toMatch(/^error EINVAL: \*\.demo\.controller_pid: REX_PLACE_HOSTS: "beta;id" is not a host name/);
  }, 60_000);

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
