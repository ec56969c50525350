// Throwaway mutual-TLS material for tests and benchmarks: a CA and per-node certificates made
// with the openssl command in a temp dir, valid for 127.0.0.1 only. Never used in production
// (there the cluster CA from `cluster init` issues node certificates).

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ChannelCredentials, ServerCredentials, type ChannelOptions } from '@grpc/grpc-js';

/**
 * Connect to 127.0.0.1 but verify the name `localhost` (also in the certificates): TLS server
 * names may not be IP addresses (RFC 6066), and Node warns when one is used.
 */
export const TEST_CHANNEL_OPTIONS: ChannelOptions = {
  'grpc.ssl_target_name_override': 'localhost',
  'grpc.default_authority': 'localhost',
};

export interface NodeTlsFiles {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface TestPki {
  dir: string;
  ca: Buffer;
  /** Certificate and key for a node (made on first use). */
  node(name: string): NodeTlsFiles;
  /** Removes the temp dir. */
  cleanup(): void;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Makes a CA in a fresh temp dir (under `parent` if given). */
export function createTestPki(parent: string = tmpdir()): TestPki {
  const dir = mkdtempSync(join(parent, 'raft-pki-'));
  openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key']);
  openssl(dir, [
    'req',
    '-x509',
    '-new',
    '-key',
    'ca.key',
    '-sha256',
    '-days',
    '2',
    '-subj',
    '/CN=test-raft-ca',
    '-out',
    'ca.crt',
  ]);
  const ca = readFileSync(join(dir, 'ca.crt'));
  const made = new Map<string, NodeTlsFiles>();
  return {
    dir,
    ca,
    node(name: string): NodeTlsFiles {
      const existing = made.get(name);
      if (existing) return existing;
      const safe = name.replace(/[^A-Za-z0-9_-]/g, '_');
      writeFileSync(
        join(dir, `${safe}.ext`),
        'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n',
      );
      openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${safe}.key`]);
      openssl(dir, ['req', '-new', '-key', `${safe}.key`, '-subj', `/CN=${safe}`, '-out', `${safe}.csr`]);
      openssl(dir, [
        'x509',
        '-req',
        '-in',
        `${safe}.csr`,
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-days',
        '2',
        '-sha256',
        '-extfile',
        `${safe}.ext`,
        '-out',
        `${safe}.crt`,
      ]);
      const files = {
        ca,
        cert: readFileSync(join(dir, `${safe}.crt`)),
        key: readFileSync(join(dir, `${safe}.key`)),
      };
      made.set(name, files);
      return files;
    },
    cleanup(): void {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Server side of mutual TLS: client certificates are required and checked against the CA. */
export function serverCredentials(files: NodeTlsFiles): ServerCredentials {
  return ServerCredentials.createSsl(files.ca, [{ cert_chain: files.cert, private_key: files.key }], true);
}

export function channelCredentials(files: NodeTlsFiles): ChannelCredentials {
  return ChannelCredentials.createSsl(files.ca, files.key, files.cert);
}
