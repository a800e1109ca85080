/**
 * Entry-point lists of any size (docs/PROTOCOL.md 4.7, "Paging"): ENTRIES_GET
 * asks for one entry point by `name`, or for a page of the list (`match`,
 * `after`, `limit`); ENTRIES answers with the page and `next`, the cursor of
 * the following page. Pages are cut by their encoded size, so a page never
 * exceeds the frame limits whatever the entry points look like, and the
 * cursor is the last name sent (entries go in byte order of their names), so
 * a list that changes between pages gives each name at most once.
 *
 * Both sides live here: the server's page selection (CallManager, the
 * router's relay) and the client's checks and fetch loop (RexClient,
 * CallChannel, the router's relay), so the rules cannot drift apart.
 */
import { LIMITS } from '../protocol/constants.js';
import { ProtocolError } from '../protocol/frame.js';
import { entryWireSize, type EntryInfo, type Message, type MessageOf } from '../protocol/messages.js';

/** The entries a client asks for per page; the server sends fewer when the frame is full. */
export const ENTRIES_PAGE_LIMIT = 1000;
/** Most entry points one listing collects (a peer that pages without end is stopped here). */
export const ENTRIES_LISTING_MAX = 65536;
/** Payload bytes kept for an ENTRIES message's own attributes (program, host, next: 255 bytes each at most). */
const TOP_RESERVE = 1024;
/** Attributes kept for them. */
const TOP_ATTRS = 8;

/** What an ENTRIES_GET asks beyond its target. */
export interface EntriesQuery {
  name?: string;
  match?: string;
  after?: string;
  limit?: number;
}

/** The query part of an ENTRIES_GET message. */
export function queryOf(m: MessageOf<'ENTRIES_GET'>): EntriesQuery {
  return {
    ...(m.name !== undefined ? { name: m.name } : {}),
    ...(m.match !== undefined ? { match: m.match } : {}),
    ...(m.after !== undefined ? { after: m.after } : {}),
    ...(m.limit !== undefined ? { limit: m.limit } : {}),
  };
}

/** Orders names as the wire does: by their UTF-8 bytes (C strcmp), not UTF-16 units. */
export function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Sorts entries by name in wire order (a copy). */
export function sortEntries<T extends { name: string }>(entries: readonly T[]): T[] {
  return entries
    .map((e) => [Buffer.from(e.name, 'utf8'), e] as const)
    .sort((x, y) => Buffer.compare(x[0], y[0]))
    .map(([, e]) => e);
}

type GlobToken = { t: 'lit'; c: string } | { t: 'any' } | { t: 'star' } | { t: 'class'; neg: boolean; ranges: [string, string][] };

/**
 * A matcher for a shell glob on names: `*` any run, `?` one character,
 * `[abc]`, `[a-z]`, `[!a-z]` one of / none of, `\\x` the character x. No
 * regular expression is built, and matching takes at most
 * O(name x pattern) steps, so a hostile pattern costs little.
 */
export function globMatcher(pattern: string, what?: string): (name: string) => boolean {
  const cs = Array.from(pattern);
  const toks: GlobToken[] = [];
  for (let i = 0; i < cs.length; i++) {
    const c = cs[i]!;
    if (c === '*') {
      if (toks.at(-1)?.t !== 'star') toks.push({ t: 'star' });
    } else if (c === '?') toks.push({ t: 'any' });
    else if (c === '\\') {
      if (i + 1 >= cs.length) throw badMatch(pattern, 'ends in a lone \\', what);
      toks.push({ t: 'lit', c: cs[++i]! });
    } else if (c === '[') {
      let j = i + 1;
      const neg = cs[j] === '!' || cs[j] === '^';
      if (neg) j++;
      const ranges: [string, string][] = [];
      let first = true;
      for (; j < cs.length && (cs[j] !== ']' || first); j++, first = false) {
        const lo = cs[j]!;
        if (cs[j + 1] === '-' && j + 2 < cs.length && cs[j + 2] !== ']') {
          ranges.push([lo, cs[j + 2]!]);
          j += 2;
        } else ranges.push([lo, lo]);
      }
      if (j >= cs.length) throw badMatch(pattern, `the [ at character ${i + 1} is not closed`, what);
      toks.push({ t: 'class', neg, ranges });
      i = j;
    } else toks.push({ t: 'lit', c });
  }
  const one = (tok: GlobToken, c: string): boolean => {
    switch (tok.t) {
      case 'lit':
        return tok.c === c;
      case 'any':
        return true;
      case 'class': {
        const cp = c.codePointAt(0)!;
        const hit = tok.ranges.some(([lo, hi]) => cp >= lo.codePointAt(0)! && cp <= hi.codePointAt(0)!);
        return hit !== tok.neg;
      }
      default:
        return false;
    }
  };
  return (name: string): boolean => {
    const s = Array.from(name);
    // The classic wildcard walk: remember the last star and retry from one character further on mismatch.
    let si = 0;
    let pi = 0;
    let star = -1;
    let mark = 0;
    while (si < s.length) {
      const tok = toks[pi];
      if (tok && tok.t !== 'star' && one(tok, s[si]!)) {
        si++;
        pi++;
      } else if (tok?.t === 'star') {
        star = pi++;
        mark = si;
      } else if (star >= 0) {
        pi = star + 1;
        si = ++mark;
      } else return false;
    }
    while (toks[pi]?.t === 'star') pi++;
    return pi === toks.length;
  };
}

