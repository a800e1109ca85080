#!/usr/bin/env node
/**
 * `rex_key`: this user's REX identities, trusted keys and grants (docs/KEYS.md,
 * docs/man/rex_key.1.md). One action per run:
 *   --create [--program P] [--force]      make a key pair
 *   --create --host-key [--force]         make the host key of a root installation (as root)
 *   --list [--json]                       own identities, trusted keys, grants, pending hosts
 *   --invite --for NAME [--key ID] [--replace] [--expires 15m]
 *                                         print a one-time enrollment token for NAME
 *   --distribute [--token T] [--host H]   send our key to the hosts in `servers` (or H)
 *   --invite --join HOST [--expires 15m]  print a one-time token for host HOST to join the cluster here
 *   --join HOST [--token T]               join the cluster of member HOST (the token on stdin, or --token)
 *   --grant NAME-or-ID [--program P [--functions F,G | --deny H,I]] [--from HOST] [--expires T]
 *   --revoke NAME-or-ID [--program P]
 */
import { Command } from 'commander';
import { chownSync, lstatSync, mkdirSync } from 'node:fs';
import { hostTrustDir, loadConfig, parseDuration, type LoadedConfig, type ServerEntry } from '../config/index.js';
import { addGrant, invite, revokeGrants, revokeHost } from '../keys/admin.js';
import { enrollWith, readPending, writePending, type PendingHost } from '../keys/enroll.js';
import { HostsFile, mergeServers } from '../keys/hosts.js';
import { joinCluster } from '../keys/join.js';
import { GrantsFile, formatGrant } from '../keys/grants.js';
import { parseId } from '../keys/id.js';
import { isNamePart, localName, parseIdentityName, peerIdentity } from '../keys/identity.js';
import { KeyStore, type OwnIdentity } from '../keys/store.js';
import { parseToken, TokenStore } from '../keys/tokens.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { table, toJson } from './format.js';
import { runMain } from './main.js';

interface Opts {
  create?: boolean;
  hostKey?: boolean;
  list?: boolean;
  invite?: boolean;
  distribute?: boolean;
  grant?: string;
  revoke?: string;
  program?: string;
  functions?: string;
  deny?: string;
  force?: boolean;
  token?: string;
  host?: string[];
  from?: string;
  expires?: string;
  json?: boolean;
  config?: string;
  for?: string;
  key?: string;
  replace?: boolean;
  join?: string;
}

const out = (s: string) => process.stdout.write(s);

/** `10m`, `2h`, `7d`, or an ISO-8601 time; returns ms since the epoch. */
function expiryTime(s: string, now = Date.now()): number {
  const d = /^(\d{1,6})d$/.exec(s);
  if (d) return now + Number(d[1]) * 86_400_000;
  const ms = parseDuration(s);
  if (ms !== undefined) return now + ms;
  const t = Date.parse(s);
  if (/^\d{4}-\d{2}-\d{2}/.test(s) && Number.isFinite(t)) return t;
  throw new RexError(ErrorCodes.USAGE, `--expires ${s}: expected a duration (30m, 2h, 7d) or an ISO-8601 time (2030-01-31T12:00:00Z)`);
}

async function context(opts: Opts): Promise<{ loaded: LoadedConfig; store: KeyStore; me: string }> {
  const loaded = await loadConfig(opts.config ? { file: opts.config } : {});
  const store = new KeyStore(loaded.config.stateDirectory);
  return { loaded, store, me: localName(loaded.config.hostName) };
}

/**
 * What joining works with: this user's own key and store, or, as root in a root installation, the host key (root's)
 * and the host controller's store (docs/ROOT.md section 7). For the latter, rex_key drops to rex.rc host-user once
 * the host key is read, so that every file of that store is written as its owner, never by root.
 */
