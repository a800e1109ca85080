import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decide, formatGrant, GrantsSyntaxError, parseGrants, type Grants, type Requester } from '../../src/keys/grants.js';
import { runs } from '../helpers/property.js';

const ID = 'MFRG-GZDF-MZTW-Q2LK-NNWG-23TP-OBYX-E43U';
const ID2 = 'AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH';

function syntaxError(text: string): GrantsSyntaxError {
  try {
    parseGrants(text, '/home/u/.rex/grants');
  } catch (e) {
    expect(e).toBeInstanceOf(GrantsSyntaxError);
    return e as GrantsSyntaxError;
  }
  throw new Error('expected a syntax error');
}

describe('grants file parser', () => {
  it('reads grants and revocations with every option, ignoring comments and blank lines', () => {
    const g = parseGrants(
      [
        '# who may use this host',
        '',
        'grant alpha.alice',
        '  grant beta.bob id=mfrg-gzdf-mztw-q2lk-nnwg-23tp-obyx-e43u program=render from=10.0.0.0/8 expires=2030-01-31T12:00:00Z',
        `grant ${ID2}`,
        'grant gamma.carol.tool',
        `revoke ${ID} name=beta.bob at=2025-05-05T05:05:05.000Z`,
      ].join('\n'),
    );
    expect(g.grants).toEqual([
      { name: 'alpha.alice', line: 3 },
      { name: 'beta.bob', id: ID, program: 'render', from: '10.0.0.0/8', expires: Date.parse('2030-01-31T12:00:00Z'), line: 4 },
      { id: ID2, line: 5 },
      { name: 'gamma.carol', program: 'tool', line: 6 },
    ]);
    expect(g.revoked).toEqual([{ id: ID, name: 'beta.bob', at: '2025-05-05T05:05:05.000Z', line: 7 }]);
  });

  it.each([
    ['allow alpha.alice', 1, 'unknown word "allow"; a line starts with "grant" or "revoke"'],
    ['# ok\ngrant', 2, '"grant" needs a subject (HOST.USER or an ID) after it'],
    ['grant alpha', 1, '"alpha" is neither HOST.USER nor a key ID'],
    ['grant alpha.alice.x.y', 1, 'is not an identity name; expected HOST.USER or HOST.USER.PROGRAM'],
    ['grant alpha.alice program', 1, '"program" is not KEY=VALUE'],
    ['grant alpha.alice program=', 1, 'program= has no value'],
    ['grant alpha.alice colour=red', 1, 'unknown option "colour=" for grant; expected id=, program=, functions=, deny=, from=, expires='],
    ['grant alpha.alice program=a program=b', 1, 'program= given twice'],
    ['grant alpha.alice program=a/b', 1, 'program=a/b is not a program name'],
    ['grant alpha.alice.x program=y', 1, 'program= given with a HOST.USER.PROGRAM subject'],
    ['grant alpha.alice from=10.0.0.0/99', 1, 'prefix length "99" must be 0-32'],
    ['grant alpha.alice expires=tomorrow', 1, 'expires=tomorrow is not an ISO-8601 time'],
    ['grant alpha.alice id=XYZ', 1, 'id=XYZ is not a key ID'],
    [`grant ${ID} id=${ID2}`, 1, 'id= given with an ID subject'],
    ['\n\nrevoke alpha.alice', 3, '"alpha.alice" is not a key ID'],
    [`revoke ${ID} at=never`, 1, 'at=never is not an ISO-8601 time'],
    [`revoke ${ID} program=x`, 1, 'unknown option "program=" for revoke'],
    ['grant alpha.alice\u0001', 1, 'control character in line'],
    ['grant alpha.alice functions=get', 1, 'functions= needs program= (or a HOST.USER.PROGRAM subject): functions belong to a program'],
    ['grant alpha.alice deny=reset', 1, 'deny= needs program= (or a HOST.USER.PROGRAM subject): functions belong to a program'],
    ['grant alpha.alice program=demo functions=get,1x', 1, 'functions=: "1x" is not a function name (a C identifier'],
    ['grant alpha.alice program=demo deny=admin-reset', 1, 'deny=: "admin-reset" is not a function name (a C identifier'],
    ['grant alpha.alice program=demo functions=get,,put', 1, 'functions=get,,put has an empty function name'],
    ['grant alpha.alice program=demo functions=get,', 1, 'functions=get, has an empty function name'],
    ['grant alpha.alice program=demo functions=get,put,get', 1, 'functions=get,put,get names a function twice'],
    ['grant alpha.alice program=demo functions=get deny=put', 1, 'functions= and deny= on one grant'],
    ['grant alpha.alice program=demo functions=a functions=b', 1, 'functions= given twice'],
    ['grant alpha.alice program=demo deny=', 1, 'deny= has no value'],
    [`revoke ${ID} functions=x`, 1, 'unknown option "functions=" for revoke'],
  ])('%j: error at line %i', (text, line, message) => {
    const e = syntaxError(text);
    expect(e.line).toBe(line);
    expect(e.where).toBe(`/home/u/.rex/grants:${line}`);
    expect(e.message).toContain(message);
    expect(e.message).toContain('this file grants nothing until it is fixed');
    expect(e.format()).toMatch(new RegExp(`^/home/u/\\.rex/grants:${line}: error: `));
  });

  it('formatGrant writes lines that parse back to the same grant', () => {
    const name = fc.tuple(fc.stringMatching(/^[a-z][a-z0-9_-]{0,8}$/), fc.stringMatching(/^[a-z][a-z0-9_-]{0,8}$/)).map(([h, u]) => `${h}.${u}`);
    const grant = fc.record(
      {
        name,
        id: fc.constantFrom(ID, ID2),
        program: fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_-]{0,10}$/),
        functions: fc.uniqueArray(fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,8}$/), { minLength: 1, maxLength: 4 }),
        from: fc.constantFrom('localnets', '10.0.0.0/8', '192.168.1.7', 'fd00::/8', 'beta'),
        expires: fc.integer({ min: 0, max: 4_000_000_000_000 }),
      },
      { requiredKeys: ['name'] },
    );
    fc.assert(
      fc.property(grant, (g0) => {
        const g = g0.program === undefined ? (({ functions: _f, ...rest }) => rest)(g0) : g0;
        const [back] = parseGrants(formatGrant(g)).grants;
        expect(back).toEqual({ ...g, line: 1 });
      }),
      { numRuns: runs(300) },
    );
  });

  it('never throws anything but a located GrantsSyntaxError on arbitrary input', () => {
    const words = fc.constantFrom('grant', 'revoke', 'alpha.alice', ID, 'program=x', 'from=10.0.0.0/8', 'expires=2030-01-01', 'id=', '=', '#', ' ', '\t', '\n', 'a.b.c.d', 'x=y');
    const text = fc.oneof(fc.string({ maxLength: 200 }), fc.array(words, { maxLength: 30 }).map((w) => w.join(' ')), fc.array(words, { maxLength: 30 }).map((w) => w.join('')));
    fc.assert(
      fc.property(text, (t) => {
        try {
          const g = parseGrants(t, 'g');
          for (const x of g.grants) expect(x.name !== undefined || x.id !== undefined).toBe(true);
        } catch (e) {
          expect(e).toBeInstanceOf(GrantsSyntaxError);
          const err = e as GrantsSyntaxError;
          expect(err.line).toBeGreaterThanOrEqual(1);
          expect(err.line).toBeLessThanOrEqual(t.split('\n').length);
          expect(err.where).toBe(`g:${err.line}`);
        }
      }),
      { numRuns: runs(1000) },
    );
  });
});

