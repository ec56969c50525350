// CIDR arithmetic for network validation: parsing (IPv4 and IPv6), containment, overlap.
// Addresses are held as bigints so both families share one code path.
import { isIPv4, isIPv6 } from 'node:net';

import { invalidArgument } from '../../common/errors';

export interface Subnet {
  family: 4 | 6;
  /** The network address (host bits zero). */
  network: bigint;
  prefixLength: number;
  text: string;
}

function bitsOf(family: 4 | 6): number {
  return family === 4 ? 32 : 128;
}

/** The address as an integer, or undefined when it is not an IP address. */
export function parseIp(text: string): { family: 4 | 6; value: bigint } | undefined {
  if (isIPv4(text)) {
    const value = text.split('.').reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n);
    return { family: 4, value };
  }
  if (isIPv6(text)) {
    let address = text;
    // An embedded IPv4 tail ("::ffff:1.2.3.4") becomes two hex groups.
    const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(address);
    if (v4?.[1]) {
      const parsed = parseIp(v4[1]);
      if (!parsed) return undefined;
      const high = (parsed.value >> 16n).toString(16);
      const low = (parsed.value & 0xffffn).toString(16);
      address = address.slice(0, v4.index) + `${high}:${low}`;
    }
    const [head = '', tail] = address.split('::');
    const headGroups = head === '' ? [] : head.split(':');
    const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
    const missing = 8 - headGroups.length - tailGroups.length;
    const groups = [
      ...headGroups,
      ...Array<string>(tail === undefined ? 0 : missing).fill('0'),
      ...tailGroups,
    ];
    if (groups.length !== 8) return undefined;
    const value = groups.reduce((acc, group) => (acc << 16n) | BigInt(parseInt(group, 16)), 0n);
    return { family: 6, value };
  }
  return undefined;
}

function formatIp(family: 4 | 6, value: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
  }
  const groups: string[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(((value >> shift) & 0xffffn).toString(16));
  return groups.join(':');
}

/** Parses "A.B.C.D/N" or an IPv6 CIDR; host bits must be zero (as Docker requires now). */
export function parseCidr(field: string, text: string): Subnet {
  const fail = (rule: string) => invalidArgument(`${field}: ${rule}`, { field });
  const slash = text.indexOf('/');
  if (slash < 0) throw fail(`'${text}' is not in CIDR notation (e.g. 10.0.1.0/24)`);
  const ip = parseIp(text.slice(0, slash));
  const lengthText = text.slice(slash + 1);
  if (!ip) throw fail(`'${text}' does not start with an IP address`);
  const bits = bitsOf(ip.family);
  if (!/^\d{1,3}$/.test(lengthText) || Number(lengthText) > bits) {
    throw fail(`prefix length of '${text}' must be 0-${bits}`);
  }
  const prefixLength = Number(lengthText);
  const hostBits = BigInt(bits - prefixLength);
  const network = (ip.value >> hostBits) << hostBits;
  if (network !== ip.value) {
    throw fail(`'${text}' has host bits set: it should be ${formatIp(ip.family, network)}/${prefixLength}`);
  }
  return { family: ip.family, network, prefixLength, text };
}

function lastAddress(subnet: Subnet): bigint {
  const hostBits = BigInt(bitsOf(subnet.family) - subnet.prefixLength);
  return subnet.network + (1n << hostBits) - 1n;
}

/** Whether `address` is a usable host address of the subnet (not its network or broadcast address). */
export function ipInSubnet(address: string, subnet: Subnet): boolean {
  const ip = parseIp(address);
  if (!ip || ip.family !== subnet.family) return false;
  const last = lastAddress(subnet);
  if (ip.value < subnet.network || ip.value > last) return false;
  // /31 and /32 (and IPv6) have no broadcast address to avoid.
  if (subnet.family === 4 && subnet.prefixLength < 31)
    return ip.value !== subnet.network && ip.value !== last;
  return true;
}

export function subnetsOverlap(a: Subnet, b: Subnet): boolean {
  if (a.family !== b.family) return false;
  return a.network <= lastAddress(b) && b.network <= lastAddress(a);
}