async function joinContext(opts: Opts): Promise<{ loaded: LoadedConfig; store: KeyStore; me: string; own: OwnIdentity }> {
  const loaded = await loadConfig(opts.config ? { file: opts.config } : {});
  if (forHost(loaded)) return hostContext(loaded);
  const store = new KeyStore(loaded.config.stateDirectory);
  const me = localName(loaded.config.hostName);
  return { loaded, store, me, own: store.load(me) };
}

/** True when this run acts for the host: as root, in a root installation. */
function forHost(loaded: LoadedConfig): boolean {
  return loaded.config.installation === 'root' && process.getuid?.() === 0;
}

/** The host key and the host controller's store (root, root installation), this process then running as host-user. */
async function hostContext(loaded: LoadedConfig): Promise<{ loaded: LoadedConfig; store: KeyStore; me: string; own: OwnIdentity }> {
  const { config } = loaded;
  let own: OwnIdentity;
  try {
    own = new KeyStore(config.stateDirectory).load(config.hostName);
  } catch (e) {
    if (e instanceof RexError && e.code === ErrorCodes.KEY_MISSING) throw new RexError(ErrorCodes.KEY_MISSING, `${config.hostName} has no host key yet`, { where: e.where, hint: 'make it first: rex_key --create --host-key' });
    throw e;
  }
  const { lookupAccount } = await import('../daemon/accounts.js');
  const account = lookupAccount(config.hostUser);
  if (!account || account.uid === 0) {
    throw new RexError(ErrorCodes.USAGE, `the host controller's account ${config.hostUser} (rex.rc host-user) ${account ? 'is root; it must be a system account of its own' : 'does not exist'}`, {
      where: 'rex.rc host-user',
      hint: 'create it: systemd-sysusers (make install puts rex.conf in sysusers.d), or useradd --system --no-create-home rex',
    });
  }
  const dir = hostTrustDir(config);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory() || (st.uid !== account.uid && st.uid !== 0)) throw new RexError(ErrorCodes.DAEMON_STATE_DIR, `${dir} must be a directory of ${account.name} (rex.rc host-user)`, { where: dir, hint: 'remove it; rexd and rex_key make it again' });
  if (st.uid !== account.uid || st.gid !== account.gid) chownSync(dir, account.uid, account.gid);
  process.setgroups?.([account.gid]);
  process.setgid?.(account.gid);
  process.setuid?.(account.uid);
  return { loaded, store: new KeyStore(dir), me: config.hostName, own };
}

async function create(opts: Opts): Promise<void> {
  const { store, me, loaded } = await context(opts);
  if (opts.hostKey) {
    // The root installation's host key (docs/ROOT.md): named HOST, in the host's state directory, made by root.
    if (loaded.config.installation !== 'root') throw new RexError(ErrorCodes.USAGE, '--host-key makes the host key of a root installation, and rex.rc installation is user here', { where: 'rex.rc installation', hint: 'set installation : root in /etc/rex/rex.rc (docs/ROOT.md), or drop --host-key for your own key' });
    if (process.getuid?.() !== 0) throw new RexError(ErrorCodes.USAGE, '--host-key: only root makes the host key of a root installation', { hint: 'run it as root (sudo rex_key --create --host-key)' });
    if (opts.program) throw new RexError(ErrorCodes.USAGE, '--host-key and --program go apart: a host key stands for the host');
    const id = await store.create(loaded.config.hostName, { force: opts.force ?? false });
    if (opts.json) {
      out(toJson({ name: id.name, id: id.id, keyFile: id.keyFile, certFile: id.certFile, hostKey: true }));
      return;
    }
    out(`created host key ${id.name}\n  ID   ${id.id}\n  key  ${id.keyFile} (mode 0600)\n  cert ${id.certFile}\n`);
    return;
  }
  const name = opts.program ? `${me}.${opts.program}` : me;
  const id = await store.create(name, { force: opts.force ?? false });
  if (opts.json) {
    out(toJson({ name: id.name, id: id.id, keyFile: id.keyFile, certFile: id.certFile }));
    return;
  }
  out(`created ${id.name}\n  ID   ${id.id}\n  key  ${id.keyFile} (mode 0600)\n  cert ${id.certFile}\nNext: send it to the cluster with \`rex_key --distribute\` (a new host needs a token from \`rex_key --invite\` there).\n`);
}

