/**
 * rexd's keys side (docs/KEYS.md): who a TLS connection is (authentication at
 * HELLO, turning a pending session into a peer or a restricted one), what it
 * may do (the grants, re-read on change; sessions whose grant is revoked or
 * whose key is replaced are closed at once), and in rexd's request table ENROLL
 * (a new key with a one-time token, a re-sent known key, a rotated key), JOIN
 * (a host joins the cluster with a join token) and INTRODUCE (a member vouches
 * for a host that joined through it).
 * In a root installation this is the privileged part: it holds the trust store.
 */
import { X509Certificate } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import type { RexConfig, ServerEntry } from '../config/index.js';
import { clientAllowed } from '../config/clients.js';
import type { Request, RequestTable } from '../daemon/dispatch.js';
import type { DaemonLog, Logger } from '../daemon/log.js';
import { enrolled, restrict, toPeer, toRestricted, type Authenticated, type Endpoint, type PeerSession, type RestrictedSession } from '../daemon/session.js';
import type { PeerHello, Reply } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import type { MessageOf } from '../protocol/messages.js';
import { certInfo, type CertInfo } from './certs.js';
import { decide, GrantsFile, type Decision, type Requester } from './grants.js';
import { addPeerGrant, isRevoked } from './admin.js';
import { HostsFile } from './hosts.js';
import { hostOfIdentity, isHostKeyName, isPeerIdentity, parseIdentityName, peerIdentity } from './identity.js';
import type { KeyStore, OwnIdentity } from './store.js';
import { proofMatches, TokenStore } from './tokens.js';

/** What the keys side needs of the daemon. */
export interface KeysContext {
  config: RexConfig;
  store: KeyStore;
  /** This daemon's identity name: HOST.USER, or HOST for a root installation's host controller (docs/ROOT.md section 7). */
  name: string;
  /** This daemon's key (loaded at start). */
  own: () => OwnIdentity;
  log: Logger;
  txlog: DaemonLog;
  /** The open sessions (for revocation). */
  sessions: ReadonlySet<Endpoint>;
  /** The cluster's hosts: rex.rc servers and the joined members (hosts.ts); default rex.rc servers. */
  members?: () => ServerEntry[];
  /** The hosts file changed: the daemon links to new members. */
  membersChanged?: () => void;
  /** Sends INTRODUCE to a member over this rexd's peer link to it; rejects with the reason it failed. */
  introduce?: (member: ServerEntry, m: Omit<MessageOf<'INTRODUCE'>, 'type' | 'stream'>) => Promise<MessageOf<'INTRODUCED'>>;
}

/** What the monitor established about a host-based connection (docs/ROOT.md section 3). */
export interface HostbasedFacts {
  /** The connecting host's key, known to the monitor under that host's name. */
  hostKey: CertInfo;
  /** The user that host asserts, before rex.rc user-map. */
  remoteUser: string;
  /** How the monitor mapped it to this controller's account (`same name`, or the user-map entry). */
  mappedVia: string;
}

export class KeysService {
  private readonly grants: GrantsFile;
  private readonly tokens: TokenStore;
  private readonly hosts: HostsFile;
  private watcher: FSWatcher | undefined;
  private knownWatcher: FSWatcher | undefined;

  constructor(private readonly ctx: KeysContext) {
    this.grants = new GrantsFile(ctx.store.grantsFile);
    this.tokens = new TokenStore(ctx.store.tokensFile);
    this.hosts = new HostsFile(ctx.store.stateDir);
  }

  private members(): ServerEntry[] {
    return this.ctx.members?.() ?? [...this.ctx.config.servers];
  }

  /** ENROLL in the request table: the only request of a restricted session; its handler checks the token or the key. */
  register(table: RequestTable): void {
    table.register('ENROLL', {
      roles: ['restricted', 'peer'],
      auth: 'handler',
      privilege: ['key-store'],
      newWork: true,
      logKind: 'enroll',
      refuse: { client: 'ENROLL is served on the TLS port only (rex_key --distribute)' },
      handler: (m, req) => this.enroll(m, req),
    });
    table.register('JOIN', {
      roles: ['restricted', 'peer'],
      auth: 'handler',
      privilege: ['key-store', 'host-key'],
      newWork: true,
      logKind: 'enroll',
      refuse: { client: 'JOIN is served on the TLS port only (rex_key --join)' },
      handler: (m, req) => this.join(m, req),
    });
    // Only a peer sends it, and the handler checks it is one (a host's rexd, not a user's or program's key).
    table.register('INTRODUCE', {
      roles: ['peer'],
      auth: 'grant-any',
      privilege: ['key-store'],
      newWork: true,
      logKind: 'enroll',
      refuse: { client: 'INTRODUCE is sent by a member rexd to another, on the TLS port' },
      handler: (m, req) => this.introduced(m, req),
    });
  }

