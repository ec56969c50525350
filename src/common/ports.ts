// Free TCP ports on 127.0.0.1 for tests and benchmarks (the kernel picks; the probe is closed
// before the port is used, so a race with another process is possible but rare).
import net from 'node:net';

function listen(port: number): Promise<net.Server | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

export async function freePort(): Promise<number> {
  const server = await listen(0);
  if (!server) throw new Error('no free port on 127.0.0.1');
  const port = (server.address() as net.AddressInfo).port;
  await close(server);
  return port;
}

/** A port whose neighbour is free too: a manager listens on both (port, and the join port + 1). */
export async function freeManagerPort(attempts = 20): Promise<number> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const first = await listen(0);
    if (!first) continue;
    const port = (first.address() as net.AddressInfo).port;
    const second = await listen(port + 1);
    await close(first);
    if (second) {
      await close(second);
      return port;
    }
  }
  throw new Error('no free pair of ports on 127.0.0.1');
}
