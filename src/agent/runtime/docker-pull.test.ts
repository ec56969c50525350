// The Engine's pull stream summed up for the task status, from lines as dockerd 20.10 writes them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_PULL_LINE_CHARS, PullProgress, humanBytes, pullFailureMessage } from './docker-pull';

const IMAGE = '127.0.0.1:5000/pulltest/busybox:1';
const line = (event: object) => JSON.stringify(event) + '\r\n';
const downloading = (id: string, current: number, total: number) =>
  line({ status: 'Downloading', progressDetail: { current, total }, progress: '[=>   ]', id });

test('bytes read in decimal units with one decimal, as Docker counts them', () => {
  assert.equal(humanBytes(0), '0 B');
  assert.equal(humanBytes(999), '999 B');
  assert.equal(humanBytes(1000), '1.0 kB');
  assert.equal(humanBytes(1_234_567), '1.2 MB');
  assert.equal(humanBytes(2_000_000), '2.0 MB');
  assert.equal(humanBytes(999_999), '1.0 MB', 'no "1000.0 kB"');
  assert.equal(humanBytes(3_500_000_000), '3.5 GB');
});

test('a pull reads as layers done and bytes downloaded, layer by layer', () => {
  const p = new PullProgress(IMAGE);
  assert.equal(p.message(), `pulling image ${IMAGE}`);
  p.push(line({ status: 'Pulling from pulltest/busybox', id: '1' }));
  assert.equal(p.message(), `pulling image ${IMAGE}`, 'the "Pulling from" line names the tag, not a layer');
  p.push(line({ status: 'Already exists', progressDetail: {}, id: 'aaa111' }));
  p.push(line({ status: 'Pulling fs layer', progressDetail: {}, id: 'bbb222' }));
  p.push(line({ status: 'Pulling fs layer', progressDetail: {}, id: 'ccc333' }));
  p.push(line({ status: 'Waiting', progressDetail: {}, id: 'ccc333' }));
  assert.equal(p.message(), `pulling image ${IMAGE}: 1 of 3 layers`, 'no sizes known yet');
  p.push(downloading('bbb222', 200_000, 1_500_000));
  assert.equal(p.message(), `pulling image ${IMAGE}: 1 of 3 layers, 200.0 kB of 1.5 MB`);
  p.push(downloading('ccc333', 100_000, 500_000));
  p.push(downloading('bbb222', 1_000_000, 1_500_000));
  assert.equal(p.message(), `pulling image ${IMAGE}: 1 of 3 layers, 1.1 MB of 2.0 MB`);
  p.push(line({ status: 'Verifying Checksum', progressDetail: {}, id: 'bbb222' }));
  p.push(line({ status: 'Download complete', progressDetail: {}, id: 'bbb222' }));
  assert.equal(p.message(), `pulling image ${IMAGE}: 1 of 3 layers, 1.6 MB of 2.0 MB`);
  p.push(line({ status: 'Extracting', progressDetail: { current: 32768, total: 1_500_000 }, id: 'bbb222' }));
  p.push(line({ status: 'Pull complete', progressDetail: {}, id: 'bbb222' }));
  assert.equal(p.message(), `pulling image ${IMAGE}: 2 of 3 layers, 1.6 MB of 2.0 MB`);
  p.push(line({ status: 'Download complete', progressDetail: {}, id: 'ccc333' }));
  p.push(line({ status: 'Pull complete', progressDetail: {}, id: 'ccc333' }));
  p.push(line({ status: 'Digest: sha256:0123abcd' }));
  p.push(line({ status: `Status: Downloaded newer image for ${IMAGE}` }));
  p.end();
  assert.equal(p.message(), `pulling image ${IMAGE}: 3 of 3 layers, 2.0 MB of 2.0 MB`);
  assert.equal(p.error, undefined);
});

test('lines cut anywhere across chunks are put back together; a last line without newline counts', () => {
  const text =
    line({ status: 'Pulling fs layer', progressDetail: {}, id: 'bbb222' }) +
    downloading('bbb222', 500_000, 1_000_000) +
    JSON.stringify({ status: 'Pull complete', progressDetail: {}, id: 'bbb222' });
  for (const size of [1, 3, 7, 64]) {
    const p = new PullProgress('x:1');
    for (let i = 0; i < text.length; i += size) p.push(text.slice(i, i + size));
    assert.equal(p.message(), 'pulling image x:1: 0 of 1 layer, 500.0 kB of 1.0 MB', `chunks of ${size}`);
    p.end();
    assert.equal(p.message(), 'pulling image x:1: 1 of 1 layer, 1.0 MB of 1.0 MB', `chunks of ${size}`);
  }
});

test('an error inside the stream is the pull failure; the first one is kept', () => {
  const p = new PullProgress('127.0.0.1:5000/nosuch:1');
  p.push(line({ status: 'Pulling from nosuch', id: '1' }));
  p.push(
    line({
      errorDetail: { message: 'manifest for 127.0.0.1:5000/nosuch:1 not found: manifest unknown' },
      error: 'manifest for 127.0.0.1:5000/nosuch:1 not found: manifest unknown',
    }),
  );
  p.push(line({ error: 'a later one' }));
  p.end();
  assert.equal(p.error, 'manifest for 127.0.0.1:5000/nosuch:1 not found: manifest unknown');
  const q = new PullProgress('x:1');
  q.push(line({ errorDetail: { message: 'only the detail' } }));
  assert.equal(q.error, 'only the detail');
});

test('garbage and overlong lines are skipped without losing the events around them', () => {
  const p = new PullProgress('x:1');
  p.push('not json\n');
  p.push('x'.repeat(MAX_PULL_LINE_CHARS + 10));
  p.push('yyy\n');
  p.push(line({ status: 'Pulling fs layer', progressDetail: {}, id: 'bbb222' }));
  p.end();
  assert.equal(p.message(), 'pulling image x:1: 0 of 1 layer');
  assert.equal(p.error, undefined);
});

test('a failed pull reads as "no registry is reachable" only when none answered', () => {
  const refused = 'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused';
  assert.equal(
    pullFailureMessage('127.0.0.1:1/nosuch:9', refused),
    `image 127.0.0.1:1/nosuch:9 not found locally and no registry is reachable (pull failed: ${refused})`,
  );
  assert.match(
    pullFailureMessage(
      'reg.example:5000/x:1',
      'Get "https://reg.example:5000/v2/": dial tcp: lookup reg.example: no such host',
    ),
    /no registry is reachable/,
  );
  assert.equal(
    pullFailureMessage('127.0.0.1:5000/x:9', 'manifest for 127.0.0.1:5000/x:9 not found: manifest unknown'),
    'image 127.0.0.1:5000/x:9 not found locally and the pull failed: manifest for 127.0.0.1:5000/x:9 not found: manifest unknown',
  );
});