async function list(opts: Opts): Promise<void> {
  const loaded = await loadConfig(opts.config ? { file: opts.config } : {});
  // As root in a root installation: the host key, and the host controller's store (the hosts this host trusts).
  const host = forHost(loaded) ? await hostContext(loaded) : undefined;
  const { store, me } = host ?? { store: new KeyStore(loaded.config.stateDirectory), me: localName(loaded.config.hostName) };
  const own = (host ? [host.own.name] : store.ownNames()).map((n) => {
    if (host) return { name: n, id: host.own.id, file: host.own.keyFile, ok: true as const };
    try {
      const k = store.load(n);
      return { name: n, id: k.id, file: k.keyFile, ok: true as const };
    } catch (e) {
      return { name: n, id: '?', file: store.keyFile(n), ok: false as const, error: (e as Error).message };
    }
  });
  const problems: string[] = [];
  const known = store.known(problems);
  const g = new GrantsFile(store.grantsFile).current();
  const pending = readPending(store);
  const tokens = new TokenStore(store.tokensFile).pending();
  const members = new HostsFile(store.stateDir).read(problems);
  if (opts.json) {
    out(
      toJson({
        identity: me,
        own,
        known: known.map((k) => ({ name: k.name, id: k.id, added: k.added, via: k.via })),
        grants: g.grants.grants.map(({ line: _l, ...x }) => ({ ...x, ...(x.expires !== undefined ? { expires: new Date(x.expires).toISOString() } : {}) })),
        revoked: g.grants.revoked.map(({ line: _l, ...x }) => x),
        grantsError: g.error?.format(),
        pendingHosts: pending,
        members,
        openInvites: tokens.length,
        problems,
      }),
    );
    return;
  }
  out(`Own identities (${store.keysDir}):\n`);
  out(own.length ? table(['NAME', 'ID', 'STATE'], own.map((o) => [o.name, o.id, o.ok ? 'ok' : `UNUSABLE: ${o.error}`])) : `  none; create one with \`rex_key --create\` (it will be ${me})\n`);
  out(`\nTrusted keys (${store.knownDir}):\n`);
  out(known.length ? table(['NAME', 'ID', 'VIA', 'ADDED'], known.map((k) => [k.name, k.id, k.via ?? '-', k.added ?? '-'])) : '  none yet (enroll with `rex_key --invite` / `--distribute --token`)\n');
  for (const p of problems) out(`  warning: ${p}\n`);
  out(`\nGrants (${store.grantsFile}):\n`);
  if (g.error) out(`  ${g.error.format().replace(/\n/g, '\n  ')}\n`);
  else if (g.grants.grants.length + g.grants.revoked.length === 0) out('  none: nobody else may use this host as this user\n');
  for (const x of g.grants.grants) out(`  ${formatGrant(x)}${x.expires !== undefined && x.expires <= Date.now() ? '   (expired)' : ''}\n`);
  for (const r of g.grants.revoked) out(`  revoke ${r.id}${r.name ? ` name=${r.name}` : ''}${r.at ? ` at=${r.at}` : ''}\n`);
  if (tokens.length) out(`\nOpen invitations: ${tokens.length} (next expires ${tokens[0]!.expires.toISOString()})\n`);
  for (const t of tokens) if (t.binding) out(`  for ${t.binding.subject}${t.binding.keyId ? ` key ${t.binding.keyId}` : ''}${t.binding.replace ? ' (may replace its known key)' : ''}${t.binding.join ? ' (to join the cluster)' : ''} until ${t.expires.toISOString()}\n`);
  if (members.length) {
    out(`\nCluster members learnt by joining (${new HostsFile(store.stateDir).file}; rex.rc servers wins for a name in both):\n`);
    out(table(['HOST', 'ADDRESS', 'IDENTITY', 'VIA'], members.map((m) => [m.name, `${m.address}:${m.port}`, m.identity ?? '-', m.via ?? '-'])));
  }
  if (pending.length) out(`\nHosts still waiting for our key (retried by the next \`rex_key --distribute\`):\n${pending.map((p) => `  ${p.host} since ${p.since}: ${p.reason}\n`).join('')}`);
}