  /** The grants check for a requester; a voided grants file refuses with its own error. */
  check(who: Requester, anyProgram: boolean, fn?: string): Decision {
    const { config, name } = this.ctx;
    const cur = this.grantsNow();
    if (cur.error) return { ok: false, reason: `access to ${name} is refused: ${cur.error.where ? `${cur.error.where}: ` : ''}${cur.error.message}` };
    // The host controller: its peers are the host keys it knows, unless revoked; it has no users to grant.
    if (this.hostMode) {
      const known = this.ctx.store.knownById(who.id);
      if (!isHostKeyName(who.name) || who.program !== undefined || who.hostbased) return { ok: false, reason: `${name}'s host controller serves other hosts' keys only, not ${who.name}` };
      if (!known || known.name !== who.name) return { ok: false, reason: `host key ${who.id} (${who.name}) is not known on ${name}; a host joins with \`rex_key --join\`` };
      const rev = cur.grants.revoked.find((r) => r.id === who.id);
      if (rev) return { ok: false, reason: `host key ${who.id} (${who.name}) was revoked${rev.at ? ` at ${rev.at}` : ''} on ${name}` };
      return { ok: true, grant: { name: who.name, line: 0 } };
    }
    // Root installation: the same user on a joined host is this user's own rexd there, as every rexd of a user's
    // cluster is a peer in the per-user installation; a revoke line for that host's key still refuses it.
    if (who.hostbased && who.name === `${who.name.split('.')[0]}.${this.user}`) {
      const rev = cur.grants.revoked.find((r) => r.id === who.id);
      if (rev) return { ok: false, reason: `host key ${who.id} (${who.name.split('.')[0]}) was revoked${rev.at ? ` at ${rev.at}` : ''} on ${name}` };
      return { ok: true, grant: { name: who.name, line: 0 } };
    }
    return decide(cur.grants, who, {
      anyProgram,
      self: name,
      ...(fn !== undefined ? { function: fn } : {}),
      hostAddress: (n) => (config.servers.find((s) => s.name === n) ?? this.members().find((s) => s.name === n))?.address,
    });
  }

  /** True in a root installation's host controller, whose identity is the host key HOST (docs/ROOT.md section 7). */
  private get hostMode(): boolean {
    return isHostKeyName(this.ctx.name);
  }

  /** The USER part of this daemon's identity. */
  private get user(): string {
    return this.ctx.name.split('.')[1] ?? '';
  }

  /**
   * A host-based connection's HELLO (root installation, docs/ROOT.md): the monitor checked the host key and
   * mapped the asserted user to this controller's account. The requester is HOST.USER of the remote side,
   * with the host key's ID; the grants decide as for any key, except that the same user of a joined host is
   * this user's own peer.
   */
  authenticateHostbased(from: Endpoint, hello: PeerHello, facts: HostbasedFacts): void {
    const p = from.session;
    if (p.state !== 'pending' || p.transport !== 'tls') throw new ProtocolError('UNEXPECTED', 'HELLO on a session that has one');
    const deny = (reason: string) => this.ctx.txlog.deny(from, reason);
    const host = facts.hostKey.name;
    if (hello.role === 'daemon') throw deny('role daemon is for answers only');
    if (hello.host !== undefined && hello.host !== host) throw deny(`HELLO says host "${hello.host}", but the connection comes from host ${host}'s rexd`);
    const base = `${host}.${facts.remoteUser}`;
    // Host-based connections come from the other host's session controller (a rexd) in role peer: for the same user
    // that is this user's own peer; for another user mapped here by user-map, the grants below decide, as for any key.
    const requester: Requester = { id: facts.hostKey.id, name: base, address: from.address, hostbased: true, ...(hello.program ? { program: hello.program } : {}) };
    const identity = hello.program ? `${base}.${hello.program}` : base;
    const known = { name: host, id: facts.hostKey.id, certPem: facts.hostKey.pem, file: '(host key, checked by the monitor)', via: 'host' };
    const a: Authenticated = { identity, cert: facts.hostKey, requester, programKey: false, known };
    const d = this.check(requester, true);
    if (!d.ok) {
      from.session = toRestricted(p, a, d.reason);
      return;
    }
    const s = (from.session = toPeer(p, { ...a, known }));
    this.ctx.txlog.record({ kind: 'auth', identity: s.identity, identityId: facts.hostKey.id, fromHost: host, peerAddress: from.address, outcome: 'ok', reason: `host-based: ${host} asserts ${facts.remoteUser} (${facts.mappedVia})` });
  }

