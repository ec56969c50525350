// Rule generation for the nftables data plane: the script text for a given config, and the
// incremental diffs, checked against a small model of what nft does with each command.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  backendChainName,
  desiredState,
  diffCommands,
  emptyState,
  frontendChainName,
  fullScript,
  incrementalScript,
  type NftState,
} from './nftrules';
import type { LbConfig, LbFrontend } from './types';

const TABLE = 'lbt';
const web: LbFrontend = {
  kind: 'vip',
  protocol: 'tcp',
  address: '10.0.9.10',
  port: 80,
  backends: [
    { ip: '10.0.0.5', port: 8080 },
    { ip: '10.0.0.6', port: 8080 },
  ],
};
const dns: LbFrontend = {
  kind: 'published',
  protocol: 'udp',
  port: 5353,
  backends: [{ ip: '10.0.0.7', port: 53 }],
  snatTo: '10.0.0.1',
};

describe('full script', () => {
  const script = fullScript(TABLE, { frontends: [web, dns] });
  const lines = script.trim().split('\n');

  test('replaces the whole table in one transaction: add, delete, then rebuild', () => {
    assert.deepEqual(lines.slice(0, 3), [
      `add table ip ${TABLE}`,
      `delete table ip ${TABLE}`,
      `add table ip ${TABLE}`,
    ]);
  });

  test('a VIP maps (address . protocol . port) to its frontend chain', () => {
    assert.ok(
      lines.includes(
        `add element ip ${TABLE} service_ips { 10.0.9.10 . tcp . 80 : goto fe_vip_tcp_10_0_9_10_80 }`,
      ),
    );
  });

  test('a published port maps (protocol . port) to its frontend chain, for local addresses only', () => {
    assert.ok(
      lines.includes(`add element ip ${TABLE} service_ports { udp . 5353 : goto fe_published_udp_5353 }`),
    );
    assert.ok(
      lines.includes(
        `add rule ip ${TABLE} services fib daddr type local meta l4proto . th dport vmap @service_ports`,
      ),
    );
  });

  test('services are looked up from prerouting (forwarded traffic) and output (local clients)', () => {
    assert.ok(lines.includes(`add rule ip ${TABLE} nat_prerouting jump services`));
    assert.ok(lines.includes(`add rule ip ${TABLE} nat_output jump services`));
  });

  test('several backends: a numgen map over per-backend DNAT chains', () => {
    const fe = frontendChainName(web);
    const [a, b] = web.backends.map((be) => backendChainName(web, be));
    assert.ok(
      lines.includes(`add rule ip ${TABLE} ${fe} numgen inc mod 2 vmap { 0 : goto ${a}, 1 : goto ${b} }`),
    );
    assert.ok(lines.includes(`add rule ip ${TABLE} ${a} meta l4proto tcp dnat to 10.0.0.5:8080`));
  });

  test('one backend: a plain goto; snatTo marks the connection and maps the backend to the source address', () => {
    const fe = frontendChainName(dns);
    assert.ok(lines.includes(`add rule ip ${TABLE} ${fe} meta mark set meta mark | 0x00400000`));
    assert.ok(
      lines.includes(
        `add rule ip ${TABLE} ${fe} goto ${backendChainName(dns, { ip: '10.0.0.7', port: 53 })}`,
      ),
    );
    assert.ok(lines.includes(`add element ip ${TABLE} snat_by_backend { 10.0.0.7 : 10.0.0.1 }`));
  });

  test('chains exist before anything refers to them', () => {
    const defined = new Set<string>();
    for (const line of lines) {
      const chain = /^add chain ip \S+ (\S+)/.exec(line)?.[1];
      if (chain !== undefined) defined.add(chain);
      for (const ref of line.matchAll(/goto (\w+)/g))
        assert.ok(defined.has(ref[1] ?? ''), `${ref[1]} used before defined`);
    }
  });
});

