// The wire format: names round-trip, compression pointers are followed, loops and truncated
// messages are rejected rather than read past.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { DnsFormatError, decodeName, decodeQuery, encodeName, encodeQuery } from './message';

describe('dns message', () => {
  it('round-trips a query and lower-cases its name', () => {
    const query = decodeQuery(encodeQuery(513, 'Tasks.Web.cluster.', 1));
    assert.deepEqual(query.question, { name: 'tasks.web.cluster', type: 1, qclass: 1 });
    assert.equal(query.id, 513);
  });

  it('follows a compression pointer and resumes after it', () => {
    const buf = Buffer.concat([encodeName('web.cluster'), Buffer.from([3, 0x61, 0x62, 0x63, 0xc0, 4])]);
    assert.deepEqual(decodeName(buf, 13), { name: 'abc.cluster', next: 19 });
  });

  it('rejects pointer loops, names past the end and over-long labels', () => {
    assert.throws(() => decodeName(Buffer.from([0xc0, 0]), 0), DnsFormatError);
    assert.throws(() => decodeName(Buffer.from([5, 0x61]), 0), DnsFormatError);
    assert.throws(() => encodeName(`${'a'.repeat(64)}.cluster`), DnsFormatError);
    assert.throws(() => decodeQuery(encodeQuery(1, 'web').subarray(0, 15)), DnsFormatError);
  });
});
