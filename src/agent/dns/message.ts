// The small part of the DNS wire format (RFC 1035) the embedded server needs: decode a query's
// header and question, encode a response with A records. Other record types are never built
// here; forwarded queries travel as raw bytes.

export const TYPE_A = 1;
export const TYPE_AAAA = 28;
export const CLASS_IN = 1;

export const RCODE_NOERROR = 0;
export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;

const HEADER_BYTES = 12;
/** RFC 1035: a name is at most 255 bytes and a label 63. */
const MAX_NAME_BYTES = 255;
const MAX_LABEL_BYTES = 63;
/** Compression pointers followed before a name is declared malformed (loops). */
const MAX_POINTERS = 16;
/** Classic DNS over UDP without EDNS: answers larger than this are truncated (TC bit). */
export const MAX_UDP_RESPONSE_BYTES = 512;

export interface Question {
  /** Lower case, without the trailing dot. */
  readonly name: string;
  readonly type: number;
  readonly qclass: number;
}

export interface Query {
  readonly id: number;
  readonly flags: number;
  readonly question: Question;
}

export interface Answer {
  readonly name: string;
  readonly ttlSeconds: number;
  /** Dotted IPv4. */
  readonly address: string;
}

export class DnsFormatError extends Error {}

/** Decodes a name at offset; returns it and the offset after it (not after a pointer's target). */
export function decodeName(buf: Buffer, offset: number): { name: string; next: number } {
  const labels: string[] = [];
  let length = 0;
  let position = offset;
  let next = -1;
  for (let pointers = 0; ;) {
    const size = buf[position];
    if (size === undefined) throw new DnsFormatError('name runs past the message');
    if ((size & 0xc0) === 0xc0) {
      const low = buf[position + 1];
      if (low === undefined) throw new DnsFormatError('truncated compression pointer');
      if (++pointers > MAX_POINTERS) throw new DnsFormatError('compression pointer loop');
      if (next < 0) next = position + 2;
      position = ((size & 0x3f) << 8) | low;
      continue;
    }
    if (size > MAX_LABEL_BYTES) throw new DnsFormatError('label too long');
    position++;
    if (size === 0) break;
    if (position + size > buf.length) throw new DnsFormatError('label runs past the message');
    labels.push(buf.toString('latin1', position, position + size).toLowerCase());
    length += size + 1;
    if (length > MAX_NAME_BYTES) throw new DnsFormatError('name too long');
    position += size;
  }
  return { name: labels.join('.'), next: next < 0 ? position : next };
}

export function encodeName(name: string): Buffer {
  const trimmed = name.endsWith('.') ? name.slice(0, -1) : name;
  const parts: Buffer[] = [];
  for (const label of trimmed === '' ? [] : trimmed.split('.')) {
    const bytes = Buffer.from(label, 'latin1');
    if (bytes.length === 0 || bytes.length > MAX_LABEL_BYTES) {
      throw new DnsFormatError(`bad label in '${name}'`);
    }
    parts.push(Buffer.from([bytes.length]), bytes);
  }
  parts.push(Buffer.from([0]));
  const encoded = Buffer.concat(parts);
  if (encoded.length > MAX_NAME_BYTES) throw new DnsFormatError(`name too long: '${name}'`);
  return encoded;
}

/** Decodes a query: exactly one question, QR bit clear. Throws DnsFormatError otherwise. */
export function decodeQuery(buf: Buffer): Query {
  if (buf.length < HEADER_BYTES) throw new DnsFormatError('message shorter than a header');
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  if (flags & 0x8000) throw new DnsFormatError('not a query');
  if (buf.readUInt16BE(4) !== 1) throw new DnsFormatError('expected exactly one question');
  const { name, next } = decodeName(buf, HEADER_BYTES);
  if (next + 4 > buf.length) throw new DnsFormatError('question runs past the message');
  return {
    id,
    flags,
    question: { name, type: buf.readUInt16BE(next), qclass: buf.readUInt16BE(next + 2) },
  };
}

/** Encodes a query (used by tests and tools; the server only decodes them). */
export function encodeQuery(id: number, name: string, type = TYPE_A): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(CLASS_IN, 2);
  return Buffer.concat([header, encodeName(name), tail]);
}

