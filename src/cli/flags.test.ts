import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterError } from '../common/errors';
import { Mount_Type, PortConfig_Protocol, PortConfig_PublishMode } from '../gen/cluster/v1/objects';
import {
  formatDuration,
  parseBytes,
  parseChoice,
  parseDuration,
  parseDurationNanos,
  parseEnvEntry,
  parseEnvFile,
  parseHealthHttp,
  parseHealthTcp,
  parseKeyValue,
  parseMount,
  parseNanoCpus,
  parsePublish,
  parseRatio,
  parseWholeNumber,
} from './flags';

/** A USAGE error (exit 2) whose message names the flag and the value. */
function assertUsage(fn: () => unknown, flag: string, value: string, rule?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ClusterError, `a ClusterError, got ${String(e)}`);
    assert.equal(e.code, 'USAGE');
    assert.equal(e.exitCode, 2);
    assert.ok(e.message.includes(`"${flag}"`), `names the flag: ${e.message}`);
    assert.ok(e.message.includes(`"${value}"`), `names the value: ${e.message}`);
    if (rule) assert.match(e.message, rule);
    return true;
  });
}

test('durations are parsed as Go parses them', () => {
  assert.equal(parseDurationNanos('--d', '5s'), 5_000_000_000n);
  assert.equal(parseDurationNanos('--d', '1m30s'), 90_000_000_000n);
  assert.equal(parseDurationNanos('--d', '500ms'), 500_000_000n);
  assert.equal(parseDurationNanos('--d', '1.5h'), 5_400_000_000_000n);
  assert.equal(parseDurationNanos('--d', '2h45m10s'), (2n * 3600n + 45n * 60n + 10n) * 1_000_000_000n);
  assert.equal(parseDurationNanos('--d', '10us'), 10_000n);
  assert.equal(parseDurationNanos('--d', '10µs'), 10_000n);
  assert.equal(parseDurationNanos('--d', '7ns'), 7n);
  assert.equal(parseDurationNanos('--d', '.5s'), 500_000_000n);
  assert.equal(parseDurationNanos('--d', '0'), 0n);
  assert.deepEqual(parseDuration('--d', '1m30.25s'), { seconds: 90, nanos: 250_000_000 });
});

test('bad durations are usage errors naming the flag', () => {
  for (const bad of ['5', '-5s', '', 's', '5x', '1m 30s', '1.2.3s', 'abc', '5s5']) {
    assertUsage(() => parseDuration('--restart-delay', bad), '--restart-delay', bad, /duration/);
  }
});

test('durations print as Go prints them', () => {
  assert.equal(formatDuration({ seconds: 90, nanos: 0 }), '1m30s');
  assert.equal(formatDuration({ seconds: 0, nanos: 500_000_000 }), '500ms');
  assert.equal(formatDuration({ seconds: 3600, nanos: 0 }), '1h0m0s');
  assert.equal(formatDuration({ seconds: 5, nanos: 0 }), '5s');
  assert.equal(formatDuration({ seconds: 1, nanos: 500_000_000 }), '1.5s');
  assert.equal(formatDuration(undefined), '0s');
  for (const text of ['1m30s', '500ms', '2h3m4s', '12s']) {
    assert.equal(formatDuration(parseDuration('--d', text)), text);
  }
});

test("byte sizes are Docker's binary multiples", () => {
  assert.equal(parseBytes('--m', '64m'), 64 * 1024 * 1024);
  assert.equal(parseBytes('--m', '64M'), 64 * 1024 * 1024);
  assert.equal(parseBytes('--m', '64mb'), 64 * 1024 * 1024);
  assert.equal(parseBytes('--m', '1g'), 1024 ** 3);
  assert.equal(parseBytes('--m', '1.5g'), 1.5 * 1024 ** 3);
  assert.equal(parseBytes('--m', '512k'), 512 * 1024);
  assert.equal(parseBytes('--m', '1048576'), 1048576);
  assert.equal(parseBytes('--m', '100b'), 100);
  for (const bad of ['', '-1m', 'm', '64x', '1e6', 'lots']) {
    assertUsage(() => parseBytes('--limit-memory', bad), '--limit-memory', bad, /size in bytes/);
  }
});