describe('weights and draining', () => {
  test('weights 2:1 give three slots, spread out', () => {
    const fe: LbFrontend = {
      ...web,
      backends: [
        { ip: '10.0.0.5', port: 8080, weight: 2 },
        { ip: '10.0.0.6', port: 8080 },
      ],
    };
    const [a, b] = fe.backends.map((be) => backendChainName(fe, be));
    const rules = desiredState({ frontends: [fe] }).frontendChains.get(frontendChainName(fe));
    assert.deepEqual(rules, [`numgen inc mod 3 vmap { 0 : goto ${a}, 1 : goto ${b}, 2 : goto ${a} }`]);
  });

  test('a draining backend leaves the map and loses its chain (conntrack keeps its connections)', () => {
    const draining: LbFrontend = {
      ...web,
      backends: [web.backends[0] ?? { ip: '', port: 1 }, { ip: '10.0.0.6', port: 8080, draining: true }],
    };
    const script = incrementalScript(TABLE, desiredState({ frontends: [web] }), { frontends: [draining] });
    const gone = backendChainName(web, { ip: '10.0.0.6', port: 8080 });
    assert.deepEqual(script.trim().split('\n'), [
      `flush chain ip ${TABLE} ${frontendChainName(web)}`,
      `add rule ip ${TABLE} ${frontendChainName(web)} goto ${backendChainName(web, { ip: '10.0.0.5', port: 8080 })}`,
      `delete chain ip ${TABLE} ${gone}`,
    ]);
  });

  test('no active backend: out of the service map, into the reject set', () => {
    const none: LbFrontend = { ...web, backends: web.backends.map((b) => ({ ...b, draining: true })) };
    const state = desiredState({ frontends: [none] });
    assert.equal(state.elements.get('service_ips')?.size, 0);
    assert.deepEqual([...(state.elements.get('noep_ips')?.keys() ?? [])], ['10.0.9.10 . tcp . 80']);
    assert.deepEqual(state.frontendChains.get(frontendChainName(none)), []);
  });
});

describe('incremental updates', () => {
  test('no change, no commands', () => {
    const config = { frontends: [web, dns] };
    assert.equal(incrementalScript(TABLE, desiredState(config), config), '');
  });

  test('a change to one frontend touches only that frontend', () => {
    const before = { frontends: [web, dns] };
    const after = {
      frontends: [{ ...web, backends: [...web.backends, { ip: '10.0.0.8', port: 8080 }] }, dns],
    };
    const script = incrementalScript(TABLE, desiredState(before), after);
    assert.ok(!script.includes(frontendChainName(dns)), script);
    assert.ok(!script.includes('service_ips'), 'the frontend stays in the service map');
    assert.match(script, /^add chain ip lbt be_vip_tcp_10_0_9_10_80__10_0_0_8_8080$/m);
  });

  test('removing a frontend drops its map element before its chains', () => {
    const lines = diffCommands(
      TABLE,
      desiredState({ frontends: [web, dns] }),
      desiredState({ frontends: [dns] }),
    );
    const element = lines.findIndex((l) => l.startsWith(`delete element ip ${TABLE} service_ips`));
    const chain = lines.findIndex((l) => l === `delete chain ip ${TABLE} ${frontendChainName(web)}`);
    assert.ok(element >= 0 && chain > element, lines.join('\n'));
  });
});

/** What nft would hold after each command, failing where nft would reject the transaction. */
class NftModel {
  chains = new Map<string, string[]>();
  elements = new Map<string, Map<string, string>>();

  run(line: string): void {
    const m = /^(add|flush|delete) (chain|rule|element) ip \S+ (\S+)(?: (.*))?$/.exec(line);
    assert.ok(m !== null, `unexpected command ${line}`);
    const [, verb, what, name = '', rest = ''] = m;
    const refs = (text: string): string[] => [...text.matchAll(/goto (\w+)/g)].map((r) => r[1] ?? '');
    if (what === 'chain' && verb === 'add') {
      assert.ok(!this.chains.has(name), `chain ${name} exists`);
      this.chains.set(name, []);
    } else if (what === 'chain' && verb === 'flush') {
      assert.ok(this.chains.has(name), `flush of missing ${name}`);
      this.chains.set(name, []);
    } else if (what === 'chain' && verb === 'delete') {
      assert.ok(this.chains.has(name), `delete of missing ${name}`);
      this.chains.delete(name);
      for (const [other, rules] of this.chains)
        assert.ok(!rules.some((r) => refs(r).includes(name)), `${name} still used by ${other}`);
      for (const elements of this.elements.values())
        assert.ok(![...elements.keys()].some((e) => refs(e).includes(name)), `${name} still in a map`);
    } else if (what === 'rule') {
      const rules = this.chains.get(name);
      assert.ok(rules !== undefined, `rule into missing ${name}`);
      for (const ref of refs(rest)) assert.ok(this.chains.has(ref), `jump to missing ${ref}`);
      rules.push(rest);
    } else {
      const items = rest.replace(/^\{ | \}$/g, '').split(', ');
      const elements = this.elements.get(name) ?? new Map<string, string>();
      this.elements.set(name, elements);
      for (const item of items) {
        const key = item.split(' : ')[0] ?? item;
        if (verb === 'add') {
          assert.ok(![...elements.values()].includes(key), `element ${key} exists in ${name}`);
          for (const ref of refs(item)) assert.ok(this.chains.has(ref), `element jumps to missing ${ref}`);
          elements.set(item, key);
        } else {
          const found = [...elements].find(([, k]) => k === key);
          assert.ok(found !== undefined, `delete of missing element ${key} in ${name}`);
          elements.delete(found[0]);
        }
      }
    }
  }

