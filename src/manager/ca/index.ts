// The cluster's certificate authority: the root CA made by `cluster init`, node certificates
// (CN = node id, OU = role, O = cluster id), join tokens that name a role and pin the CA's
// digest as Swarm's do, and the mutual-TLS credentials every node-to-node call uses.
import 'reflect-metadata';
import { createHash, randomBytes, timingSafeEqual, webcrypto, X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import * as x509 from '@peculiar/x509';
import { ChannelCredentials, ServerCredentials } from '@grpc/grpc-js';
import { ClusterError, invalidArgument } from '../../common/errors';

type CryptoKey = webcrypto.CryptoKey;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export type NodeRoleName = 'manager' | 'worker';

const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
export const ROOT_CA_VALIDITY_DAYS = 20 * 365;
export const NODE_CERT_VALIDITY_DAYS = 90;
const DAY_MS = 86_400_000;
// Certificates start a little in the past so that small clock skew between hosts is harmless.
const NOT_BEFORE_SKEW_MS = 5 * 60_000;

export interface RootCA {
  certPem: string;
  keyPem: string;
}

export interface NodeIdentity {
  nodeId: string;
  role: NodeRoleName;
  clusterId: string;
}

export interface NodeKeyPair {
  keyPem: string;
  csrPem: string;
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

function fromPem(pem: string, label: string): ArrayBuffer {
  const match = new RegExp(`-----BEGIN ${label}-----([\\s\\S]+?)-----END ${label}-----`).exec(pem);
  if (!match?.[1]) throw invalidArgument(`expected a PEM ${label.toLowerCase()}`);
  const bytes = Buffer.from(match[1].replace(/\s+/g, ''), 'base64');
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  return toPem(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function importPrivateKey(keyPem: string): Promise<CryptoKey> {
  return webcrypto.subtle.importKey('pkcs8', fromPem(keyPem, 'PRIVATE KEY'), KEY_ALGORITHM, false, ['sign']);
}

function serialNumber(): string {
  // Positive 128-bit serial: clear the top bit.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString('hex');
}

/** Checks names that end up inside a distinguished name. */
function assertDnSafe(what: string, value: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(value)) {
    throw invalidArgument(`${what} must be 1-64 letters, digits, '.', '_' or '-', got '${value}'`);
  }
}

export async function createRootCA(clusterId: string, now = new Date()): Promise<RootCA> {
  assertDnSafe('cluster id', clusterId);
  const keys = await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=cluster-root-ca, O=${clusterId}`,
    notBefore: new Date(now.getTime() - NOT_BEFORE_SKEW_MS),
    notAfter: new Date(now.getTime() + ROOT_CA_VALIDITY_DAYS * DAY_MS),
    keys: keys,
    signingAlgorithm: KEY_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await exportKeyPem(keys.privateKey) };
}

/** A fresh key pair and a certificate request for it; the key never leaves the node. */
export async function generateNodeKey(): Promise<NodeKeyPair> {
  const keys = await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=pending',
    keys,
    signingAlgorithm: KEY_ALGORITHM,
  });
  return { keyPem: await exportKeyPem(keys.privateKey), csrPem: csr.toString('pem') + '\n' };
}

/**
 * Signs a node's certificate request. The subject comes from the CA, not from the request:
 * a node cannot choose its own id or role.
 */
export async function signNodeCertificate(
  ca: RootCA,
  csrPem: string,
  identity: NodeIdentity,
  now = new Date(),
): Promise<string> {
  assertDnSafe('node id', identity.nodeId);
  assertDnSafe('cluster id', identity.clusterId);
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    throw invalidArgument('the certificate request is not a valid PEM PKCS#10 request');
  }
  if (!(await csr.verify())) throw invalidArgument('the certificate request signature does not verify');
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await importPrivateKey(ca.keyPem);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${identity.nodeId}, OU=${identity.role}, O=${identity.clusterId}`,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - NOT_BEFORE_SKEW_MS),
    notAfter: new Date(now.getTime() + NODE_CERT_VALIDITY_DAYS * DAY_MS),
    signingKey: caKey,
    publicKey: csr.publicKey,
    signingAlgorithm: KEY_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement,
        true,
      ),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      // The node id as a DNS name, so that TLS hostname checks can name the peer they expect.
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: identity.nodeId }]),
    ],
  });
  return cert.toString('pem') + '\n';
}

function identityFromSubject(subject: Record<string, string | string[] | undefined>): NodeIdentity {
  const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  const nodeId = one(subject.CN);
  const role = one(subject.OU);
  const clusterId = one(subject.O);
  if (!nodeId || !clusterId || (role !== 'manager' && role !== 'worker')) {
    throw new ClusterError('UNAUTHENTICATED', 'the peer certificate is not a cluster node certificate');
  }
  return { nodeId, role, clusterId };
}

function parseSubject(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) fields[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return fields;
}

/** Who a certificate says its holder is. */
export function nodeIdentityFromCert(certPem: string): NodeIdentity {
  return identityFromSubject(parseSubject(new X509Certificate(certPem).subject));
}

