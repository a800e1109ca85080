/**
 * The smaller findings of issue 12 (item 11): error texts quote untrusted input
 * bounded (a 10 MB line, a long grants word, a peer's host name); `#include`
 * refuses a file that is not regular before reading it and never shows the
 * content of a file that is not a rex.rc (a secret such as /etc/shadow); every
 * REX command exits quietly, with the status of a tool killed by SIGPIPE, when
 * the reader of its output goes away (`rex ping ... | head -1`).
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { loadConfig } from '../../src/config/index.js';
import { parseGrants } from '../../src/keys/grants.js';
import { parseIdentityName } from '../../src/keys/identity.js';
import { RexClient } from '../../src/runtime/client.js';
import { distBin } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'rex-small-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The message loadConfig throws for an rc file with `text`. */
async function configError(text: string, name = 'x.rc'): Promise<string> {
  const f = join(tmp, name);
  writeFileSync(f, text);
  const e = await loadConfig({ file: f }).then(
    () => undefined,
    (err: Error) => err,
  );
  expect(e).toBeInstanceOf(Error);
  return e!.message;
}

// Just under the 1 MiB a configuration file may have (a larger one is refused unread, below).
const BIG = 1_000_000;

describe('error texts quote untrusted input bounded', () => {
  it('a 1 MB line without ":" is quoted by its first characters and its length', async () => {
    const msg = await configError(`log-level : info\n${'A'.repeat(BIG)}\n`);
    expect(msg.length).toBeLessThan(1000);
    expect(msg).toContain(`... (${BIG} bytes)`);
  });

  it('a 10 MB value of a known key is quoted bounded', async () => {
    for (const key of ['placement-policy', 'servers', 'load-interval', 'max-startups']) {
      const msg = await configError(`log-level : info\n${key} : ${'b'.repeat(BIG)}\n`);
      expect(msg.length, key).toBeLessThan(1000);
      expect(msg, key).toContain(`(${BIG} bytes)`);
    }
  });

  it('a long word in the grants file is quoted bounded', () => {
    const word = 'w'.repeat(4000);
    expect(() => parseGrants(`${word} alpha.root\n`, 'grants')).toThrow(/unknown word "w{80}\.\.\. \(4000 bytes\)"/);
  });

  it('an identity name (a certificate\'s, or a command argument) is quoted bounded', () => {
    const r = parseIdentityName(`${'a'.repeat(5000)}.b.c.d`);
    expect(r).toMatch(/^"a{80}\.\.\. \(5006 bytes\)" is not an identity name/);
  });

  it('a command-line error quotes the refused argument bounded', async () => {
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, [distBin('rex'), `--${'x'.repeat(100_000)}`], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      c.on('close', (code) => resolve({ code, stderr }));
    });
    expect(r.code).toBe(2); // a usage error (rex(1), EXIT STATUS)
    expect(r.stderr).toMatch(/unknown option '--x+\.\.\. \(\d+ bytes\)/);
    expect(r.stderr.length).toBeLessThan(1000);
  });

  it('control characters in quoted input are escaped, not sent to the terminal', async () => {
    const msg = await configError('log-level : info\nplacement-policy : \u001b]0;owned\u0007\n');
    expect(msg).not.toContain('\u001b');
    expect(msg).toContain('\\x1b]0;owned\\x07');
  });
});

