// Pure generation of the nftables script for an LbConfig, in the shape of kube-proxy's nftables
// mode: verdict maps from (VIP, protocol, port) and (protocol, published port) to one chain per
// frontend, which picks a per-backend DNAT chain through a `numgen inc` map. No I/O here: the
// caller feeds the text to one `nft -f` so every update is one atomic transaction.
import {
  activeBackends,
  backendKey,
  frontendKey,
  weightedRing,
  type LbConfig,
  type LbFrontend,
} from './types';

/** Packet mark bit telling postrouting that this connection is source-NATed (kube-proxy uses 0x4000). */
export const SNAT_MARK = 0x00400000;
const SNAT_MARK_HEX = `0x${SNAT_MARK.toString(16).padStart(8, '0')}`;

/** What was last programmed: enough to compute the next incremental transaction. */
export interface NftState {
  /** Frontend chain name → the exact rules in it (rewritten when they differ). */
  frontendChains: Map<string, string[]>;
  /** Backend chain name → its single DNAT rule (never changes for a given name). */
  backendChains: Map<string, string>;
  /** Map/set name → element text → key text (for deletion). */
  elements: Map<string, Map<string, string>>;
}

export function emptyState(): NftState {
  return { frontendChains: new Map(), backendChains: new Map(), elements: new Map() };
}

function ident(text: string): string {
  return text.replace(/[^A-Za-z0-9]/g, '_');
}

export function frontendChainName(fe: LbFrontend): string {
  return `fe_${ident(frontendKey(fe))}`;
}

export function backendChainName(fe: LbFrontend, be: { ip: string; port: number }): string {
  return `be_${ident(frontendKey(fe))}__${ident(backendKey(be))}`;
}

function addElement(state: NftState, set: string, key: string, value?: string): void {
  let elements = state.elements.get(set);
  if (elements === undefined) {
    elements = new Map();
    state.elements.set(set, elements);
  }
  elements.set(value === undefined ? key : `${key} : ${value}`, key);
}

/** The state that programming `config` leads to. Assumes validateConfig passed. */
export function desiredState(config: LbConfig): NftState {
  const state = emptyState();
  for (const set of [
    'service_ips',
    'service_ports',
    'vip_any',
    'noep_ips',
    'noep_ports',
    'noep_vip_any',
    'snat_by_backend',
  ])
    state.elements.set(set, new Map());
  for (const fe of config.frontends) {
    const feChain = frontendChainName(fe);
    const active = activeBackends(fe);
    const rules: string[] = [];
    // A VIP on every port of the protocol keeps the port.
    const allPorts = fe.allPorts === true;
    const serviceKey = allPorts
      ? `${fe.address ?? ''} . ${fe.protocol}`
      : fe.kind === 'vip'
        ? `${fe.address ?? ''} . ${fe.protocol} . ${fe.port}`
        : `${fe.protocol} . ${fe.port}`;
    const [serviceMap, noEndpointSet] = allPorts
      ? ['vip_any', 'noep_vip_any']
      : fe.kind === 'vip'
        ? ['service_ips', 'noep_ips']
        : ['service_ports', 'noep_ports'];
    if (active.length === 0) {
      // No endpoint: not DNATed; the filter chains reject it, as kube-proxy does.
      addElement(state, noEndpointSet, serviceKey);
    } else {
      addElement(state, serviceMap, serviceKey, `goto ${feChain}`);
      if (fe.snatTo !== undefined) rules.push(`meta mark set meta mark | ${SNAT_MARK_HEX}`);
      for (const be of active) {
        state.backendChains.set(
          backendChainName(fe, be),
          allPorts
            ? `meta l4proto ${fe.protocol} dnat to ${be.ip}`
            : `meta l4proto ${fe.protocol} dnat to ${be.ip}:${be.port}`,
        );
        if (fe.snatTo !== undefined) addElement(state, 'snat_by_backend', be.ip, fe.snatTo);
      }
      const ring = weightedRing(active);
      const only = ring[0];
      if (ring.length === 1 && only !== undefined) {
        rules.push(`goto ${backendChainName(fe, only)}`);
      } else {
        // `inc` rather than kube-proxy's `random`: an exact rotation, so a few long-lived
        // connections (wrk's 64, a pool of keep-alive clients) spread evenly.
        const slots = ring.map((be, slot) => `${slot} : goto ${backendChainName(fe, be)}`).join(', ');
        rules.push(`numgen inc mod ${ring.length} vmap { ${slots} }`);
      }
    }
    state.frontendChains.set(feChain, rules);
  }
  return state;
}