describe('grant decisions', () => {
  const who: Requester = { id: ID, name: 'alpha.alice', address: '10.1.2.3' };
  const g = (text: string): Grants => parseGrants(text);
  const now = Date.parse('2026-01-01T00:00:00Z');

  it('grants by name, by ID, or by both', () => {
    expect(decide(g('grant alpha.alice'), who, { now }).ok).toBe(true);
    expect(decide(g(`grant ${ID}`), who, { now }).ok).toBe(true);
    expect(decide(g(`grant alpha.alice id=${ID}`), who, { now }).ok).toBe(true);
    expect(decide(g(`grant alpha.alice id=${ID2}`), who, { now })).toEqual({
      ok: false,
      reason: `alpha.alice (key ${ID}) has no grant; its owner can run \`rex_key --grant alpha.alice\` there`,
    });
  });

  it('a revocation wins over any grant', () => {
    const d = decide(g(`grant alpha.alice\nrevoke ${ID} at=2025-12-31T00:00:00Z`), who, { now, self: 'beta.bob' });
    expect(d).toEqual({ ok: false, reason: `key ${ID} (alpha.alice) was revoked at 2025-12-31T00:00:00Z on beta.bob` });
  });

  it('says when the grant expired', () => {
    const d = decide(g('grant alpha.alice expires=2025-06-01T00:00:00Z'), who, { now });
    expect(d).toEqual({ ok: false, reason: `the grant for alpha.alice (key ${ID}) expired at 2025-06-01T00:00:00.000Z` });
    expect(decide(g('grant alpha.alice expires=2027-06-01'), who, { now }).ok).toBe(true);
  });

  it('limits by program', () => {
    const grants = g('grant alpha.alice program=render\ngrant alpha.alice.encode');
    expect(decide(grants, { ...who, program: 'render' }, { now }).ok).toBe(true);
    expect(decide(grants, { ...who, program: 'encode' }, { now }).ok).toBe(true);
    expect(decide(grants, { ...who, program: 'shell' }, { now })).toEqual({ ok: false, reason: 'program shell of alpha.alice is not granted: its grants cover only program render, encode' });
    expect(decide(grants, who, { now, anyProgram: true }).ok).toBe(true);
  });

  it('limits by origin: CIDR, address, or a cluster host name', () => {
    expect(decide(g('grant alpha.alice from=10.0.0.0/8'), who, { now }).ok).toBe(true);
    expect(decide(g('grant alpha.alice from=192.168.0.0/16'), who, { now })).toEqual({
      ok: false,
      reason: `alpha.alice (key ${ID}) is granted only from 192.168.0.0/16, not from 10.1.2.3`,
    });
    expect(decide(g('grant alpha.alice from=alpha'), who, { now, hostAddress: (n) => (n === 'alpha' ? '10.1.2.3' : undefined) }).ok).toBe(true);
    expect(decide(g('grant alpha.alice from=alpha'), who, { now, hostAddress: () => '10.9.9.9' }).ok).toBe(false);
  });

  it('reads functions= and deny= of a program grant', () => {
    expect(g('grant alpha.alice program=demo functions=get,put_2\ngrant alpha.alice.demo deny=admin_reset,_x').grants).toEqual([
      { name: 'alpha.alice', program: 'demo', functions: ['get', 'put_2'], line: 1 },
      { name: 'alpha.alice', program: 'demo', deny: ['admin_reset', '_x'], line: 2 },
    ]);
    expect(formatGrant({ name: 'alpha.alice', program: 'demo', deny: ['a', 'b'] })).toBe('grant alpha.alice program=demo deny=a,b');
  });

  it('limits by function: functions= allows only those, deny= all but those, and the refusal says how to grant', () => {
    const demo = { ...who, program: 'demo' };
    const only = g('grant alpha.alice program=demo functions=get,put');
    expect(decide(only, demo, { now, function: 'get' }).ok).toBe(true);
    expect(decide(only, demo, { now, function: 'admin_reset', self: 'beta.bob' })).toEqual({
      ok: false,
      reason: `function admin_reset of program demo is not granted to alpha.alice.demo (key ${ID}) on beta.bob: its grants allow only get, put (line 1); its owner can run \`rex_key --grant alpha.alice --program demo --functions get,put,admin_reset\` there`,
    });
    // Without a function (ENTRIES_GET, a connection check) the program grant counts.
    expect(decide(only, demo, { now }).ok).toBe(true);
    const deny = g('grant alpha.alice program=demo deny=admin_reset');
    expect(decide(deny, demo, { now, function: 'get' }).ok).toBe(true);
    expect(decide(deny, demo, { now, function: 'admin_reset' })).toMatchObject({ ok: false, reason: expect.stringContaining('its grants allow all but admin_reset (line 1); its owner can run `rex_key --grant alpha.alice --program demo` there') });
    // Grants add up: another grant that allows the function wins, and decide() returns the broadest that matched.
    const both = g('grant alpha.alice program=demo deny=admin_reset\ngrant alpha.alice program=demo functions=admin_reset');
    expect(decide(both, demo, { now, function: 'admin_reset' })).toMatchObject({ ok: true, grant: { functions: ['admin_reset'] } });
    expect(decide(both, demo, { now, function: 'get' })).toMatchObject({ ok: true, grant: { deny: ['admin_reset'] } });
    const wide = g('grant alpha.alice program=demo functions=get\ngrant alpha.alice');
    expect(decide(wide, demo, { now, function: 'admin_reset' })).toMatchObject({ ok: true, grant: { line: 2 } });
    expect((decide(wide, demo, { now }) as { grant: { program?: string } }).grant.program).toBeUndefined();
  });
});
