/**
 * The route preface of a root installation (docs/PROTOCOL.md section 1, docs/ROOT.md section 3): the one line a
 * connection made with a host key sends after TLS and before REX's preface, telling the other host's monitor where
 * to route it: to the session controller of a user it acts for, or to the host controller.
 */

/** `REX-ROUTE user=NAME` or `REX-ROUTE host`, with its newline. */
export const ROUTE_PREFACE = /^REX-ROUTE (?:user=([A-Za-z0-9][A-Za-z0-9_-]{0,62})|(host))\n/;
/** Longest route preface read (bytes, newline included). */
export const ROUTE_PREFACE_MAX = 256;

/** The route preface for `user`. */
export function routePreface(user: string): string {
  return `REX-ROUTE user=${user}\n`;
}

/** The route preface to the host controller (a member's INTRODUCE, or a host that joins). */
export const HOST_ROUTE = 'REX-ROUTE host\n';

/** A route preface read: the user a host acts for, or its host controller. */
export type Route = { user: string } | { host: true };
