// The overlay driver's pure parts: device names fit IFNAMSIZ and carry the VNI back, MACs derive
// from IPs, and the forwarding plan is exactly the difference between kernel and desired state.
// The driver on real devices is tested in cluster-tests/overlay.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import {
  MAX_IFNAME,
  bridgeName,
  hostVethName,
  macForIp,
  netnsPath,
  nftTableName,
  peerVethName,
  planForwarding,
  vniOfName,
  vxlanName,
} from './overlay';

describe('overlay names', () => {
  it('fit in 15 bytes and give back their VNI, for any VNI and endpoint id', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 0xffffff }), fc.string({ maxLength: 80 }), (vni, id) => {
        for (const name of [bridgeName(vni), vxlanName(vni), hostVethName(vni, id), peerVethName(vni, id)]) {
          assert.ok(name.length <= MAX_IFNAME, name);
          assert.match(name, /^[a-z0-9]+$/);
          assert.equal(vniOfName(name), vni);
        }
        assert.equal(vniOfName(nftTableName(vni)), vni);
      }),
    );
  });

  it('differ per endpoint and are not mistaken for foreign devices', () => {
    assert.notEqual(hostVethName(4096, 'task-a'), hostVethName(4096, 'task-b'));
    assert.equal(vniOfName('eth0'), undefined);
    assert.equal(vniOfName('docker0'), undefined);
    assert.equal(vniOfName('covz001000'), undefined);
  });

  it('derive MACs from IPs as Docker does, and namespace paths from pids and names', () => {
    assert.equal(macForIp('10.234.0.12/24'), '02:42:0a:ea:00:0c');
    assert.equal(netnsPath(1234), '/proc/1234/ns/net');
    assert.equal(netnsPath('c1'), '/var/run/netns/c1');
    assert.equal(netnsPath('/run/netns/x'), '/run/netns/x');
  });
});

describe('overlay forwarding plan', () => {
  const entry = (ip: string, host: string) => ({ ip, mac: macForIp(ip), host });

  it('adds the missing, removes the unwanted, keeps the rest, and moves a changed host', () => {
    const plan = planForwarding(
      [entry('10.1.0.2', '192.168.0.2'), entry('10.1.0.3', '192.168.0.3'), entry('10.1.0.4', '192.168.0.2')],
      [
        { ip: '10.1.0.2/24', host: '192.168.0.2' },
        { ip: '10.1.0.4', host: '192.168.0.3' },
        { ip: '10.1.0.5', host: '192.168.0.3' },
      ],
    );
    assert.deepEqual(plan.add, [entry('10.1.0.4', '192.168.0.3'), entry('10.1.0.5', '192.168.0.3')]);
    assert.deepEqual(plan.remove, [entry('10.1.0.3', '192.168.0.3'), entry('10.1.0.4', '192.168.0.2')]);
  });

  it('applied to the current state, always reaches the desired state', () => {
    const endpoint = fc.record({
      ip: fc.integer({ min: 1, max: 20 }).map((n) => `10.9.0.${n}`),
      host: fc.constantFrom('192.168.0.1', '192.168.0.2'),
    });
    fc.assert(
      fc.property(
        fc.array(endpoint),
        fc.uniqueArray(endpoint, { selector: (e) => e.ip }),
        (current, desired) => {
          const have = current.map((e) => entry(e.ip, e.host));
          const plan = planForwarding(have, desired);
          const key = (e: { ip: string; mac: string; host: string }) => `${e.ip}|${e.mac}|${e.host}`;
          const after = new Set(have.map(key));
          for (const r of plan.remove) assert.ok(after.delete(key(r)), 'removes only what exists');
          for (const a of plan.add) after.add(key(a));
          assert.deepEqual([...after].sort(), desired.map((d) => key(entry(d.ip, d.host))).sort());
        },
      ),
    );
  });
});
