// What the agent derives from the leader's mesh state: the DNS records of a user network and the
// load balancer's endpoint set for each data plane.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MeshNetwork, MeshState } from '../gen/cluster/v1/dispatcher';
import { PortConfig_Protocol } from '../gen/cluster/v1/objects';
import { dnsRecordsOf, lbConfigOf } from './mesh';
import { validateConfig } from './lb/types';

const appnet = MeshNetwork.fromPartial({
  network: { id: 'n1', vni: 4097, spec: { ipam: { subnet: '10.0.0.0/24', gateway: '10.0.0.1' } } },
  nodeAddress: '10.0.0.5/24',
  services: [
    {
      serviceId: 's1',
      name: 'web',
      vip: '10.0.0.4/24',
      backends: ['10.0.0.2', '10.0.0.3'],
      ports: [{ protocol: PortConfig_Protocol.PROTOCOL_TCP, targetPort: 80 }],
      aliases: ['www'],
    },
    {
      serviceId: 's2',
      name: 'db',
      vip: '',
      backends: ['10.0.0.7', '10.0.0.8'],
      ports: [],
      aliases: ['store'],
    },
  ],
});

const local = {
  networkId: 'n1',
  vni: 4097,
  subnet: '10.0.0.0/24',
  nodeAddress: '10.0.0.5/24',
  endpoints: [],
  vips: ['10.0.0.4'],
  user: appnet,
};

const state = MeshState.fromPartial({
  nodeAddress: '10.255.0.3/16',
  ports: [
    {
      serviceId: 's1',
      protocol: PortConfig_Protocol.PROTOCOL_TCP,
      publishedPort: 8080,
      targetPort: 80,
      backends: ['10.255.0.7'],
    },
  ],
  networks: [appnet],
});

test('DNS records: a VIP service by its VIP, a dnsrr service by its tasks, tasks. names, aliases', () => {
  const records = dnsRecordsOf(appnet);
  assert.deepEqual(records.services, [
    { name: 'web', vip: '10.0.0.4', taskIps: ['10.0.0.2', '10.0.0.3'] },
    { name: 'db', vip: undefined, taskIps: ['10.0.0.7', '10.0.0.8'] },
  ]);
  assert.deepEqual(records.aliases, { www: ['10.0.0.4'], store: ['10.0.0.7', '10.0.0.8'] });
});

test('nftables: published ports plus each VIP on every port of tcp and udp, source-NATed to the node', () => {
  const config = lbConfigOf(state, [local], 'nftables');
  validateConfig(config);
  assert.deepEqual(
    config.frontends.map(
      (f) => `${f.kind}/${f.protocol}/${f.address ?? ''}:${f.port}${f.allPorts ? '*' : ''}>${f.snatTo ?? ''}`,
    ),
    ['published/tcp/:8080>10.255.0.3', 'vip/tcp/10.0.0.4:0*>10.0.0.5', 'vip/udp/10.0.0.4:0*>10.0.0.5'],
  );
  assert.deepEqual(config.frontends[1]?.backends, [
    { ip: '10.0.0.2', port: 0 },
    { ip: '10.0.0.3', port: 0 },
  ]);
});

test('userspace: a VIP listens on the ports its service declares only (a proxy cannot take every port)', () => {
  const config = lbConfigOf(state, [local], 'userspace');
  validateConfig(config);
  assert.deepEqual(
    config.frontends.map((f) => `${f.kind}/${f.protocol}/${f.address ?? ''}:${f.port}`),
    ['published/tcp/:8080', 'vip/tcp/10.0.0.4:80'],
  );
  assert.ok(config.frontends.every((f) => f.allPorts !== true));
});