export interface ResponseOptions {
  readonly rcode: number;
  readonly answers?: readonly Answer[];
  /** Authoritative for names in the cluster's domain. */
  readonly authoritative?: boolean;
  /** Drop answers that do not fit and set TC, so the client retries over TCP. */
  readonly maxBytes?: number;
}

/** A response echoing the query's id, RD bit and question. */
export function encodeResponse(query: Query, options: ResponseOptions): Buffer {
  const question = Buffer.concat([encodeName(query.question.name), Buffer.alloc(4)]);
  question.writeUInt16BE(query.question.type, question.length - 4);
  question.writeUInt16BE(query.question.qclass, question.length - 2);
  const records: Buffer[] = [];
  let size = HEADER_BYTES + question.length;
  let truncated = false;
  for (const answer of options.answers ?? []) {
    // The name points back at the question (offset 12), as most servers compress it.
    const record = Buffer.alloc(16);
    const sameName = answer.name === query.question.name;
    const name = sameName ? Buffer.from([0xc0, HEADER_BYTES]) : encodeName(answer.name);
    record.writeUInt16BE(TYPE_A, 0);
    record.writeUInt16BE(CLASS_IN, 2);
    record.writeUInt32BE(answer.ttlSeconds, 4);
    record.writeUInt16BE(4, 8);
    const octets = answer.address.split('.').map(Number);
    if (octets.length !== 4 || octets.some((o) => !(o >= 0 && o <= 255))) {
      throw new DnsFormatError(`not an IPv4 address: '${answer.address}'`);
    }
    octets.forEach((octet, i) => record.writeUInt8(octet, 10 + i));
    const bytes = Buffer.concat([name, record.subarray(0, 14)]);
    if (options.maxBytes !== undefined && size + bytes.length > options.maxBytes) {
      truncated = true;
      break;
    }
    size += bytes.length;
    records.push(bytes);
  }
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt16BE(query.id, 0);
  // QR, opcode 0, AA, TC, RD echoed, RA (we recurse through the upstreams), rcode.
  const flags =
    0x8000 |
    (options.authoritative ? 0x0400 : 0) |
    (truncated ? 0x0200 : 0) |
    (query.flags & 0x0100) |
    0x0080 |
    (options.rcode & 0x0f);
  header.writeUInt16BE(flags, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records.length, 6);
  return Buffer.concat([header, question, ...records]);
}

export interface DecodedResponse {
  readonly id: number;
  readonly rcode: number;
  readonly truncated: boolean;
  readonly authoritative: boolean;
  readonly name: string;
  /** The A records' addresses, in order. */
  readonly addresses: string[];
}

/** Decodes a response's A answers (for tests and the forwarder's checks). */
export function decodeResponse(buf: Buffer): DecodedResponse {
  if (buf.length < HEADER_BYTES) throw new DnsFormatError('message shorter than a header');
  const flags = buf.readUInt16BE(2);
  const questions = buf.readUInt16BE(4);
  const answers = buf.readUInt16BE(6);
  let offset = HEADER_BYTES;
  let name = '';
  for (let i = 0; i < questions; i++) {
    const decoded = decodeName(buf, offset);
    name = decoded.name;
    offset = decoded.next + 4;
  }
  const addresses: string[] = [];
  for (let i = 0; i < answers; i++) {
    offset = decodeName(buf, offset).next;
    if (offset + 10 > buf.length) throw new DnsFormatError('record runs past the message');
    const type = buf.readUInt16BE(offset);
    const length = buf.readUInt16BE(offset + 8);
    offset += 10;
    if (offset + length > buf.length) throw new DnsFormatError('record data runs past the message');
    if (type === TYPE_A && length === 4) addresses.push([...buf.subarray(offset, offset + 4)].join('.'));
    offset += length;
  }
  return {
    id: buf.readUInt16BE(0),
    rcode: flags & 0x0f,
    truncated: (flags & 0x0200) !== 0,
    authoritative: (flags & 0x0400) !== 0,
    name,
    addresses,
  };
}