  matches(state: NftState): void {
    const expected = new Map<string, string[]>([
      ...state.frontendChains,
      ...[...state.backendChains].map(([n, r]) => [n, [r]] as [string, string[]]),
    ]);
    assert.deepEqual(new Map([...this.chains].sort()), new Map([...expected].sort()));
    for (const [set, elements] of state.elements) {
      assert.deepEqual(
        [...(this.elements.get(set)?.keys() ?? [])].sort(),
        [...elements.keys()].sort(),
        `elements of ${set}`,
      );
    }
  }
}

const arbFrontend: fc.Arbitrary<LbFrontend> = fc.record({
  kind: fc.constantFrom('vip' as const, 'published' as const),
  protocol: fc.constantFrom('tcp' as const, 'udp' as const),
  address: fc.constantFrom('10.0.9.1', '10.0.9.2'),
  port: fc.constantFrom(80, 443),
  backends: fc.uniqueArray(
    fc.record({
      ip: fc.constantFrom('10.0.0.5', '10.0.0.6', '10.0.0.7', '10.0.0.8'),
      port: fc.constant(8080),
      weight: fc.integer({ min: 1, max: 3 }),
      draining: fc.boolean(),
    }),
    { selector: (b) => b.ip, maxLength: 4 },
  ),
  snatTo: fc.option(fc.constant('10.0.0.1'), { nil: undefined }),
});
const arbConfig: fc.Arbitrary<LbConfig> = fc
  .uniqueArray(arbFrontend, { selector: (fe) => frontendChainName(fe), maxLength: 5 })
  .map((frontends) => ({ frontends }));

test('property: from any config, the incremental diff to any other is valid for nft and lands exactly on it', () => {
  fc.assert(
    fc.property(fc.array(arbConfig, { minLength: 2, maxLength: 5 }), (configs) => {
      const model = new NftModel();
      let state = emptyState();
      for (const config of configs) {
        const next = desiredState(config);
        for (const line of diffCommands(TABLE, state, next)) model.run(line);
        model.matches(next);
        state = next;
      }
    }),
    { numRuns: 300 },
  );
});

describe('a VIP on every port (allPorts)', () => {
  const anyPort: LbFrontend = {
    kind: 'vip',
    protocol: 'tcp',
    address: '10.0.9.11',
    port: 0,
    allPorts: true,
    backends: [
      { ip: '10.0.9.5', port: 0 },
      { ip: '10.0.9.6', port: 0 },
    ],
    snatTo: '10.0.9.2',
  };
  const lines = fullScript(TABLE, { frontends: [anyPort] })
    .trim()
    .split('\n');

  test('maps (address . protocol) to its frontend chain, looked up before published ports', () => {
    assert.ok(
      lines.includes(
        `add element ip ${TABLE} vip_any { 10.0.9.11 . tcp : goto ${frontendChainName(anyPort)} }`,
      ),
    );
    const vipRule = lines.indexOf(`add rule ip ${TABLE} services ip daddr . meta l4proto vmap @vip_any`);
    const publishedRule = lines.findIndex((l) => l.includes('services fib daddr type local'));
    assert.ok(vipRule >= 0 && vipRule < publishedRule, 'VIPs first: a VIP is a local address too');
  });

  test('DNATs to the backend keeping the destination port', () => {
    assert.ok(
      lines.includes(
        `add rule ip ${TABLE} ${backendChainName(anyPort, { ip: '10.0.9.5', port: 0 })} meta l4proto tcp dnat to 10.0.9.5`,
      ),
    );
  });

  test('no endpoint: rejected rather than left to time out', () => {
    const state = desiredState({ frontends: [{ ...anyPort, backends: [] }] });
    assert.deepEqual([...(state.elements.get('noep_vip_any')?.keys() ?? [])], ['10.0.9.11 . tcp']);
    assert.equal(state.elements.get('vip_any')?.size, 0);
  });
});