describe('#include of files that are not a rex.rc', () => {
  it('refuses /dev/zero before reading it, included or named', async () => {
    const msg = await configError('log-level : info\n#include "/dev/zero"\n');
    expect(msg).toMatch(/x\.rc:2: error: included file "\/dev\/zero" is a character device, not a regular file; refusing to read it/);
    await expect(loadConfig({ file: '/dev/zero' })).rejects.toThrow(/configuration file is a character device, not a regular file/);
  });

  it('refuses a file larger than a configuration can be, unread', async () => {
    writeFileSync(join(tmp, 'huge.rc'), `# ${'x'.repeat(2 * 1024 * 1024)}\n`);
    const msg = await configError('#include "huge.rc"\n');
    expect(msg).toMatch(/cannot read included file ".*huge\.rc": it is \d+ bytes, more than a configuration file can be/);
  });

  it('never shows the content of an included secret that is not a rex.rc', async () => {
    const secret = join(tmp, 'shadow');
    writeFileSync(secret, 'root:$6$s3cr3tHASH:19000:0:99999:7:::\nalice:$6$0therHASH:19000::::::\nKEYMATERIALWITHOUTCOLON\n', { mode: 0o600 });
    const msg = await configError(`#include "${secret}"\n`);
    expect(msg).toMatch(/shadow:1: error: line 1 is not a rex\.rc setting, and no line of this file sets a rex\.rc key: it does not look like a rex\.rc, so its content is not shown/);
    // The user names as the file has them (`root:`): the message lists rex.rc's keys, and one of them is permit-root.
    for (const leak of ['root:', 's3cr3t', 'alice', '0ther', 'KEYMATERIAL']) expect(msg).not.toContain(leak);
    // A file that is a rex.rc (it sets a known key) still has its bad lines quoted, bounded.
    expect(await configError('log-level : info\nthis line has no colon\n')).toContain('got "this line has no colon"');
  });

  it('does not quote fields of the real /etc/shadow (when this user can read it)', async (ctx) => {
    let readable = true;
    try {
      accessSync('/etc/shadow', constants.R_OK);
    } catch {
      readable = false;
    }
    if (!readable) {
      console.log('skipped: /etc/shadow is not readable by this user (the fixture secret above covers the rule)');
      ctx.skip();
    }
    const users = readFileSync('/etc/shadow', 'utf8')
      .split('\n')
      .map((l) => l.split(':')[0]!)
      .filter((u) => u.length >= 3);
    const msg = await configError('#include "/etc/shadow"\n');
    expect(msg).toMatch(/not a rex\.rc setting/);
    // A user name as a field of the file (followed by its `:`), not a word of the key list (permit-root, user-map).
    for (const u of users) expect(msg).not.toMatch(new RegExp(`\\b${u.replace(/[^A-Za-z0-9_-]/g, '.')}:`));
  });
});

describe('closed output', () => {
  /** Runs a REX command with its stdout closed before it writes; resolves with its exit status and stderr. */
  function withClosedStdout(bin: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
    return new Promise((resolve) => {
      const c = spawn(process.execPath, [distBin(bin), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      c.stdout.destroy();
      let stderr = '';
      c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      c.on('close', (code) => resolve({ code, stderr }));
    });
  }

  it('every command exits quietly with status 141 (SIGPIPE) when stdout is closed', async () => {
    for (const bin of ['rex', 'rexd', 'rex_key', 'repdb', 'rtop']) {
      const r = await withClosedStdout(bin, ['--help']);
      expect({ bin, ...r }).toEqual({ bin, code: 141, stderr: '' });
    }
    writeFileSync(join(tmp, 'ok.rc'), 'log-level : info\n');
    expect(await withClosedStdout('rex', ['config', 'show', '-c', join(tmp, 'ok.rc')])).toEqual({ code: 141, stderr: '' });
  });

  describe('with a rexd', () => {
    let cluster: LocalCluster;
    let stop: () => Promise<void>;
    beforeAll(async () => {
      ({ cluster, stop } = await startCluster(1, { netns: false }));
    });
    afterAll(async () => stop?.());

    it('`rex ping -n 1000 | head -1`: rex ping exits quietly', async () => {
      const r = await new Promise<{ code: number | null; stderr: string; first: string }>((resolve) => {
        const c = spawn(process.execPath, [distBin('rex'), 'ping', '-n', '1000', '--socket', cluster.host('alpha').socket], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stderr = '';
        let first = '';
        c.stdout.once('data', (d: Buffer) => {
          first = d.toString().split('\n')[0]!;
          c.stdout.destroy(); // what head -1 does after its line
        });
        c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        c.on('close', (code) => resolve({ code, stderr, first }));
      });
      expect(r.first).not.toBe('');
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 141, stderr: '' });
    });

    it("rexd's answer quotes a long host name bounded", async () => {
      const c = await RexClient.connect({ socket: cluster.host('alpha').socket });
      try {
        const e = await c.ping('h'.repeat(250)).then(
          () => undefined,
          (err: Error) => err,
        );
        expect(e?.message).toMatch(/no host "h{80}\.\.\. \(250 bytes\)" in this cluster/);
        expect(e!.message.length).toBeLessThan(1000);
      } finally {
        c.close();
      }
    });
  });
});
