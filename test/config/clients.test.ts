import { networkInterfaces } from 'node:os';
import { describe, expect, it } from 'vitest';
import { clientAllowed, normalizeAddress } from '../../src/config/index.js';

const interfaces = {
  lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: true, cidr: '127.0.0.1/8' }],
  eth0: [
    { address: '192.0.2.2', netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:00:01', internal: false, cidr: '192.0.2.2/24' },
    { address: 'fe80::1', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '02:00:00:00:00:01', internal: false, cidr: 'fe80::1/64', scopeid: 2 },
  ],
} as NodeJS.Dict<import('node:os').NetworkInterfaceInfo[]>;

describe('clientAllowed', () => {
  it('matches single IPv4 and IPv6 addresses, including IPv4-mapped IPv6', () => {
    expect(clientAllowed(['10.1.2.3'], '10.1.2.3')).toBe(true);
    expect(clientAllowed(['10.1.2.3'], '10.1.2.4')).toBe(false);
    expect(clientAllowed(['10.1.2.3'], '::ffff:10.1.2.3')).toBe(true);
    expect(clientAllowed(['2001:db8::7'], '2001:db8:0:0::7')).toBe(true);
    expect(clientAllowed(['2001:db8::7'], '[2001:db8::7]')).toBe(true);
    expect(clientAllowed(['2001:db8::7'], '2001:db8::8')).toBe(false);
  });

  it('matches CIDR ranges of both families', () => {
    expect(clientAllowed(['10.0.0.0/8'], '10.255.0.1')).toBe(true);
    expect(clientAllowed(['10.0.0.0/8'], '11.0.0.1')).toBe(false);
    expect(clientAllowed(['192.168.1.0/24'], '192.168.1.255')).toBe(true);
    expect(clientAllowed(['192.168.1.0/24'], '192.168.2.0')).toBe(false);
    expect(clientAllowed(['0.0.0.0/0'], '8.8.8.8')).toBe(true);
    expect(clientAllowed(['fd00::/8'], 'fd12:3456::1')).toBe(true);
    expect(clientAllowed(['fd00::/8'], 'fe80::1')).toBe(false);
    expect(clientAllowed(['fe80::/10'], 'fe80::1%eth0')).toBe(true);
  });

  it('matches localnets against the given interfaces plus loopback', () => {
    expect(clientAllowed(['localnets'], '192.0.2.200', [], { interfaces })).toBe(true);
    expect(clientAllowed(['localnets'], '192.0.3.1', [], { interfaces })).toBe(false);
    expect(clientAllowed(['localnets'], '127.8.9.10', [], { interfaces: {} })).toBe(true);
    expect(clientAllowed(['localnets'], '::1', [], { interfaces: {} })).toBe(true);
    expect(clientAllowed(['localnets'], 'fe80::abcd', [], { interfaces })).toBe(true);
    expect(clientAllowed(['localnets'], 'fe80::abcd', [], { interfaces: {} })).toBe(false);
  });

  it('matches localnets against this machine\'s real interfaces by default', () => {
    for (const infos of Object.values(networkInterfaces())) {
      for (const info of infos ?? []) expect(clientAllowed(['localnets'], info.address)).toBe(true);
    }
    expect(clientAllowed(['localnets'], '203.0.113.9', [], { interfaces })).toBe(false);
  });

  it('matches host names only through the names the caller supplies', () => {
    expect(clientAllowed(['beta.example.org'], '10.0.0.9')).toBe(false);
    expect(clientAllowed(['beta.example.org'], '10.0.0.9', ['BETA.example.org.'])).toBe(true);
    expect(clientAllowed(['alpha', 'beta'], '10.0.0.9', ['gamma'])).toBe(false);
  });

  it('never matches malformed addresses or an empty list', () => {
    expect(clientAllowed([], '127.0.0.1')).toBe(false);
    expect(clientAllowed(['0.0.0.0/0'], 'not-an-ip')).toBe(false);
    expect(clientAllowed(['0.0.0.0/0'], '')).toBe(false);
    expect(clientAllowed(['10.0.0.0/99', 'garbage/'], '10.0.0.1')).toBe(false);
  });

  it('normalises addresses', () => {
    expect(normalizeAddress('[::ffff:1.2.3.4]')).toBe('1.2.3.4');
    expect(normalizeAddress('fe80::1%lo')).toBe('fe80::1');
  });
});
