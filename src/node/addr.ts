// Addresses as users write them ("10.0.0.5", "10.0.0.5:4242", "[::1]:4242") and the ports the
// manager derives from its one configured port.
import net from 'node:net';
import { invalidArgument } from '../common/errors';

export const DEFAULT_MANAGER_PORT = 4242;

export interface HostPort {
  host: string;
  port: number;
}

/** Parses "host", "host:port" or "[v6]:port"; the port defaults to `defaultPort`. */
export function parseHostPort(text: string, defaultPort = DEFAULT_MANAGER_PORT, what = 'address'): HostPort {
  const value = text.trim();
  let host = value;
  let portText: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(value);
  if (v6?.[1]) {
    host = v6[1];
    portText = v6[2];
  } else if (value.split(':').length === 2) {
    const [h, p] = value.split(':');
    host = h ?? '';
    portText = p;
  }
  if (host === '' || (net.isIP(host) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host))) {
    throw invalidArgument(
      `invalid ${what} '${text}': expected an IP address or host name, optionally with :port`,
    );
  }
  const port = portText === undefined ? defaultPort : Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalidArgument(`invalid ${what} '${text}': the port must be 1-65535`);
  }
  return { host, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The join port (NodeCA over TLS without client certificates) is the manager port + 1. */
export function joinAddress(managerAddr: string): string {
  const hp = parseHostPort(managerAddr);
  return formatHostPort({ host: hp.host, port: hp.port + 1 });
}