async function doInvite(opts: Opts): Promise<void> {
  if (opts.join !== undefined) return inviteJoin(opts);
  if (!opts.for) {
    throw new RexError(ErrorCodes.USAGE, '--invite needs --for NAME: the one identity (HOST.USER or HOST.USER.PROGRAM) the token may enroll', {
      hint: 'e.g. rex_key --invite --for beta.alice; add --key ID to allow only that key',
    });
  }
  const subject = parseIdentityName(opts.for);
  if (typeof subject === 'string') throw new RexError(ErrorCodes.USAGE, `--for ${opts.for.slice(0, 80)}: ${subject}`);
  const keyId = opts.key === undefined ? undefined : parseId(opts.key);
  if (opts.key !== undefined && !keyId) throw new RexError(ErrorCodes.USAGE, `--key ${opts.key.slice(0, 80)}: not a key ID (32 characters A-Z and 2-7, dashes optional: the ID \`rex_key --list\` shows on that host)`);
  const { store, me } = await context(opts);
  const own = store.load(me);
  const ttl = opts.expires ? expiryTime(opts.expires) - Date.now() : 15 * 60_000;
  if (ttl <= 0) throw new RexError(ErrorCodes.USAGE, `--expires ${opts.expires} is in the past`);
  const t = invite(store, own, ttl, { subject: opts.for, ...(keyId ? { keyId } : {}), ...(opts.replace ? { replace: true } : {}) });
  const known = store.known().filter((k) => k.name === opts.for);
  if (opts.json) {
    out(toJson({ token: t.token, expires: t.expires.toISOString(), for: opts.for, ...(keyId ? { key: keyId } : {}), replace: opts.replace === true, server: me, serverId: own.id, knownKeys: known.map((k) => k.id) }));
    return;
  }
  out(`One-time enrollment token for ${opts.for}${keyId ? ` (key ${keyId} only)` : ''} to enroll with ${me} (key ${own.id}), valid until ${t.expires.toISOString()}:\n\n  ${t.token}\n\n`);
  out(`On the client host run:  rex_key --distribute --token ${t.token}\nIt will check that this host's key is ${own.id} before sending anything.\n`);
  if (known.length > 0 && opts.replace) {
    out(`This token REPLACES the key now known for ${opts.for} (${known.map((k) => k.id).join(', ')}): rexd removes it when the token is used, and logs it.\n`);
  } else if (known.length > 0) {
    out(`note: ${opts.for} already has a known key here (${known.map((k) => k.id).join(', ')}); this token enrolls only that same key. Its holder rotates with \`rex_key --create --force\` and \`rex_key --distribute\`; to replace a lost key, issue the token with --replace.\n`);
  }
}

