/**
 * The joining host's side of `rex_key --join HOST` (docs/KEYS.md "Joining a
 * cluster"): connect to a member pinned to the key ID in the join token, send
 * JOIN, and take what the member answers: its own key and, on its word, the
 * keys and addresses of the other members, each then known and granted here
 * as a peer and written to the hosts file. Like an enrollment, nothing known
 * is ever replaced: a member's name that already has another key here keeps it.
 */
import type { ServerEntry } from '../config/index.js';
import { Connection } from '../protocol/connection.js';
import { HOST_ROUTE } from '../protocol/route.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { addPeerGrant, isRevoked } from './admin.js';
import { certInfo } from './certs.js';
import { REX_KEY_SOFTWARE, tokenPinRefusal } from './enroll.js';
import { HostsFile } from './hosts.js';
import { hostOfIdentity, isHostKeyName, isPeerIdentity } from './identity.js';
import type { KeyStore, OwnIdentity } from './store.js';
import { connectPinned } from './tls.js';
import { enrollProof, type Token } from './tokens.js';

/** What became of one member the introducer named. */
export interface JoinedMember {
  name: string;
  id: string;
  address: string;
  port: number;
  /** Known and granted here now (or already). */
  trusted: boolean;
  /** Why it is not trusted here, or why the introducer could not introduce us to it. */
  problem?: string;
}

/** The outcome of a join. */
export interface JoinResult {
  /** The member we joined through, pinned to the token's key. */
  server: string;
  serverId: string;
  /** Our identity and key as the member stored it. */
  name: string;
  id: string;
  members: JoinedMember[];
}

/**
 * Joins the cluster of the member at `entry` with a join token, announcing
 * `advertise` as where this host's rexd listens (an address of undefined lets
 * the member take the connection's source address).
 */
export async function joinCluster(opts: { entry: ServerEntry; own: OwnIdentity; store: KeyStore; token: Token; advertise: { address?: string; port: number }; timeoutMs?: number }): Promise<JoinResult> {
  const { entry, own, store, token } = opts;
  const label = `${entry.name}@${entry.address}:${entry.port}`;
  const me = hostOfIdentity(own.name);
  if (me === undefined) throw new RexError(ErrorCodes.USAGE, `"${own.name}" is neither HOST.USER nor a host key HOST`);
  const { sock, cert } = await connectPinned({
    host: entry.address,
    port: entry.port,
    own,
    timeoutMs: opts.timeoutMs ?? 5000,
    label,
    pin: (c) => (c ? tokenPinRefusal(token, c, 'joining') : 'presented no certificate'),
  });
  // A root installation joins with its host key, and asks the member's monitor for its host controller (docs/ROOT.md section 7).
  if (isHostKeyName(own.name)) sock.write(HOST_ROUTE);
  // Members introduce each other for a while (one INTRODUCE per member): allow for it.
  const timeoutMs = Math.max(30_000, opts.timeoutMs ?? 5000);
  const conn = new Connection(sock, { initiator: true, local: { role: 'client', software: REX_KEY_SOFTWARE, host: me }, label, timeoutMs });
  try {
    await conn.handshake();
    const m = await conn.request(
      { type: 'JOIN', secret: token.secret, proof: enrollProof(token.secret, own.id, cert.id), port: opts.advertise.port, ...(opts.advertise.address ? { address: opts.advertise.address } : {}) },
      timeoutMs,
    );
    if (m.type !== 'JOINED') throw new RexError(ErrorCodes.ENROLL_FAILED, `${label} answered JOIN with ${m.type}`);
    const hosts = new HostsFile(store.stateDir);
    // The token is its owner's word for the member's key: it supersedes an older key known under that name.
    const k = store.addKnown(cert.pem, 'join', `${label} certificate`);
    for (const x of store.known()) if (x.name === k.name && x.id !== k.id) store.removeKnown(x.id);
    addPeerGrant(store, k.name);
    hosts.upsert({ name: entry.name, address: entry.address, port: entry.port, identity: k.name, id: k.id, via: 'join' });
    const members: JoinedMember[] = [];
    for (const x of m.members ?? []) {
      let info;
      try {
        info = certInfo(x.cert, `certificate of ${x.name} from ${k.name}`);
      } catch (e) {
        members.push({ name: x.name, id: '?', address: x.address, port: x.port, trusted: false, problem: (e as Error).message });
        continue;
      }
      const base = { name: info.name, id: info.id, address: x.address, port: x.port };
      const problem = memberProblem(store, own.name, info);
      if (problem) {
        members.push({ ...base, trusted: false, problem });
        continue;
      }
      if (!store.knownById(info.id)) store.addKnown(info.pem, `introduced by ${k.name}`, `certificate of ${info.name}`);
      addPeerGrant(store, info.name);
      hosts.upsert({ name: hostOfIdentity(info.name)!, address: x.address, port: x.port, identity: info.name, id: info.id, via: `introduced-by=${k.name}` });
      members.push({ ...base, trusted: true, ...(x.error !== undefined ? { problem: `${k.name} could not introduce this host to it: ${x.error}` } : {}) });
    }
    return { server: m.server, serverId: m.serverId, name: m.name, id: m.id, members };
  } finally {
    conn.close('join done');
  }
}

/** Why a member's key from the introducer is not taken here (the rules of INTRODUCE on a member), or undefined. */
function memberProblem(store: KeyStore, self: string, info: { name: string; id: string }): string | undefined {
  if (!isPeerIdentity(info.name, self)) return `${info.name} is not a host's rexd of this cluster; not trusted`;
  const clash = store.knownById(info.id);
  if (clash && clash.name !== info.name) return `key ${info.id} is known here as ${clash.name}; not trusted as ${info.name}`;
  const other = store.known().filter((k) => k.name === info.name && k.id !== info.id);
  if (other.length > 0) return `${info.name} already has a known key here (${other.map((k) => k.id).join(', ')}), which an introduction never replaces`;
  if (isRevoked(store, info.id)) return `key ${info.id} (${info.name}) is revoked here`;
  return undefined;
}