test('CPUs are decimal and become nano CPUs', () => {
  assert.equal(parseNanoCpus('--c', '0.5'), 500_000_000);
  assert.equal(parseNanoCpus('--c', '2'), 2_000_000_000);
  assert.equal(parseNanoCpus('--c', '.25'), 250_000_000);
  assert.equal(parseNanoCpus('--c', '1.000000001'), 1_000_000_001);
  assert.equal(parseNanoCpus('--c', '0'), 0);
  for (const bad of ['', '-1', 'one', '1,5', '.']) {
    assertUsage(() => parseNanoCpus('--limit-cpu', bad), '--limit-cpu', bad);
  }
  assertUsage(
    () => parseNanoCpus('--limit-cpu', '0.0000000001'),
    '--limit-cpu',
    '0.0000000001',
    /too precise/,
  );
});

test('whole numbers, ratios and choices', () => {
  assert.equal(parseWholeNumber('--replicas', '3'), 3);
  assert.equal(parseWholeNumber('--replicas', '0'), 0);
  assertUsage(() => parseWholeNumber('--replicas', '-1'), '--replicas', '-1', /whole number ≥ 0/);
  assert.throws(() => parseWholeNumber('--replicas', '-1'), {
    message: 'invalid argument "-1" for "--replicas": must be a whole number ≥ 0',
  });
  for (const bad of ['1.5', 'three', '', '1e3', '99999999999999999999']) {
    assertUsage(() => parseWholeNumber('--replicas', bad), '--replicas', bad);
  }
  assert.equal(parseRatio('--r', '0.2'), 0.2);
  assert.equal(parseRatio('--r', '1'), 1);
  for (const bad of ['1.5', '-0.1', 'x', ''])
    assertUsage(() => parseRatio('--r', bad), '--r', bad, /between 0 and 1/);
  assert.equal(parseChoice('--mode', 'Global', ['replicated', 'global'] as const), 'global');
  assertUsage(
    () => parseChoice('--mode', 'both', ['replicated', 'global'] as const),
    '--mode',
    'both',
    /replicated, global/,
  );
});

test('key=value pairs and env entries', () => {
  assert.deepEqual(parseKeyValue('--label', 'a=b=c'), ['a', 'b=c']);
  assert.deepEqual(parseKeyValue('--label', 'flag'), ['flag', '']);
  assertUsage(() => parseKeyValue('--label', '=v'), '--label', '=v');
  assertUsage(() => parseKeyValue('--label', 'a b=c'), '--label', 'a b=c');
  assertUsage(() => parseKeyValue('--filter', 'x', true), '--filter', 'x', /key=value/);
  const env = (n: string) => (n === 'HOME' ? '/root' : undefined);
  assert.equal(parseEnvEntry('--env', 'A=1', env), 'A=1');
  assert.equal(parseEnvEntry('--env', 'A=', env), 'A=');
  assert.equal(parseEnvEntry('--env', 'HOME', env), 'HOME=/root');
  assert.equal(parseEnvEntry('--env', 'UNSET', env), undefined);
});

test('env files skip comments and blank lines and take bare names from the shell', () => {
  const content = '# settings\nA=1\n\n  B=two words\nHOME\nMISSING\r\nC=x=y\n';
  assert.deepEqual(
    parseEnvFile('--env-file', 'app.env', content, (n) => (n === 'HOME' ? '/root' : undefined)),
    ['A=1', 'B=two words', 'HOME=/root', 'C=x=y'],
  );
  assertUsage(() => parseEnvFile('--env-file', 'bad.env', 'A=1\n=oops\n'), '--env-file', 'bad.env', /line 2/);
});