/** `--invite --join HOST`: a token that admits HOST's rexd to the cluster through this host. */
async function inviteJoin(opts: Opts): Promise<void> {
  const host = opts.join!;
  if (opts.for !== undefined || opts.replace) throw new RexError(ErrorCodes.USAGE, `--invite --join HOST names the host; --${opts.for !== undefined ? 'for' : 'replace'} goes with --invite --for NAME`);
  if (!isNamePart(host)) throw new RexError(ErrorCodes.USAGE, `--join ${host.slice(0, 80)}: not a host name (1-63 letters, digits, '_' or '-'; a HOST, not HOST.USER)`);
  const keyId = opts.key === undefined ? undefined : parseId(opts.key);
  if (opts.key !== undefined && !keyId) throw new RexError(ErrorCodes.USAGE, `--key ${opts.key.slice(0, 80)}: not a key ID (32 characters A-Z and 2-7, dashes optional)`);
  const { loaded, store, me, own } = await joinContext(opts);
  if (host === loaded.config.hostName) throw new RexError(ErrorCodes.USAGE, `--join ${host} is this host; the token is for the host that will join`);
  const subject = peerIdentity(host, me);
  const ttl = opts.expires ? expiryTime(opts.expires) - Date.now() : 15 * 60_000;
  if (ttl <= 0) throw new RexError(ErrorCodes.USAGE, `--expires ${opts.expires} is in the past`);
  const known = store.known().filter((k) => k.name === subject);
  const t = invite(store, own, ttl, { subject, join: true, ...(keyId ? { keyId } : {}) });
  if (opts.json) {
    out(toJson({ token: t.token, expires: t.expires.toISOString(), join: host, for: subject, ...(keyId ? { key: keyId } : {}), server: me, serverId: own.id, knownKeys: known.map((k) => k.id) }));
    return;
  }
  out(`One-time join token for host ${host} (its rexd, ${subject}${keyId ? `, key ${keyId} only` : ''}) to join the cluster through ${me} (key ${own.id}), valid until ${t.expires.toISOString()}:\n\n  ${t.token}\n\n`);
  out(`On ${host} run:  rex_key --join ${loaded.config.hostName}\nand paste the token (or give it with --token, where other users can see it in ps).\n`);
  out(`It checks that this host's key is ${own.id} before sending anything; ${host} then becomes a peer of every member. Grants for users and programs stay yours to give (rex_key --grant).\n`);
  if (known.length > 0) out(`note: ${subject} already has a known key here (${known.map((k) => k.id).join(', ')}); only that same key can join with this token.\n`);
}

/** The join token: --token, else one line on stdin (so that it is not in ps). */
async function readToken(opts: Opts, host: string): Promise<string> {
  if (opts.token) return opts.token;
  if (process.stdin.isTTY) process.stderr.write(`Join token (printed by rex_key --invite --join on ${host}): `);
  let text = '';
  for await (const chunk of process.stdin) {
    text += String(chunk);
    if (text.includes('\n') || text.length > 1000) break;
  }
  const line = text.split('\n').find((l) => l.trim() !== '');
  if (!line) throw new RexError(ErrorCodes.USAGE, `--join ${host} needs the join token on stdin (or --token TOKEN)`, { hint: `on ${host}, its owner runs \`rex_key --invite --join HOST\` naming this host` });
  return line;
}

/** `--join HOST`: join the cluster of member HOST with a join token. */
async function join(opts: Opts): Promise<void> {
  const arg = opts.join!;
  const { loaded, store, own } = await joinContext(opts);
  const cfg = loaded.config;
  const servers = mergeServers(cfg.servers, new HostsFile(store.stateDir).read());
  const entry = servers.find((s) => s.name === arg) ?? parseHostArg(arg);
  if (!entry) throw new RexError(ErrorCodes.HOST_UNKNOWN, `host ${arg} is not in rex.rc servers`, { hint: 'give it as NAME@ADDRESS:PORT' });
  const token = parseToken(await readToken(opts, entry.name));
  const tokenHost = token.server.split('.')[0]!;
  if (tokenHost !== entry.name) throw new RexError(ErrorCodes.USAGE, `the token was issued by ${token.server}, not by a rexd of host ${entry.name}`, { hint: `run rex_key --join ${tokenHost}` });
  // Where this rexd listens, as others should reach it: its own servers entry, else rex.rc listen (a wildcard address: the member takes the source).
  const self = cfg.servers.find((s) => s.name === cfg.hostName);
  const wildcard = /^(0\.0\.0\.0|::|\*)$/.test(cfg.listen.address);
  const advertise = self ? { address: self.address, port: self.port } : { ...(wildcard ? {} : { address: cfg.listen.address }), port: cfg.listen.port };
  out(`Joining the cluster of ${token.server} (key ${token.serverId}) at ${entry.name}@${entry.address}:${entry.port} as ${own.name} (key ${own.id})\n`);
  const r = await joinCluster({ entry, own, store, token, advertise, timeoutMs: cfg.peerTimeout });
  out(`  ${entry.name}: now knows ${r.name} (key ${r.id}) as a peer; server ${r.server} key ${r.serverId} verified against the token\n`);
  for (const x of r.members) {
    out(`  ${x.name}: ${x.trusted ? `key ${x.id} at ${x.address}:${x.port}, introduced by ${r.server}` : 'NOT trusted'}${x.problem ? `\n    warning: ${x.problem}` : ''}\n`);
  }
  if (r.members.length === 0) out(`  (${r.server} named no other member)\n`);
  out(`Peers: ${[r.server, ...r.members.filter((x) => x.trusted).map((x) => x.name)].join(', ')}; written to ${new HostsFile(store.stateDir).file}. Users and programs still need grants (rex_key --grant).\n`);
  const failed = r.members.filter((x) => !x.trusted || x.problem);
  if (failed.length > 0) throw new RexError(ErrorCodes.ENROLL_FAILED, `joined through ${r.server}, but ${failed.length} member(s) did not take part: ${failed.map((x) => x.name).join(', ')}`, { hint: `when they are back, ask the owner of ${r.server} for a new token and run rex_key --join ${entry.name} again` });
}