/** Who the TLS peer is, from the certificate the handshake verified against the cluster CA. */
export function nodeIdentityFromPeer(peer: PeerCertificate | undefined): NodeIdentity {
  if (!peer?.subject) throw new ClusterError('UNAUTHENTICATED', 'no client certificate was presented');
  return identityFromSubject(peer.subject);
}

/** The digest join tokens pin: SHA-256 of the CA certificate's DER, in base 36 (50 characters). */
export function caDigest(certPem: string): string {
  const der = new X509Certificate(certPem).raw;
  return BigInt('0x' + createHash('sha256').update(der).digest('hex'))
    .toString(36)
    .padStart(50, '0');
}

const TOKEN_PREFIX = 'SWMTKN-1-';
const SECRET_LENGTH = 25;

/** A new join token: the CA digest and a random secret, as Swarm's SWMTKN-1-<digest>-<secret>. */
export function makeJoinToken(caCertPem: string): string {
  const secret = BigInt('0x' + randomBytes(16).toString('hex'))
    .toString(36)
    .padStart(SECRET_LENGTH, '0')
    .slice(-SECRET_LENGTH);
  return `${TOKEN_PREFIX}${caDigest(caCertPem)}-${secret}`;
}

export interface ParsedJoinToken {
  caDigest: string;
  secret: string;
}

export function parseJoinToken(token: string): ParsedJoinToken {
  const match = /^SWMTKN-1-([0-9a-z]{50})-([0-9a-z]{25})$/.exec(token.trim());
  if (!match?.[1] || !match[2]) {
    throw invalidArgument(
      "invalid join token: expected 'SWMTKN-1-<50 characters>-<25 characters>' as printed by 'cluster join-token'",
    );
  }
  return { caDigest: match[1], secret: match[2] };
}

/** Fails unless the CA certificate fetched from a manager is the one the token pins. */
export function verifyCaAgainstToken(caCertPem: string, token: string): void {
  const { caDigest: pinned } = parseJoinToken(token);
  if (caDigest(caCertPem) !== pinned) {
    throw new ClusterError(
      'UNAUTHENTICATED',
      "the manager's CA certificate does not match the join token: check the address, or ask for a current token with 'cluster join-token'",
    );
  }
}

function constantTimeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The role a presented token grants under the cluster's current tokens, or an error. */
export function roleForToken(token: string, current: { worker: string; manager: string }): NodeRoleName {
  parseJoinToken(token);
  if (constantTimeEqual(token.trim(), current.manager)) return 'manager';
  if (constantTimeEqual(token.trim(), current.worker)) return 'worker';
  throw new ClusterError(
    'PERMISSION_DENIED',
    "the join token is not valid for this cluster (it may have been rotated): get a current one with 'cluster join-token'",
  );
}

/**
 * Channel options for dialling a node by IP address: the TLS server name is not the address
 * (certificates name node ids and clientCredentials checks the role instead), and Node warns
 * when an IP is used as a server name.
 */
export const NODE_CHANNEL_OPTIONS = { 'grpc.ssl_target_name_override': 'cluster-node' } as const;

export interface NodeTls {
  caCertPem: string;
  certPem: string;
  keyPem: string;
}

/**
 * Credentials for the join port: the caller has no certificate yet, so only the server is
 * checked: signed by `caCertPem` (pinned by the join token) and holding a manager certificate
 * (a worker's certificate is signed by the same CA and must not collect join requests).
 */
export function joinClientCredentials(caCertPem: string): ChannelCredentials {
  return ChannelCredentials.createSsl(Buffer.from(caCertPem), null, null, {
    checkServerIdentity: (_host, cert) => {
      try {
        const who = nodeIdentityFromPeer(cert);
        return who.role === 'manager' ? undefined : new Error(`peer ${who.nodeId} is not a manager`);
      } catch (e) {
        return e instanceof Error ? e : new Error(String(e));
      }
    },
  });
}

/** Server side of mutual TLS: clients must present a certificate signed by the cluster CA. */
export function serverCredentials(tls: NodeTls): ServerCredentials {
  return ServerCredentials.createSsl(
    Buffer.from(tls.caCertPem),
    [{ cert_chain: Buffer.from(tls.certPem), private_key: Buffer.from(tls.keyPem) }],
    true,
  );
}

/**
 * Client side of mutual TLS. Peers are addressed by IP, and their certificates name node ids,
 * so instead of a hostname check we require a certificate from the cluster CA (the handshake
 * verifies that) whose role is `expectRole` (a worker must not pose as a manager).
 */
export function clientCredentials(
  tls: NodeTls,
  expectRole: NodeRoleName | 'any' = 'manager',
): ChannelCredentials {
  return ChannelCredentials.createSsl(
    Buffer.from(tls.caCertPem),
    Buffer.from(tls.keyPem),
    Buffer.from(tls.certPem),
    {
      checkServerIdentity: (_host, cert) => {
        try {
          const who = nodeIdentityFromPeer(cert);
          if (expectRole !== 'any' && who.role !== expectRole) {
            return new Error(`peer ${who.nodeId} is a ${who.role}, expected a ${expectRole}`);
          }
          return undefined;
        } catch (e) {
          return e instanceof Error ? e : new Error(String(e));
        }
      },
    },
  );
}