function badMatch(pattern: string, why: string, what?: string): ProtocolError {
  return new ProtocolError('BAD_REQUEST', `ENTRIES_GET ${what ? `${what} ` : ''}match '${pattern}': ${why}`, { fatal: false, hint: "write a shell glob such as 'str*' or 'f[0-9]?'" });
}

/** Room for entries in one ENTRIES towards a receiver that accepts `maxPayload` bytes (its HELLO). */
export function pageBudget(maxPayload: number = LIMITS.maxPayload): { bytes: number; attrs: number } {
  return { bytes: Math.min(maxPayload, LIMITS.maxPayload) - TOP_RESERVE, attrs: LIMITS.maxAttrs - TOP_ATTRS };
}

/** The entries of a sorted list a query selects, before paging: names after `after` that `match`. */
export function selectEntries<T extends { name: string }>(sorted: readonly T[], q: EntriesQuery, what?: string): T[] {
  const match = q.match !== undefined ? globMatcher(q.match, what) : undefined;
  let from = 0;
  if (q.after !== undefined) {
    // Binary search for the first name after the cursor: the cursor need not be a name of this list (it may have changed).
    const key = Buffer.from(q.after, 'utf8');
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (Buffer.compare(Buffer.from(sorted[mid]!.name, 'utf8'), key) <= 0) lo = mid + 1;
      else hi = mid;
    }
    from = lo;
  }
  const rest = sorted.slice(from);
  return match ? rest.filter((e) => match(e.name)) : rest;
}

/**
 * One page of `candidates` (sorted, selected) for a receiver with `budget`:
 * as many as `limit` allows and the frame holds. Without `limit` (a client
 * that does not page) the whole list must fit, else BAD_REQUEST says so
 * rather than cutting the list short where that client cannot see it.
 */
export function fitPage(candidates: readonly EntryInfo[], limit: number | undefined, budget: { bytes: number; attrs: number }, what: string): { entries: EntryInfo[]; next?: string } {
  if (limit !== undefined && limit < 1) throw new ProtocolError('BAD_REQUEST', `ENTRIES_GET ${what}: limit ${limit}: expected 1 or more`, { fatal: false });
  const max = Math.min(limit ?? Infinity, candidates.length);
  let bytes = 0;
  let attrs = 0;
  let n = 0;
  for (; n < max; n++) {
    const size = entryWireSize(candidates[n]!);
    if (bytes + size.bytes > budget.bytes || attrs + size.attrs > budget.attrs) {
      if (n === 0) {
        throw new ProtocolError('BAD_REQUEST', `ENTRIES_GET ${what}: entry point ${candidates[0]!.name} alone is ${size.bytes} bytes and ${size.attrs} attributes on the wire, more than one ENTRIES to this receiver can carry (${budget.bytes} bytes, ${budget.attrs} attributes)`, {
          fatal: false,
          hint: 'connect with a larger max-payload (HELLO max-payload, docs/PROTOCOL.md 4.1)',
        });
      }
      break;
    }
    bytes += size.bytes;
    attrs += size.attrs;
  }
  if (n < candidates.length && limit === undefined) {
    throw new ProtocolError('BAD_REQUEST', `ENTRIES_GET ${what}: ${candidates.length} entry points do not fit in one ENTRIES (${n} would), and this request does not page`, {
      fatal: false,
      hint: 'update the client: it must send limit and after (docs/PROTOCOL.md 4.7), or ask for one entry point by name',
    });
  }
  const entries = candidates.slice(0, n);
  return n < candidates.length ? { entries, next: entries[n - 1]!.name } : { entries };
}

function malformed(from: string, msg: string): ProtocolError {
  return new ProtocolError('MALFORMED', `ENTRIES from ${from}: ${msg}`, { fatal: false });
}