  /**
   * Runs at a TLS peer's HELLO: everything that can be decided about who this
   * is. The session becomes a peer, or restricted (it may still ENROLL); an
   * impostor or a refused address is denied and the connection closed.
   */
  authenticate(from: Endpoint, hello: PeerHello): void {
    const { config, store, name } = this.ctx;
    const p = from.session;
    if (p.state !== 'pending' || p.transport !== 'tls') throw new ProtocolError('UNEXPECTED', 'HELLO on a session that has one');
    const deny = (reason: string) => this.ctx.txlog.deny(from, reason);
    const { cert } = p;
    if (config.clients.length > 0 && !clientAllowed(config.clients, from.address, config.servers.filter((s) => s.address === from.address).map((s) => s.name))) {
      throw deny(`address ${from.address} is not in the clients list of ${config.hostName} (rex.rc clients: ${config.clients.join(', ')})`);
    }
    if (!cert) throw deny('no client certificate: REX peers authenticate with their key (rex_key --create)');
    if (this.hostMode) return this.authenticateHost(from, hello, cert);
    const claimed = parseIdentityName(cert.name);
    if (typeof claimed === 'string') throw deny(`the certificate's name is not an identity: ${claimed}`);
    if (hello.role === 'daemon') throw deny('role daemon is for answers only');
    const known = store.knownById(cert.id);
    if (known && known.name !== cert.name) {
      throw deny(`key ${cert.id} is known here as ${known.name}, but its certificate claims to be ${cert.name}; refusing the impostor`);
    }
    if (hello.host !== undefined || hello.role === 'peer') {
      if (hello.host !== claimed.host) throw deny(`HELLO says host "${hello.host ?? ''}", but key ${cert.id} belongs to ${cert.name}`);
    }
    // A peer rexd is HOST.USER of this user exactly: a program key or another user's key is not a peer.
    const self = parseIdentityName(name);
    if (hello.role === 'peer' && (claimed.program !== undefined || typeof self === 'string' || claimed.user !== self.user)) {
      throw deny(`role peer is for the rexd of another host of ${typeof self === 'string' ? 'this user' : `user ${self.user}`} (HOST.${typeof self === 'string' ? 'USER' : self.user}), not for ${cert.name}; connect as a client`);
    }
    const requester: Requester = { id: cert.id, name: `${claimed.host}.${claimed.user}`, address: from.address, ...(claimed.program ? { program: claimed.program } : {}) };
    let identity = cert.name;
    if (!claimed.program && hello.program) {
      requester.program = hello.program;
      identity = `${cert.name}.${hello.program}`;
    }
    const a: Authenticated = { identity, cert, requester, programKey: claimed.program !== undefined, ...(known ? { known } : {}) };
    if (!known) {
      // It may still ENROLL with a token.
      from.session = toRestricted(
        p,
        a,
        `unknown key ${cert.id} (claims to be ${cert.name}); ${name} has never enrolled it. Ask the owner of ${config.hostName} to run \`rex_key --invite --for ${cert.name}\` there, then run \`rex_key --distribute --token TOKEN\``,
      );
      return;
    }
    const d = this.check(requester, true);
    if (!d.ok) {
      from.session = toRestricted(p, a, d.reason); // it may still re-send its key (ENROLL); everything else is refused
      return;
    }
    const s = (from.session = toPeer(p, { ...a, known }));
    this.ctx.txlog.record({ kind: 'auth', identity: s.identity, identityId: cert.id, fromHost: s.fromHost, peerAddress: from.address, outcome: 'ok' });
  }

