// The service spec → Engine API create body mapping, without an engine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Mount_Type, PortConfig_Protocol, PortConfig_PublishMode, Task } from '../../gen/cluster/v1/objects';
import { DockerRuntime, containerConfig, containerName, splitImage } from './docker';
import { RuntimeUnavailableError } from './index';

test('the container config carries every mapped field of the spec', () => {
  const task = Task.fromPartial({
    id: 'task1',
    serviceId: 'svc1',
    slot: 2,
    spec: {
      container: {
        image: 'local/busybox:1',
        command: ['httpd'],
        args: ['-f', '-p', '80'],
        env: ['A=1'],
        labels: { team: 'x' },
        hostname: 'web-2',
        user: '1000:1000',
        dir: '/srv',
        mounts: [
          { type: Mount_Type.TYPE_BIND, source: '/tmp/x', target: '/x', readOnly: true },
          { type: Mount_Type.TYPE_VOLUME, source: 'data', target: '/data' },
          { type: Mount_Type.TYPE_TMPFS, target: '/run', tmpfsSizeBytes: 1024 },
        ],
        stopGracePeriod: { seconds: 3, nanos: 0 },
        stopSignal: 'SIGINT',
        readOnly: true,
        init: true,
        dnsConfig: { nameservers: ['10.0.0.2'], search: ['svc'], options: ['ndots:1'] },
        healthcheck: { test: ['CMD', 'true'], interval: { seconds: 1, nanos: 0 }, retries: 2 },
      },
      resources: { limits: { nanoCpus: 250_000_000, memoryBytes: 32 << 20, pids: 50 } },
    },
    endpoint: {
      ports: [
        { targetPort: 80, publishedPort: 8080, publishMode: PortConfig_PublishMode.PUBLISH_MODE_HOST },
        {
          targetPort: 53,
          publishedPort: 5353,
          protocol: PortConfig_Protocol.PROTOCOL_UDP,
          publishMode: PortConfig_PublishMode.PUBLISH_MODE_HOST,
        },
        { targetPort: 443, publishedPort: 30443, publishMode: PortConfig_PublishMode.PUBLISH_MODE_INGRESS },
      ],
    },
  });
  const c = containerConfig(task, 'node1');
  assert.deepEqual(c.Entrypoint, ['httpd']);
  assert.deepEqual(c.Cmd, ['-f', '-p', '80']);
  assert.deepEqual(c.Env, ['A=1']);
  assert.deepEqual(c.Labels, {
    team: 'x',
    'cluster.task.id': 'task1',
    'cluster.service.id': 'svc1',
    'cluster.node.id': 'node1',
  });
  assert.equal(c.Hostname, 'web-2');
  assert.equal(c.User, '1000:1000');
  assert.equal(c.WorkingDir, '/srv');
  assert.equal(c.StopSignal, 'SIGINT');
  assert.equal(c.StopTimeout, 3);
  assert.deepEqual(c.Healthcheck, {
    Test: ['CMD', 'true'],
    Interval: 1e9,
    Timeout: 0,
    Retries: 2,
    StartPeriod: 0,
  });
  const host = c.HostConfig as Record<string, unknown>;
  assert.deepEqual(host.RestartPolicy, { Name: 'no' });
  assert.equal(host.Memory, 32 << 20);
  assert.equal(host.NanoCpus, 250_000_000);
  assert.equal(host.PidsLimit, 50);
  assert.equal(host.ReadonlyRootfs, true);
  assert.equal(host.Init, true);
  assert.deepEqual(host.Dns, ['10.0.0.2']);
  assert.deepEqual(host.DnsSearch, ['svc']);
  assert.deepEqual(host.DnsOptions, ['ndots:1']);
  assert.deepEqual(host.Mounts, [
    { Type: 'bind', Source: '/tmp/x', Target: '/x', ReadOnly: true },
    { Type: 'volume', Source: 'data', Target: '/data', ReadOnly: false },
    { Type: 'tmpfs', Target: '/run', ReadOnly: false, TmpfsOptions: { SizeBytes: 1024 } },
  ]);
  // Host-mode ports only: ingress publication is the routing mesh's (networking issue).
  assert.deepEqual(host.PortBindings, {
    '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '8080' }],
    '53/udp': [{ HostIp: '0.0.0.0', HostPort: '5353' }],
  });
  assert.deepEqual(c.ExposedPorts, { '80/tcp': {}, '53/udp': {} });
});

test('no command or args keeps the image defaults; no image is an error', () => {
  const c = containerConfig(Task.fromPartial({ id: 't', spec: { container: { image: 'x' } } }), 'n');
  assert.equal(c.Entrypoint, undefined);
  assert.equal(c.Cmd, undefined);
  assert.equal((c.HostConfig as Record<string, unknown>).Memory, undefined);
  assert.equal((c.HostConfig as Record<string, unknown>).PidsLimit, undefined, 'no limit: Docker default');
  assert.throws(() => containerConfig(Task.fromPartial({ id: 't' }), 'n'), /no container image/);
});

test('image references and container names', () => {
  assert.deepEqual(splitImage('busybox'), { repo: 'busybox', tag: 'latest' });
  assert.deepEqual(splitImage('local/busybox:1'), { repo: 'local/busybox', tag: '1' });
  assert.deepEqual(splitImage('127.0.0.1:5000/x'), { repo: '127.0.0.1:5000/x', tag: 'latest' });
  assert.deepEqual(splitImage('x@sha256:ab'), { repo: 'x', tag: 'sha256:ab' });
  assert.equal(containerName(Task.fromPartial({ id: 'abc', slot: 3 })), 'cluster.task.3.abc');
  assert.equal(
    containerName(Task.fromPartial({ id: 'abc', annotations: { name: 'web/1' } })),
    'cluster.web-1.abc',
  );
});

test('a task with an overlay address gets no Docker network: the mesh plumbs it', () => {
  const spec = { container: { image: 'x' } };
  const bridged = containerConfig(Task.fromPartial({ id: 't', spec }), 'n');
  assert.equal((bridged.HostConfig as { NetworkMode: string }).NetworkMode, 'bridge');
  const meshed = containerConfig(
    Task.fromPartial({ id: 't', spec, networks: [{ networkId: 'ingress', addresses: ['10.255.0.5/16'] }] }),
    'n',
  );
  assert.equal((meshed.HostConfig as { NetworkMode: string }).NetworkMode, 'none');
});

test("HTTP and TCP probes are the agent's: Docker gets no check of that form and drops the image's", () => {
  for (const probe of [
    ['HTTP', '80', '/'],
    ['TCP', '81'],
  ]) {
    const c = containerConfig(
      Task.fromPartial({
        id: 't',
        spec: { container: { image: 'x', healthcheck: { test: probe, retries: 2 } } },
      }),
      'n',
    );
    assert.deepEqual(c.Healthcheck, { Test: ['NONE'] });
  }
});

test('a wait the engine cuts off by going away is the engine unavailable, not the container ending', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'docker-test-'));
  const socketPath = path.join(dir, 'docker.sock');
  // As dockerd does on SIGTERM with live-restore: the wait's headers are out, then the connection drops.
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.flushHeaders();
    setImmediate(() => req.socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  try {
    const runtime = new DockerRuntime({ socketPath });
    await assert.rejects(
      runtime.wait('c1', new AbortController().signal),
      (err: unknown) =>
        err instanceof RuntimeUnavailableError && err.message.includes(`does not answer on ${socketPath}`),
    );
  } finally {
    await new Promise((resolve) => server.close(resolve));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