async function distribute(opts: Opts): Promise<void> {
  const { loaded, store, me } = await context(opts);
  const cfg = loaded.config;
  const name = opts.program ? `${me}.${opts.program}` : me;
  const own = store.load(name);
  const servers = mergeServers(cfg.servers, new HostsFile(store.stateDir).read());
  const byName = new Map(servers.map((s) => [s.name, s]));
  const token = opts.token ? parseToken(opts.token) : undefined;
  let targets: ServerEntry[];
  if (token) {
    const host = opts.host?.[0] ?? token.server.split('.')[0]!;
    const entry = byName.get(host) ?? parseHostArg(host);
    if (!entry) throw new RexError(ErrorCodes.HOST_UNKNOWN, `the token is for ${token.server}, but host ${host} is not in rex.rc servers`, { hint: 'add it to servers, or give --host ADDRESS:PORT' });
    targets = [entry];
  } else if (opts.host?.length) {
    targets = opts.host.map((h) => {
      const e = byName.get(h) ?? parseHostArg(h);
      if (!e) throw new RexError(ErrorCodes.HOST_UNKNOWN, `host ${h} is not in rex.rc servers (known: ${[...byName.keys()].join(', ') || 'none'})`);
      return e;
    });
  } else {
    targets = servers.filter((s) => s.name !== cfg.hostName);
    if (targets.length === 0) throw new RexError(ErrorCodes.USAGE, 'rex.rc lists no other servers to distribute to', { hint: 'add the cluster to `servers`, or give --token' });
  }
  out(`Distributing ${own.name} (key ${own.id}) to ${targets.map((t) => t.name).join(', ')}\n`);
  const pending = new Map(readPending(store).map((p) => [p.host, p]));
  for (const p of pending.values()) if (!targets.some((t) => t.name === p.host) && byName.has(p.host)) targets.push(byName.get(p.host)!);
  let failures = 0;
  for (const entry of targets) {
    const was = pending.get(entry.name);
    if (was) out(`  ${entry.name}: retrying (pending since ${was.since})\n`);
    try {
      let r;
      try {
        r = await enrollWith({ entry, own, store, ...(token ? { token } : {}), timeoutMs: cfg.peerTimeout });
      } catch (e) {
        // After `--create --force` the host may know only the previous key: announce the new one over a connection it authenticates.
        const prev = !token && /unknown key/.test((e as Error).message) ? loadPrev(store, name) : undefined;
        if (!prev) throw e;
        r = await enrollWith({ entry, own: prev, next: own, store, timeoutMs: cfg.peerTimeout });
        out(`  ${entry.name}: replaced the previous key ${prev.id} with ${own.id}\n`);
      }
      pending.delete(entry.name);
      out(`  ${entry.name}: ${r.already ? 'already knows' : 'now knows'} ${r.name} (key ${r.id}); server ${r.server} key ${r.serverId} verified${token ? ' against the token' : ''}\n`);
    } catch (e) {
      failures++;
      const err = e as RexError;
      const reason = err.message;
      const unreachable = /ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|timed out|ETIMEDOUT|closed/.test(reason) && err.code !== ErrorCodes.AUTH_DENIED;
      if (unreachable || err.code === ErrorCodes.KEY_UNKNOWN) {
        const p: PendingHost = { host: entry.name, since: was?.since ?? new Date().toISOString(), reason: unreachable ? 'unreachable' : 'needs a token' };
        pending.set(entry.name, p);
      }
      out(`  ${entry.name}: FAILED: ${reason}${err.hint ? `\n    hint: ${err.hint}` : ''}${unreachable ? '\n    (will be retried by the next rex_key --distribute)' : ''}\n`);
    }
  }
  writePending(store, [...pending.values()]);
  if (failures > 0) throw new RexError(ErrorCodes.ENROLL_FAILED, `${failures} of ${targets.length} hosts did not receive the key`);
}