  /**
   * The host controller's HELLO (docs/ROOT.md section 7): the monitor routed here a host key, known (a member's
   * host controller, to INTRODUCE) or not (a host that may only JOIN with a token bound to its name).
   */
  private authenticateHost(from: Endpoint, hello: PeerHello, cert: CertInfo): void {
    const { store, name } = this.ctx;
    const p = from.session;
    if (p.state !== 'pending' || p.transport !== 'tls') throw new ProtocolError('UNEXPECTED', 'HELLO on a session that has one');
    const deny = (reason: string) => this.ctx.txlog.deny(from, reason);
    if (!isHostKeyName(cert.name)) throw deny(`${name}'s host controller serves host keys (HOST) only, not ${cert.name}`);
    if (hello.role === 'daemon') throw deny('role daemon is for answers only');
    if (hello.host !== undefined && hello.host !== cert.name) throw deny(`HELLO says host "${hello.host}", but key ${cert.id} belongs to host ${cert.name}`);
    const known = store.knownById(cert.id);
    if (known && known.name !== cert.name) throw deny(`key ${cert.id} is known here as ${known.name}, but its certificate claims to be ${cert.name}; refusing the impostor`);
    const requester: Requester = { id: cert.id, name: cert.name, address: from.address };
    const a: Authenticated = { identity: cert.name, cert, requester, programKey: false, ...(known ? { known } : {}) };
    if (!known) {
      from.session = toRestricted(p, a, `unknown host key ${cert.id} (claims to be host ${cert.name}); it may only JOIN, with a token from \`rex_key --invite --join ${cert.name}\` on a member`);
      return;
    }
    const d = this.check(requester, true);
    if (!d.ok) {
      from.session = toRestricted(p, a, d.reason);
      return;
    }
    const s = (from.session = toPeer(p, { ...a, known }));
    this.ctx.txlog.record({ kind: 'auth', identity: s.identity, identityId: cert.id, fromHost: cert.name, peerAddress: from.address, outcome: 'ok', reason: 'host key, known to the host controller' });
  }

  // ------------------------------------------------------------ enrollment