test('published ports, short form', () => {
  assert.deepEqual(parsePublish('-p', '8080:80'), {
    name: '',
    protocol: PortConfig_Protocol.PROTOCOL_TCP,
    targetPort: 80,
    publishedPort: 8080,
    publishMode: PortConfig_PublishMode.PUBLISH_MODE_INGRESS,
  });
  assert.equal(parsePublish('-p', '53:53/udp').protocol, PortConfig_Protocol.PROTOCOL_UDP);
  assert.equal(parsePublish('-p', '80').publishedPort, 0);
  assert.equal(parsePublish('-p', '80').targetPort, 80);
  for (const bad of ['', 'a:80', '80:', '0:80', '8080:70000', '80/sctp', '1:2:3']) {
    assertUsage(() => parsePublish('--publish', bad), '--publish', bad);
  }
});

test('published ports, long form', () => {
  const p = parsePublish('-p', 'mode=host,target=80,published=8080,protocol=udp');
  assert.equal(p.publishMode, PortConfig_PublishMode.PUBLISH_MODE_HOST);
  assert.equal(p.targetPort, 80);
  assert.equal(p.publishedPort, 8080);
  assert.equal(p.protocol, PortConfig_Protocol.PROTOCOL_UDP);
  assert.equal(parsePublish('-p', 'target=80').publishedPort, 0);
  assertUsage(
    () => parsePublish('--publish', 'published=8080'),
    '--publish',
    'published=8080',
    /target= is required/,
  );
  assertUsage(
    () => parsePublish('--publish', 'target=80,mode=bridge'),
    '--publish',
    'target=80,mode=bridge',
    /ingress or host/,
  );
  assertUsage(
    () => parsePublish('--publish', 'target=80,color=red'),
    '--publish',
    'target=80,color=red',
    /unknown field/,
  );
});

test("mounts in Docker's --mount syntax", () => {
  assert.deepEqual(parseMount('--mount', 'type=bind,src=/data,dst=/var/data,readonly'), {
    type: Mount_Type.TYPE_BIND,
    source: '/data',
    target: '/var/data',
    readOnly: true,
    tmpfsSizeBytes: 0,
  });
  const volume = parseMount('--mount', 'source=cache,target=/cache');
  assert.equal(volume.type, Mount_Type.TYPE_VOLUME);
  assert.equal(volume.readOnly, false);
  const tmpfs = parseMount('--mount', 'type=tmpfs,destination=/tmp,tmpfs-size=64m,ro=false');
  assert.equal(tmpfs.type, Mount_Type.TYPE_TMPFS);
  assert.equal(tmpfs.tmpfsSizeBytes, 64 * 1024 * 1024);
  assert.equal(tmpfs.readOnly, false);
  const bad: Array<[string, RegExp]> = [
    ['type=nfs,dst=/x', /bind, volume or tmpfs/],
    ['type=bind,src=/a', /target/],
    ['type=bind,src=relative,dst=/x', /absolute source/],
    ['type=volume,src=v,dst=relative', /absolute path/],
    ['type=tmpfs,src=/a,dst=/x', /no source/],
    ['type=volume,src=v,dst=/x,tmpfs-size=1m', /tmpfs mounts only/],
    ['type=bind,src=/a,dst=/x,readonly=maybe', /true or false/],
    ['type=bind,src=/a,dst=/x,propagation=shared', /unknown field/],
  ];
  for (const [text, rule] of bad) assertUsage(() => parseMount('--mount', text), '--mount', text, rule);
});

test('--health-http PORT[/PATH] and --health-tcp PORT', () => {
  assert.deepEqual(parseHealthHttp('--health-http', '80'), ['HTTP', '80', '/']);
  assert.deepEqual(parseHealthHttp('--health-http', ' 8080/a/b?c=d '), ['HTTP', '8080', '/a/b?c=d']);
  assert.deepEqual(parseHealthHttp('--health-http', '065535/'), ['HTTP', '65535', '/']);
  assert.deepEqual(parseHealthTcp('--health-tcp', '1'), ['TCP', '1']);
  for (const bad of ['', '0', '65536', 'x', '/x', '8.5/x', '-80', ':80/x'])
    assertUsage(() => parseHealthHttp('--health-http', bad), '--health-http', bad, /port from 1 to 65535/);
  for (const bad of ['', '0', '70000', '80/', 'http'])
    assertUsage(() => parseHealthTcp('--health-tcp', bad), '--health-tcp', bad, /port from 1 to 65535/);
});