function loadPrev(store: KeyStore, name: string): OwnIdentity | undefined {
  try {
    return store.load(name, { prev: true });
  } catch {
    return undefined;
  }
}

/** `NAME@ADDRESS:PORT` or `ADDRESS:PORT` given on the command line. */
function parseHostArg(s: string): ServerEntry | undefined {
  const m = /^(?:([A-Za-z0-9_-]+)@)?([^:@\s]+):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  return { name: m[1] ?? m[2]!, address: m[2]!, port: Number(m[3]) };
}

async function grant(opts: Opts): Promise<void> {
  const { store } = await context(opts);
  const r = addGrant(store, opts.grant!, {
    ...(opts.program ? { program: opts.program } : {}),
    ...(opts.functions !== undefined ? { functions: opts.functions.split(',') } : {}),
    ...(opts.deny !== undefined ? { deny: opts.deny.split(',') } : {}),
    ...(opts.from ? { from: opts.from } : {}),
    ...(opts.expires ? { expires: expiryTime(opts.expires) } : {}),
  });
  out(`granted: ${r.line}\n`);
  if (r.subject.keys.length === 0) out(`  note: no key of ${opts.grant} is known here yet; the grant applies once it enrolls (rex_key --invite)\n`);
  for (const k of r.subject.keys) out(`  key ${k.id} (${k.name})\n`);
}

async function revoke(opts: Opts): Promise<void> {
  const loaded = await loadConfig(opts.config ? { file: opts.config } : {});
  if (forHost(loaded) && !opts.revoke!.includes('.')) {
    // A host key (HOST, or its ID): revoked in the host controller's store, for every user of this host.
    if (opts.program) throw new RexError(ErrorCodes.USAGE, '--program goes with a user\'s identity; a host key is revoked whole');
    const { store } = await hostContext(loaded);
    const r = revokeHost(store, opts.revoke!);
    for (const k of r.removedKeys) out(`no longer trusted: host key ${k}\n`);
    for (const l of r.revoked) out(`added:   ${l}\n`);
    if (r.member) out(`removed ${opts.revoke} from the members (${new HostsFile(store.stateDir).file})\n`);
    out("rexd refuses that key from now on and ends its open connections; no member's introduction brings it back.\n");
    return;
  }
  const { store } = await context(opts);
  const r = revokeGrants(store, opts.revoke!, opts.program ? { program: opts.program } : {});
  for (const l of r.removed) out(`removed: ${l}\n`);
  for (const l of r.revoked) out(`added:   ${l}\n`);
  if (r.removed.length + r.revoked.length === 0) out(`nothing to revoke: ${opts.revoke} has no grant here\n`);
  else out('rexd applies this to the next request and closes the open sessions of the revoked identity.\n');
}