  /** Serves ENROLL: a new key with a one-time token, a re-sent known key, or a rotated key. */
  private enroll(m: MessageOf<'ENROLL'>, req: Request): Reply {
    const { store, name, log, txlog } = this.ctx;
    const { from } = req;
    const session = req.session as PeerSession | RestrictedSession;
    const deny = (reason: string) => txlog.deny(from, reason, true);
    const cert = session.cert;
    const restricted = session.state === 'restricted' ? session.reason : undefined;
    const answer = (n: string, id: string, already: boolean): Reply => ({ type: 'ENROLLED', server: name, serverId: this.ctx.own().id, name: n, id, already });
    if (this.hostMode) throw deny(`${name}'s host controller enrolls no key: a host joins with \`rex_key --join\`, a user's key enrolls with that user's session controller`);
    if (m.secret === undefined) {
      if (!session.known) throw deny(restricted ?? `unknown key ${cert.id}`);
      if (m.cert === undefined) return answer(cert.name, cert.id, true);
      // Rotation: a granted identity sends its new certificate over a connection authenticated by the old key.
      if (restricted) throw deny(`cannot replace the key of ${cert.name}: ${restricted}`);
      let info: CertInfo;
      try {
        info = certInfo(m.cert, 'new certificate');
      } catch (e) {
        throw deny(`key rotation refused: ${(e as Error).message}`);
      }
      if (info.name !== cert.name) throw deny(`key rotation refused: a rotated key must keep its name, but ${cert.name} sent a certificate for ${info.name}`);
      const clash = store.knownById(info.id);
      if (clash && clash.name !== cert.name) throw deny(`key rotation refused: key ${info.id} already belongs to ${clash.name}`);
      // The self-signature shows that whoever made the certificate holds the new key.
      if (!new X509Certificate(info.der).verify(new X509Certificate(info.der).publicKey)) {
        throw deny('key rotation refused: the new certificate is not signed by its own key');
      }
      const next = store.addKnown(info.pem, 'rotation', 'new certificate');
      if (next.id !== cert.id) store.removeKnown(cert.id);
      req.note({ reason: `rotated ${cert.name}: key ${cert.id} replaced by ${next.id} over a connection authenticated by the old key` });
      log.info({ identity: cert.name, old: cert.id, id: next.id }, 'key rotated');
      return answer(next.name, next.id, false);
    }
    if (!m.proof || !proofMatches(m.secret, cert.id, this.ctx.own().id, m.proof)) {
      throw deny('enrollment proof does not match the token and this key; the token was not used');
    }
    // Every check that can refuse comes before the token is spent: a refused enrollment leaves it usable.
    let binding;
    try {
      ({ binding } = this.tokens.check(m.secret));
    } catch (e) {
      throw deny(`enrollment refused: ${(e as Error).message}`);
    }
    if (binding.join) throw deny(`enrollment refused: the token was issued for joining the cluster: run rex_key --join ${this.ctx.config.hostName} with it; the token was not used`);
    if (binding.subject !== cert.name) {
      throw deny(`enrollment refused: the token was issued for ${binding.subject}, not for ${cert.name}; the token was not used`);
    }
    if (binding.keyId !== undefined && binding.keyId !== cert.id) {
      throw deny(`enrollment refused: the token was issued for key ${binding.keyId} of ${binding.subject}, not for key ${cert.id}; the token was not used`);
    }
    if (cert.name === name) throw deny(`enrollment refused: ${cert.name} is this host's own identity; the token was not used`);
    const old = store.known().filter((k) => k.name === cert.name && k.id !== cert.id);
    if (old.length > 0 && !binding.replace) {
      throw deny(
        `enrollment refused: ${cert.name} already has a known key (${old.map((k) => k.id).join(', ')}), and enrollment never replaces a known key; the token was not used. ` +
          `To rotate, the holder of that key runs \`rex_key --create --force\` and \`rex_key --distribute\` (the new key is announced over a connection authenticated by the old one); ` +
          `if that key is lost or compromised, the owner of ${name} runs \`rex_key --invite --for ${cert.name} --replace\``,
      );
    }
    try {
      this.tokens.consume(m.secret, cert.id);
    } catch (e) {
      throw deny(`enrollment refused: ${(e as Error).message}`);
    }
    for (const k of old) store.removeKnown(k.id);
    const k = store.addKnown(cert.pem, 'token', 'peer certificate');
    // The session stays what it was (a restricted one reconnects to be a peer), now with its key known.
    if (from.session.state === 'peer' || from.session.state === 'restricted') from.session = enrolled(from.session, k);
    if (old.length > 0) {
      const note = `replaced key ${old.map((x) => x.id).join(', ')} of ${k.name} by ${k.id} (a token issued with --replace)`;
      req.note({ reason: note });
      log.warn({ identity: k.name, old: old.map((x) => x.id), id: k.id, peer: from.address }, 'replaced a known key with a --replace token');
      this.closeSessionsOf(new Set(old.map((x) => x.id)), `key replaced: ${note}`);
    } else log.info({ identity: k.name, id: k.id, peer: from.address }, 'enrolled a key with a token');
    return answer(k.name, k.id, false);
  }

  // ------------------------------------------------------------ joining a cluster

