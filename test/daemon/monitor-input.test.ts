/**
 * What the root installation's monitor reads from others (docs/ROOT.md): the route preface of a
 * host-key connection (parsed as root, so bounded and strict) and the headers a session
 * controller sends on its channel (a controller runs the user's code). Negative cases and
 * properties over random input; no process needs root here.
 */
import { PassThrough } from 'node:stream';
import type { Socket } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HOST_ROUTE, ROUTE_PREFACE_MAX, readPreface, routePreface, type Route } from '../../src/daemon/monitor.js';
import { mapRemoteUser } from '../../src/daemon/accounts.js';
import { SessionChannel, type ChannelMessage } from '../../src/daemon/channel.js';
import { loadAddon } from '../../src/util/native.js';
import { runs } from '../helpers/property.js';

/**
 * Feeds `chunks` to readPreface as a connection would deliver them, then ends the stream. `rest` is what the
 * monitor relays to the controller: the bytes readPreface read past the line, then what it left in the stream.
 */
async function preface(chunks: Buffer[], timeoutMs = 2000): Promise<{ route: Route; rest: Buffer }> {
  const s = new PassThrough();
  const p = readPreface(s as unknown as Socket, timeoutMs);
  for (const c of chunks) s.write(c);
  s.end();
  s.on('end', () => s.emit('close'));
  const r = await p;
  const left: Buffer[] = [];
  for (let b = s.read() as Buffer | null; b !== null; b = s.read() as Buffer | null) left.push(b);
  return { route: r.route, rest: Buffer.concat([r.rest, ...left]) };
}

describe('the route preface', () => {
  it('reads the user, or the host controller, and hands on the bytes after the line, however the line is split', async () => {
    for (const [text, route] of [
      [routePreface('alice'), { user: 'alice' }],
      [HOST_ROUTE, { host: true }],
    ] as const) {
      const after = Buffer.from('REX!\r\n\x1a\nframe');
      const whole = Buffer.concat([Buffer.from(text), after]);
      for (let cut = 1; cut < whole.length; cut++) {
        const r = await preface([whole.subarray(0, cut), whole.subarray(cut)]);
        expect(r.route).toEqual(route);
        expect(r.rest.equals(after)).toBe(true);
      }
    }
  });

  it.each([
    ['another first line', 'GET / HTTP/1.1\n'],
    ['a user name that is not a REX name part', 'REX-ROUTE user=al.ice\n'],
    ['an empty user', 'REX-ROUTE user=\n'],
    ['extra fields', 'REX-ROUTE user=alice host=beta\n'],
    ['a CR before the newline', 'REX-ROUTE user=alice\r\n'],
    ['a name of 64 characters', `REX-ROUTE user=${'a'.repeat(64)}\n`],
    ['host with a name', 'REX-ROUTE host=beta\n'],
    ['host and a user', 'REX-ROUTE host user=alice\n'],
  ])('refuses %s', async (_what, text) => {
    await expect(preface([Buffer.from(text)])).rejects.toThrow(/the first line is not "REX-ROUTE user=NAME" nor "REX-ROUTE host"/);
  });

  it(`refuses a line longer than ${ROUTE_PREFACE_MAX} bytes without reading on, and a connection that ends or stalls first`, async () => {
    await expect(preface([Buffer.alloc(ROUTE_PREFACE_MAX, 'x')])).rejects.toThrow(/no newline in the first 256 bytes/);
    await expect(preface([Buffer.from('REX-ROUTE user=al')])).rejects.toThrow(/closed before the route preface/);
    const stalled = new PassThrough();
    await expect(readPreface(stalled as unknown as Socket, 50)).rejects.toThrow(/no route preface within 50 ms/);
  });

  it('on random bytes either reads a valid user or refuses; it never throws otherwise', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 4 }), async (chunks) => {
        const r = await preface(chunks.map((c) => Buffer.from(c))).then(
          (v) => v,
          (e: Error) => e,
        );
        if (r instanceof Error) expect(r.message).toMatch(/route preface|REX-ROUTE|no newline/);
        else {
          if ('user' in r.route) expect(r.route.user).toMatch(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/);
          else expect(r.route).toEqual({ host: true });
          expect(Buffer.concat(chunks.map((c) => Buffer.from(c))).subarray(0, ROUTE_PREFACE_MAX).includes(0x0a)).toBe(true);
        }
      }),
      { numRuns: runs(300) },
    );
  });
});

describe('user-map', () => {
  const map = [
    { host: 'alpha', user: 'alice', local: 'al' },
    { host: '*', user: 'guest', local: 'nobody' },
    { host: 'gamma', user: '*', local: '-' },
  ];
  it('takes the first matching entry, refuses with -, and keeps the name when nothing matches', () => {
    expect(mapRemoteUser(map, 'alpha', 'alice')).toEqual({ local: 'al', via: 'user-map alpha.alice = al' });
    expect(mapRemoteUser(map, 'beta', 'guest')).toEqual({ local: 'nobody', via: 'user-map *.guest = nobody' });
    expect(mapRemoteUser(map, 'gamma', 'guest')).toEqual({ local: 'nobody', via: 'user-map *.guest = nobody' });
    expect(mapRemoteUser(map, 'gamma', 'bob')).toEqual({ refused: 'gamma.bob is refused by rex.rc user-map gamma.* = -' });
    expect(mapRemoteUser(map, 'beta', 'bob')).toEqual({ local: 'bob', via: 'same name' });
  });
});

describe("a session controller's channel", () => {
  it('delivers JSON headers with their descriptors, and ends at a header that is not a JSON object', async () => {
    const addon = loadAddon();
    const [a, b] = addon.socketPair(true);
    const ch = new SessionChannel(a);
    const got: ChannelMessage[] = [];
    const closed = new Promise<Error | undefined>((resolve) => ch.on('close', resolve));
    ch.on('message', (m: ChannelMessage) => got.push(m));
    const [p0, p1] = addon.socketPair(false);
    expect(addon.sendFds(b, [p1], Buffer.from(JSON.stringify({ kind: 'local', uid: 1000 })))).toBe(true);
    expect(addon.sendFds(b, [], Buffer.from('[1,2,3]'))).toBe(true);
    const err = await closed;
    expect(got).toHaveLength(1);
    expect(got[0]!.header).toEqual({ kind: 'local', uid: 1000 });
    expect(got[0]!.fds).toHaveLength(1);
    expect(err?.message).toMatch(/its header is not a JSON object/);
    for (const fd of [...got[0]!.fds, p0, p1, b]) {
      try {
        (await import('node:fs')).closeSync(fd);
      } catch {
        /* closed */
      }
    }
  });
});