/**
 * Refuses a page no honest server sends for query `q`, naming the field: a
 * repeated name, a name not after the cursor, more entries than `limit` on a
 * page that says more follow, unsorted entries or a `next` that is not the
 * page's last name (either could repeat or skip entries, or page forever).
 * A page without `next` may exceed `limit` and be unsorted: that is the whole
 * list from a server that predates paging (unknown attributes are ignored).
 */
export function checkPage(q: EntriesQuery, page: MessageOf<'ENTRIES'>, from: string): void {
  const entries = page.entries ?? [];
  const seen = new Set<string>();
  let prev: Buffer | undefined;
  const after = q.after !== undefined ? Buffer.from(q.after, 'utf8') : undefined;
  entries.forEach((e, i) => {
    if (seen.has(e.name)) throw malformed(from, `entries[${i}].name '${e.name}' repeats an earlier entry of the page`);
    seen.add(e.name);
    const name = Buffer.from(e.name, 'utf8');
    if (after && Buffer.compare(name, after) <= 0) throw malformed(from, `entries[${i}].name '${e.name}' is not after the cursor '${q.after}' asked for`);
    if (page.next !== undefined && prev && Buffer.compare(name, prev) <= 0) throw malformed(from, `entries[${i}].name '${e.name}' does not follow '${entries[i - 1]!.name}': a page with next must be in byte order of names`);
    prev = name;
  });
  if (page.next === undefined) return;
  if (entries.length === 0) throw malformed(from, `next '${page.next}' on a page without entries: the listing would not advance`);
  if (q.limit !== undefined && entries.length > q.limit) throw malformed(from, `${entries.length} entries, more than the limit ${q.limit} asked for`);
  if (page.next !== entries.at(-1)!.name) throw malformed(from, `next '${page.next}' is not the page's last name '${entries.at(-1)!.name}'`);
}

/** Sends one ENTRIES_GET and returns its ENTRIES (callers turn transport errors into their own). */
export type EntriesRequest = (m: MessageOf<'ENTRIES_GET'>) => Promise<Message>;

function expectEntries(m: Message, from: string): MessageOf<'ENTRIES'> {
  if (m.type !== 'ENTRIES') throw new ProtocolError('UNEXPECTED', `${from} answered ENTRIES_GET with ${m.type}`, { fatal: false });
  return m;
}

/**
 * Every entry point of `target` (or those `match` selects), page by page, in
 * byte order of names. `from` names the answering side in errors.
 */
export async function listEntries(request: EntriesRequest, target: string, opts: { match?: string; from?: string; pageLimit?: number } = {}): Promise<EntryInfo[]> {
  const from = opts.from ?? 'rexd';
  const match = opts.match !== undefined ? globMatcher(opts.match, target) : undefined;
  const limit = opts.pageLimit ?? ENTRIES_PAGE_LIMIT;
  const out: EntryInfo[] = [];
  let after: string | undefined;
  for (;;) {
    const q: EntriesQuery = { ...(opts.match !== undefined ? { match: opts.match } : {}), ...(after !== undefined ? { after } : {}), limit };
    const page = expectEntries(await request({ type: 'ENTRIES_GET', stream: 0, target, ...q }), from);
    checkPage(q, page, from);
    // A server that predates `match` sends everything: the filter is applied here again.
    for (const e of page.entries ?? []) if (!match || match(e.name)) out.push(e);
    if (out.length > ENTRIES_LISTING_MAX) {
      throw new ProtocolError('MALFORMED', `ENTRIES from ${from}: ${target} lists more than ${ENTRIES_LISTING_MAX} entry points; stopped`, { fatal: false, hint: 'narrow the listing with match (rex entries --match)' });
    }
    if (page.next === undefined) return out;
    after = page.next;
  }
}

/** One entry point of `target` by name, without fetching the list; NO_ENTRY when there is none. */
export async function lookupEntry(request: EntriesRequest, target: string, name: string, from = 'rexd'): Promise<EntryInfo> {
  const q: EntriesQuery = { name };
  const page = expectEntries(await request({ type: 'ENTRIES_GET', stream: 0, target, ...q }), from);
  const entries = page.entries ?? [];
  // A server that predates `name` answers with its whole list (never with next): ours is taken out of it.
  if (page.next !== undefined) throw malformed(from, `next '${page.next}' in the answer to a request by name`);
  const e = entries.find((x) => x.name === name);
  if (!e) throw new ProtocolError('NO_ENTRY', `${target}.${name}: program ${target} has no entry point '${name}'`, { fatal: false, hint: `list them with: rex entries ${target}` });
  return e;
}
