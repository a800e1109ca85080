/**
 * Matching a connecting peer against the `clients` key: IP addresses, CIDR
 * ranges (IPv4 and IPv6), host names, and `localnets` (this host's interface
 * networks plus loopback).
 */
import { BlockList, isIP } from 'node:net';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';

/** Inputs clientAllowed would otherwise read from the machine (for tests and for callers that cache them). */
export interface ClientMatchOptions {
  /** The local interfaces that `localnets` stands for; defaults to os.networkInterfaces(). */
  interfaces?: NodeJS.Dict<NetworkInterfaceInfo[]>;
}

/** Strips brackets and an IPv6 zone, and turns IPv4-mapped IPv6 (::ffff:1.2.3.4) into plain IPv4. */
export function normalizeAddress(address: string): string {
  let a = address.trim();
  if (a.startsWith('[') && a.endsWith(']')) a = a.slice(1, -1);
  const zone = a.indexOf('%');
  if (zone >= 0) a = a.slice(0, zone);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  return mapped ? mapped[1]! : a;
}

function family(a: string): 'ipv4' | 'ipv6' | undefined {
  const f = isIP(a);
  return f === 4 ? 'ipv4' : f === 6 ? 'ipv6' : undefined;
}

/** Adds `addr/prefix` to a block list; BlockList masks host bits itself, so interface CIDRs work as-is. */
function addSubnet(list: BlockList, cidr: string): void {
  const slash = cidr.indexOf('/');
  const net = normalizeAddress(cidr.slice(0, slash));
  const fam = family(net);
  const bits = cidr.slice(slash + 1);
  const prefix = Number(bits);
  // BlockList throws on an out-of-range prefix; a bad entry must simply not match.
  if (fam === undefined || !/^[0-9]{1,3}$/.test(bits) || prefix > (fam === 'ipv4' ? 32 : 128)) return;
  list.addSubnet(net, prefix, fam);
}

/**
 * True when a peer at `address` (optionally known by `hostNames`, e.g. from a
 * reverse lookup the caller trusts) matches one of the `clients` entries.
 * Malformed entries or addresses never match.
 */
export function clientAllowed(
  clients: readonly string[],
  address: string,
  hostNames: readonly string[] = [],
  opts: ClientMatchOptions = {},
): boolean {
  const addr = normalizeAddress(address);
  const fam = family(addr);
  if (fam === undefined) return false;
  const names = new Set(hostNames.map((n) => n.toLowerCase().replace(/\.$/, '')));
  const list = new BlockList();
  for (const raw of clients) {
    const entry = raw.trim();
    if (entry === 'localnets') {
      list.addSubnet('127.0.0.0', 8, 'ipv4');
      list.addAddress('::1', 'ipv6');
      const ifaces = opts.interfaces ?? networkInterfaces();
      for (const infos of Object.values(ifaces)) {
        for (const info of infos ?? []) if (info.cidr) addSubnet(list, info.cidr);
      }
    } else if (entry.includes('/')) {
      addSubnet(list, entry);
    } else {
      const ip = normalizeAddress(entry);
      const f = family(ip);
      if (f !== undefined) list.addAddress(ip, f);
      else if (names.has(entry.toLowerCase().replace(/\.$/, ''))) return true;
    }
  }
  return list.check(addr, fam);
}