/** The fixed skeleton of the table: maps, sets, and the base chains hooked into netfilter. */
export function skeleton(table: string): string[] {
  const t = `ip ${table}`;
  return [
    `add table ${t}`,
    `add map ${t} service_ips { type ipv4_addr . inet_proto . inet_service : verdict; }`,
    `add map ${t} service_ports { type inet_proto . inet_service : verdict; }`,
    `add set ${t} noep_ips { type ipv4_addr . inet_proto . inet_service; }`,
    `add set ${t} noep_ports { type inet_proto . inet_service; }`,
    `add map ${t} vip_any { type ipv4_addr . inet_proto : verdict; }`,
    `add set ${t} noep_vip_any { type ipv4_addr . inet_proto; }`,
    `add map ${t} snat_by_backend { type ipv4_addr : ipv4_addr; }`,
    `add chain ${t} services`,
    `add rule ${t} services ip daddr . meta l4proto . th dport vmap @service_ips`,
    // VIPs on every port, before published ports: a VIP is a local address of the node too.
    `add rule ${t} services ip daddr . meta l4proto vmap @vip_any`,
    `add rule ${t} services fib daddr type local meta l4proto . th dport vmap @service_ports`,
    `add chain ${t} nat_prerouting { type nat hook prerouting priority dstnat; policy accept; }`,
    `add rule ${t} nat_prerouting jump services`,
    // Locally generated traffic (a client on the node itself) goes through output, not prerouting.
    `add chain ${t} nat_output { type nat hook output priority -100; policy accept; }`,
    `add rule ${t} nat_output jump services`,
    `add chain ${t} nat_postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
    `add rule ${t} nat_postrouting meta mark & ${SNAT_MARK_HEX} == ${SNAT_MARK_HEX} snat to ip daddr map @snat_by_backend`,
    // No-endpoint frontends are refused before routing (a VIP may have no route at all): a TCP
    // reset, or ICMP port unreachable for UDP, instead of a silent timeout.
    ...['prerouting', 'output'].flatMap((hook) => [
      `add chain ${t} filter_${hook} { type filter hook ${hook} priority -110; policy accept; }`,
      // These chains see every packet; the lookups below only matter for a connection's first.
      `add rule ${t} filter_${hook} ct state != new accept`,
      ...[
        'ip daddr . meta l4proto . th dport @noep_ips',
        'fib daddr type local meta l4proto . th dport @noep_ports',
        'ip daddr . meta l4proto @noep_vip_any',
      ].flatMap((match) => [
        `add rule ${t} filter_${hook} ${match} meta l4proto tcp reject with tcp reset`,
        `add rule ${t} filter_${hook} ${match} reject`,
      ]),
    ]),
  ];
}

/**
 * The commands that take the table from `prev` to `next`, touching only what changed. Order
 * matters inside the transaction: chains exist before anything jumps to them, and a chain is
 * deleted only after the last reference to it is gone.
 */
export function diffCommands(table: string, prev: NftState, next: NftState): string[] {
  const t = `ip ${table}`;
  const out: string[] = [];
  for (const [chain, rule] of next.backendChains) {
    if (!prev.backendChains.has(chain)) out.push(`add chain ${t} ${chain}`, `add rule ${t} ${chain} ${rule}`);
  }
  for (const [chain, rules] of next.frontendChains) {
    const old = prev.frontendChains.get(chain);
    if (old === undefined) out.push(`add chain ${t} ${chain}`);
    else if (old.join('\n') === rules.join('\n')) continue;
    else out.push(`flush chain ${t} ${chain}`);
    for (const rule of rules) out.push(`add rule ${t} ${chain} ${rule}`);
  }
  const sets = new Set([...prev.elements.keys(), ...next.elements.keys()]);
  for (const set of sets) {
    const before = prev.elements.get(set) ?? new Map<string, string>();
    const after = next.elements.get(set) ?? new Map<string, string>();
    const gone = [...before].filter(([text]) => !after.has(text)).map(([, key]) => key);
    if (gone.length > 0) out.push(`delete element ${t} ${set} { ${gone.join(', ')} }`);
  }
  for (const set of sets) {
    const before = prev.elements.get(set) ?? new Map<string, string>();
    const after = next.elements.get(set) ?? new Map<string, string>();
    const added = [...after.keys()].filter((text) => !before.has(text));
    if (added.length > 0) out.push(`add element ${t} ${set} { ${added.join(', ')} }`);
  }
  for (const chain of prev.frontendChains.keys()) {
    if (!next.frontendChains.has(chain)) out.push(`delete chain ${t} ${chain}`);
  }
  for (const chain of prev.backendChains.keys()) {
    if (!next.backendChains.has(chain)) out.push(`delete chain ${t} ${chain}`);
  }
  return out;
}

/**
 * A script that replaces whatever the table holds with `config`: `add` then `delete` makes the
 * delete succeed whether or not the table existed, all inside the one transaction.
 */
export function fullScript(table: string, config: LbConfig): string {
  return (
    [
      `add table ip ${table}`,
      `delete table ip ${table}`,
      ...skeleton(table),
      ...diffCommands(table, emptyState(), desiredState(config)),
    ].join('\n') + '\n'
  );
}

export function incrementalScript(table: string, prev: NftState, config: LbConfig): string {
  const commands = diffCommands(table, prev, desiredState(config));
  return commands.length === 0 ? '' : commands.join('\n') + '\n';
}
