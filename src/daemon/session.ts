/**
 * What rexd knows about the other end of one accepted connection, as a tagged
 * union of the states a session goes through. Each state carries only what is
 * true in it, so a handler that is given a `PeerSession` has a requester and a
 * known key, and one given a `ClientSession` is the owner (uid checked):
 *
 *   local socket:  pending(local) --HELLO, owner's uid--> client
 *   TLS port:      pending(tls)   --HELLO, authenticate--> peer | restricted
 *                  restricted     --ENROLL--> restricted (its key now known; it reconnects to be a peer)
 *                  peer           --grant revoked / key replaced--> restricted (and the connection is aborted)
 *
 * The request table (dispatch.ts) says which states may send which message.
 * The transitions are the functions below; nothing else builds a state.
 */
import type { CertInfo } from '../keys/certs.js';
import type { Requester } from '../keys/grants.js';
import { isHostKeyName, parseIdentityName } from '../keys/identity.js';
import type { KnownKey } from '../keys/store.js';
import type { Connection } from '../protocol/connection.js';

/** What a log row says about whoever is at the other end, in every state. */
interface Facts {
  /** HOST.USER[.PROGRAM] of the requester (or what the certificate claims, before HELLO). */
  readonly identity: string;
  readonly identityId?: string;
  /** The requester's host: the certificate's (a HELLO cannot move it), or this host for local clients. */
  readonly fromHost?: string;
}

/** A local connection before HELLO: its uid (SO_PEERCRED) is checked there. */
export interface LocalPending extends Facts {
  readonly state: 'pending';
  readonly transport: 'local';
  readonly pid?: number;
}

/** A TLS connection before HELLO, with the certificate the handshake presented. */
export interface TlsPending extends Facts {
  readonly state: 'pending';
  readonly transport: 'tls';
  readonly cert?: CertInfo;
}

/** The owner on the local socket (its uid was checked at HELLO): it may do anything this rexd serves. */
export interface ClientSession extends Facts {
  readonly state: 'client';
  readonly transport: 'local';
  /** The pid SO_PEERCRED gave (rfork images are read from that process only). */
  readonly pid?: number;
  /** The program named in HELLO, passed on with forwarded requests. */
  readonly program?: string;
}

/** A key that is known and granted: a peer rexd or a remote client, each request checked against the grants. */
export interface PeerSession extends Facts {
  readonly state: 'peer';
  readonly transport: 'tls';
  readonly identityId: string;
  readonly cert: CertInfo;
  readonly known: KnownKey;
  readonly requester: Requester;
  /** The requester's key is a program key (its program cannot be overridden per request). */
  readonly programKey: boolean;
}

/** A key that may only ENROLL: unknown here, without a grant, or whose grant or key went away during the session. */
export interface RestrictedSession extends Facts {
  readonly state: 'restricted';
  readonly transport: 'tls';
  readonly identityId: string;
  /** Why: what every other request is told. */
  readonly reason: string;
  readonly cert: CertInfo;
  /** Its key, when it is known here (a known key without a grant may re-send it; a new one needs a token). */
  readonly known?: KnownKey;
  readonly requester: Requester;
  readonly programKey: boolean;
}

export type Session = LocalPending | TlsPending | ClientSession | PeerSession | RestrictedSession;

/** Who sent a request, as the request table names it: a session after HELLO. */
export type Role = 'restricted' | 'client' | 'peer';

/** A session that may send requests (HELLO is done). */
export type Established = ClientSession | PeerSession | RestrictedSession;

/** One accepted connection: where it comes from, its Connection, and the state its session is in now. */
export class Endpoint {
  /** Set by attach, right after the Connection is made (before any frame is read). */
  conn!: Connection;

  constructor(
    readonly address: string,
    public session: Session,
  ) {}

  /** The session's role, once HELLO is done. */
  get role(): Role | undefined {
    return this.session.state === 'pending' ? undefined : this.session.state;
  }

  /** The fields every log row about this endpoint carries. */
  facts(): { identity: string; identityId?: string; fromHost?: string; peerAddress: string } {
    const s = this.session;
    return { identity: s.identity, ...(s.identityId ? { identityId: s.identityId } : {}), ...(s.fromHost ? { fromHost: s.fromHost } : {}), peerAddress: this.address };
  }
}

// ------------------------------------------------------------ transitions

/** A connection accepted on the local socket. */
export function pendingLocal(self: string, host: string, pid?: number): LocalPending {
  return { state: 'pending', transport: 'local', identity: self, fromHost: host, ...(pid !== undefined ? { pid } : {}) };
}

/** A connection accepted on the TLS port; the host a request comes from is the certificate's, never what HELLO says. */
export function pendingTls(cert: CertInfo | undefined): TlsPending {
  // A host key (root installation, routed to the host controller) comes from its own host.
  const claimed = cert ? (isHostKeyName(cert.name) ? { host: cert.name } : parseIdentityName(cert.name)) : undefined;
  return {
    state: 'pending',
    transport: 'tls',
    identity: cert?.name || '(no certificate)',
    ...(cert ? { cert, identityId: cert.id } : {}),
    ...(claimed && typeof claimed !== 'string' ? { fromHost: claimed.host } : {}),
  };
}

/** HELLO on the local socket from the owner's uid: the owner, acting as `program` if HELLO named one. */
export function toClient(p: LocalPending, self: string, program?: string): ClientSession {
  return { state: 'client', transport: 'local', identity: program ? `${self}.${program}` : self, ...(p.fromHost ? { fromHost: p.fromHost } : {}), ...(p.pid !== undefined ? { pid: p.pid } : {}), ...(program ? { program } : {}) };
}

/** What authentication at HELLO established about a TLS key (src/keys/service.ts). */
export interface Authenticated {
  identity: string;
  cert: CertInfo;
  requester: Requester;
  programKey: boolean;
  known?: KnownKey;
}

/** A known key with a grant. */
export function toPeer(p: TlsPending, a: Authenticated & { known: KnownKey }): PeerSession {
  return { state: 'peer', transport: 'tls', identity: a.identity, identityId: a.cert.id, ...(p.fromHost ? { fromHost: p.fromHost } : {}), cert: a.cert, known: a.known, requester: a.requester, programKey: a.programKey };
}

/** A key that may only ENROLL, for `reason`. */
export function toRestricted(p: TlsPending, a: Authenticated, reason: string): RestrictedSession {
  return { state: 'restricted', transport: 'tls', identity: a.identity, identityId: a.cert.id, ...(p.fromHost ? { fromHost: p.fromHost } : {}), reason, cert: a.cert, ...(a.known ? { known: a.known } : {}), requester: a.requester, programKey: a.programKey };
}

/** A session's grant was revoked or its key replaced: from now on it may only ENROLL (and it is being closed). */
export function restrict(s: PeerSession | RestrictedSession, reason: string): RestrictedSession {
  const { state: _s, ...rest } = s;
  return { ...rest, state: 'restricted', reason };
}

/** A session enrolled its key with a token: the key is known now; a restricted session stays restricted (it reconnects). */
export function enrolled<S extends PeerSession | RestrictedSession>(s: S, known: KnownKey): S {
  return { ...s, known };
}