  /**
   * Serves JOIN (docs/KEYS.md "Joining a cluster"): the checks of a token
   * enrollment, for a token issued with --join and a peer identity; then the
   * joining host is known and granted here as a peer, recorded in the hosts
   * file, introduced to every other member, and given their keys and addresses.
   */
  private async join(m: MessageOf<'JOIN'>, req: Request): Promise<Reply> {
    const { store, name, log, txlog } = this.ctx;
    const { from } = req;
    const session = req.session as PeerSession | RestrictedSession;
    const cert = session.cert;
    const deny = (reason: string) => txlog.deny(from, reason, true);
    if (!proofMatches(m.secret, cert.id, this.ctx.own().id, m.proof)) throw deny('join refused: the proof does not match the token and this key; the token was not used');
    let binding;
    try {
      ({ binding } = this.tokens.check(m.secret));
    } catch (e) {
      throw deny(`join refused: ${(e as Error).message}`);
    }
    if (!binding.join) throw deny(`join refused: the token was issued to enroll ${binding.subject} (rex_key --invite --for), not to join the cluster (rex_key --invite --join HOST); the token was not used`);
    if (binding.subject !== cert.name) throw deny(`join refused: the token was issued for ${binding.subject}, not for ${cert.name}; the token was not used`);
    if (binding.keyId !== undefined && binding.keyId !== cert.id) throw deny(`join refused: the token was issued for key ${binding.keyId} of ${binding.subject}, not for key ${cert.id}; the token was not used`);
    if (!isPeerIdentity(cert.name, name)) throw deny(`join refused: ${cert.name} is not another host's rexd of this cluster; the token was not used`);
    // A joining host cannot take an existing member's name: a name with another known key stays that key's.
    const old = store.known().filter((k) => k.name === cert.name && k.id !== cert.id);
    if (old.length > 0) {
      throw deny(
        `join refused: ${cert.name} is already a member with key ${old.map((k) => k.id).join(', ')}, and joining never replaces a member's key; the token was not used. ` +
          `If that key is lost or compromised, the owner of ${name} runs \`rex_key --invite --for ${cert.name} --replace\``,
      );
    }
    if (isRevoked(store, cert.id)) throw deny(`join refused: key ${cert.id} (${cert.name}) is revoked on ${name}; the token was not used`);
    try {
      this.tokens.consume(m.secret, cert.id);
    } catch (e) {
      throw deny(`join refused: ${(e as Error).message}`);
    }
    const k = store.addKnown(cert.pem, 'join', 'joining host certificate');
    if (from.session.state === 'peer' || from.session.state === 'restricted') from.session = enrolled(from.session, k);
    addPeerGrant(store, k.name);
    const host = hostOfIdentity(k.name)!;
    // A wildcard listen address says nothing about where others reach it: the address it came from does.
    const address = m.address && !/^(0\.0\.0\.0|::|\*)$/.test(m.address) ? m.address : from.address;
    this.hosts.upsert({ name: host, address, port: m.port, identity: k.name, id: k.id, via: 'join' });
    this.ctx.membersChanged?.();
    const members: MessageOf<'JOINED'>['members'] = [];
    const told: string[] = [];
    for (const s of this.members()) {
      if (s.name === host || s.name === this.ctx.config.hostName) continue;
      const pid = peerIdentity(s.name, name);
      const keys = store.known().filter((x) => x.name === pid);
      // A member is a host whose rexd key this host knows, pinned to one key, and still granted.
      if (keys.length !== 1 || !this.check({ id: keys[0]!.id, name: pid, address: s.address }, true).ok) continue;
      let error: string | undefined;
      try {
        if (!this.ctx.introduce) throw new Error('this rexd cannot reach its members');
        await this.ctx.introduce(s, { cert: cert.der, address, port: m.port });
        told.push(s.name);
      } catch (e) {
        error = (e as Error).message;
      }
      members.push({ name: pid, cert: certInfo(keys[0]!.certPem, keys[0]!.file).der, address: s.address, port: s.port, ...(error !== undefined ? { error } : {}) });
    }
    const failed = members.filter((x) => x.error !== undefined);
    const note = `${k.name} (key ${k.id}) joined from ${address}:${m.port}; introduced to ${told.length ? told.join(', ') : 'no other member'}${failed.length ? `; not to ${failed.map((x) => `${x.name} (${x.error})`).join(', ')}` : ''}`;
    req.note({ reason: note });
    log.info({ identity: k.name, id: k.id, address, port: m.port, introduced: told, failed: failed.map((x) => x.name) }, 'a host joined the cluster');
    return { type: 'JOINED', server: name, serverId: this.ctx.own().id, name: k.name, id: k.id, members };
  }