const program = new Command('rex_key')
  .description("manage this user's REX keys, trusted keys and grants (docs/KEYS.md)")
  .option('-c, --create', 'make the key pair of this host and user (or of a program with -p)')
  .option('-l, --list', 'show own identities and their IDs, trusted keys, grants and pending hosts')
  .option('-i, --invite', 'print a one-time enrollment token for this host (with --for NAME)')
  .option('-d, --distribute', 'send this identity\'s key to every host in rex.rc servers (or --host)')
  .option('-g, --grant <name-or-id>', 'let an identity (HOST.USER[.PROGRAM] or key ID) use this host as this user')
  .option('-r, --revoke <name-or-id>', 'withdraw the grants of an identity and refuse its keys')
  .option('-p, --program <name>', 'the PROGRAM of a HOST.USER.PROGRAM identity (create, distribute, grant, revoke)')
  .option('-f, --force', 'with --create: replace an existing key (the old one is kept as .prev)')
  .option('--host-key', "with --create, as root in a root installation: make the host key HOST that the root rexd presents to the other hosts (docs/ROOT.md)")
  .option('-t, --token <token>', 'with --distribute or --join: the token from `rex_key --invite` on the server (--join reads it from stdin without this)')
  .option('-H, --host <name...>', 'with --distribute: only these hosts (servers names, or NAME@ADDRESS:PORT)')
  .option('--functions <f,g>', 'with --grant and a program: only these functions of it may be called (and nothing run by EXEC)')
  .option('--deny <f,g>', 'with --grant and a program: these functions of it may not be called')
  .option('--from <host>', 'with --grant: only from this host, address, CIDR range or localnets')
  .option('--for <name>', 'with --invite: the one identity (HOST.USER[.PROGRAM]) the token may enroll (required)')
  .option('--key <id>', 'with --invite: only the key with this ID may use the token')
  .option('-j, --join <host>', 'join the cluster of member HOST (the token on stdin, or --token); with --invite: a token for host HOST to join')
  .option('--replace', 'with --invite: the token may replace the key known for --for NAME (a lost or compromised key)')
  .option('-e, --expires <when>', 'with --grant or --invite: a duration (30m, 2h, 7d) or an ISO-8601 time')
  .option('--json', 'with --list, --create or --invite: machine-readable output')
  .option('--config <file>', 'rex.rc to read (default: $REX_CONFIG, ./rex.rc, ~/rex.rc, ...)')
  .action(async (opts: Opts) => {
    // --join is an action of its own, and with --invite names the host the token is for.
    const actions = (['create', 'list', 'invite', 'distribute', 'join', 'grant', 'revoke'] as const).filter((a) => opts[a] !== undefined && opts[a] !== false && !(a === 'join' && opts.invite));
    if (actions.length !== 1) {
      throw new RexError(ErrorCodes.USAGE, actions.length === 0 ? 'say what to do: --create, --list, --invite, --distribute, --join, --grant or --revoke' : `one action at a time, got --${actions.join(', --')}`);
    }
    if (actions[0] !== 'invite') {
      const stray = (['for', 'key', 'replace'] as const).filter((o) => opts[o] !== undefined);
      if (stray.length > 0) throw new RexError(ErrorCodes.USAGE, `--${stray.join(', --')} ${stray.length > 1 ? 'go' : 'goes'} with --invite only`);
    }
    if ((opts.functions !== undefined || opts.deny !== undefined) && !opts.grant) throw new RexError(ErrorCodes.USAGE, `--${opts.functions !== undefined ? 'functions' : 'deny'} goes with --grant`);
    if (opts.token !== undefined && actions[0] !== 'distribute' && actions[0] !== 'join') throw new RexError(ErrorCodes.USAGE, '--token goes with --distribute or --join');
    if (opts.json && !['list', 'create', 'invite'].includes(actions[0]!)) throw new RexError(ErrorCodes.USAGE, `--json goes with --list, --create or --invite, not --${actions[0]}`);
    const run = { create, list, invite: doInvite, distribute, join, grant, revoke }[actions[0]!];
    await run(opts);
  });

await runMain(program);