  /**
   * Serves INTRODUCE: a member vouches for a host that joined through it. Only
   * a peer (another host's rexd of this cluster) may introduce, only a peer
   * identity may be introduced, and an introduction never replaces a known key
   * nor lifts a revocation. What it cannot stop: a compromised member can
   * introduce hosts (docs/KEYS.md "Joining a cluster").
   */
  private introduced(m: MessageOf<'INTRODUCE'>, req: Request): Reply {
    const { store, name, log, txlog } = this.ctx;
    const { from } = req;
    const session = req.session as PeerSession;
    const by = session.cert.name;
    const deny = (reason: string) => txlog.deny(from, reason, false);
    if (session.programKey || session.requester.program !== undefined || !isPeerIdentity(by, name)) {
      throw deny(`introduction refused: ${session.identity} (key ${session.cert.id}) is not a member's rexd; only another host's rexd of this cluster (${peerIdentity('HOST', name)}) may introduce a host`);
    }
    let info: CertInfo;
    try {
      info = certInfo(m.cert, 'introduced certificate');
    } catch (e) {
      throw deny(`introduction by ${by} refused: ${(e as Error).message}`);
    }
    if (!new X509Certificate(info.der).verify(new X509Certificate(info.der).publicKey)) throw deny(`introduction by ${by} refused: the certificate of ${info.name} is not signed by its own key`);
    if (!isPeerIdentity(info.name, name)) throw deny(`introduction by ${by} refused: ${info.name} is not a host's rexd of this cluster; only hosts are introduced, users and programs are enrolled and granted by the owner`);
    const clash = store.knownById(info.id);
    if (clash && clash.name !== info.name) throw deny(`introduction by ${by} refused: key ${info.id} is known here as ${clash.name}, not ${info.name}`);
    const other = store.known().filter((k) => k.name === info.name && k.id !== info.id);
    if (other.length > 0) {
      throw deny(`introduction by ${by} refused: ${info.name} already has a known key (${other.map((k) => k.id).join(', ')}), and an introduction never replaces a known key (key ${info.id} was offered)`);
    }
    if (isRevoked(store, info.id)) throw deny(`introduction by ${by} refused: key ${info.id} (${info.name}) is revoked on ${name}`);
    const already = clash !== undefined;
    if (!already) store.addKnown(info.pem, `introduced by ${by}`, 'introduced certificate');
    addPeerGrant(store, info.name);
    const host = hostOfIdentity(info.name)!;
    this.hosts.upsert({ name: host, address: m.address, port: m.port, identity: info.name, id: info.id, via: `introduced-by=${by}` });
    this.ctx.membersChanged?.();
    req.note({ reason: `${info.name} (key ${info.id}) at ${m.address}:${m.port} introduced by ${by}${already ? ' (already known)' : ''}` });
    log.info({ identity: info.name, id: info.id, by }, 'a host was introduced');
    return { type: 'INTRODUCED', name: info.name, id: info.id, already };
  }

  /** Ends the open sessions of these keys at once (their key was replaced by the host's owner). */
  private closeSessionsOf(ids: Set<string>, reason: string): void {
    for (const ep of this.ctx.sessions) {
      const s = ep.session;
      if (s.transport !== 'tls' || !s.identityId || !ids.has(s.identityId) || !ep.conn?.isOpen) continue;
      this.ctx.txlog.record({ kind: 'session', ...ep.facts(), outcome: 'denied', reason });
      if (s.state === 'peer' || s.state === 'restricted') ep.session = restrict(s, reason);
      ep.conn.abort(new ProtocolError('DENIED', reason, { fatal: true }));
    }
  }

  // ------------------------------------------------------------ grants and revocation

  /** Watches the grants file (revocations apply at once), the trust store (`onKnown`: a key was enrolled) and the hosts file (`onHosts`). */
  watch(stateDir: string, onKnown: () => void, onHosts: () => void = () => {}): void {
    this.grants.current();
    try {
      this.watcher = watch(stateDir, (_ev, file) => {
        if (file === 'grants' || file === null) this.grantsNow();
        if (file === 'hosts' || file === null) onHosts();
      });
      this.watcher.on('error', () => {});
      this.ctx.store.ensureDirs();
      this.knownWatcher = watch(this.ctx.store.knownDir, onKnown);
      this.knownWatcher.on('error', () => {});
    } catch (e) {
      this.ctx.log.warn({ err: (e as Error).message }, 'cannot watch the grants file; revocations apply at the next request only');
    }
  }

  /** Stops watching. */
  close(): void {
    this.watcher?.close();
    this.knownWatcher?.close();
  }

  /**
   * The grants in force. Whoever notices a change first (the directory watch or
   * a request's stat) triggers the session check, so no change goes unacted on.
   */
  private grantsNow(): ReturnType<GrantsFile['current']> {
    const cur = this.grants.current();
    if (cur.changed) queueMicrotask(() => this.closeRevokedSessions());
    return cur;
  }

  /** After a grants change: closes every session whose identity no longer has a grant. */
  private closeRevokedSessions(): void {
    for (const ep of this.ctx.sessions) {
      const s = ep.session;
      if (s.state !== 'peer' || !ep.conn?.isOpen) continue;
      const d = this.check(s.requester, true);
      if (d.ok) continue;
      const reason = `access revoked: ${d.reason}`;
      this.ctx.txlog.record({ kind: 'session', ...ep.facts(), outcome: 'denied', reason });
      this.ctx.log.info({ identity: s.identity, peer: ep.address }, 'closing session: grant revoked');
      ep.session = restrict(s, reason);
      ep.conn.abort(new ProtocolError('DENIED', reason, { fatal: true }));
    }
  }
}
