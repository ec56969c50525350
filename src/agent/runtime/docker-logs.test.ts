// Docker's multiplexed log stream: frames across chunks, lines across frames, both streams,
// timestamps, a last line without its newline; and the `since` form Docker parses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DockerLogDemuxer, dockerSince, MAX_LOG_LINE_BYTES, parseDockerTime } from './docker-logs';

function frame(type: number, text: string): Buffer {
  const payload = Buffer.from(text, 'utf8');
  const header = Buffer.alloc(8);
  header[0] = type;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

const T1 = '2026-11-22T14:49:05.123456789Z';
const T2 = '2026-11-22T14:49:06.5Z';

test('whole frames give lines with their stream and time', () => {
  const d = new DockerLogDemuxer(() => 0);
  const lines = d.push(Buffer.concat([frame(1, `${T1} hello\n`), frame(2, `${T2} oops\n`)]));
  assert.deepEqual(lines, [
    { stream: 'stdout', timeMs: Date.parse('2026-11-22T14:49:05.123Z'), text: 'hello' },
    { stream: 'stderr', timeMs: Date.parse('2026-11-22T14:49:06.500Z'), text: 'oops' },
  ]);
  assert.deepEqual(d.end(), []);
});

test('a frame split across chunks, byte by byte, gives the same lines', () => {
  const bytes = Buffer.concat([frame(1, `${T1} one\n${T1} two\n`), frame(1, `${T2} three\n`)]);
  const d = new DockerLogDemuxer(() => 0);
  const lines = [];
  for (let i = 0; i < bytes.length; i++) lines.push(...d.push(bytes.subarray(i, i + 1)));
  assert.deepEqual(
    lines.map((l) => l.text),
    ['one', 'two', 'three'],
  );
});

test('a line split across frames is joined; a last line without newline comes at the end', () => {
  const d = new DockerLogDemuxer(() => 7);
  assert.deepEqual(d.push(frame(1, `${T1} hel`)), []);
  assert.deepEqual(
    d.push(frame(1, 'lo\r\n')).map((l) => l.text),
    ['hello'],
  );
  assert.deepEqual(d.push(frame(2, `${T2} tail without newline`)), []);
  assert.deepEqual(d.end(), [{ stream: 'stderr', timeMs: Date.parse(T2), text: 'tail without newline' }]);
});

test('interleaved stdout and stderr partial lines stay apart', () => {
  const d = new DockerLogDemuxer(() => 0);
  d.push(frame(1, `${T1} out-`));
  d.push(frame(2, `${T1} err-`));
  const lines = d.push(Buffer.concat([frame(2, 'x\n'), frame(1, 'y\n')]));
  assert.deepEqual(
    lines.map((l) => `${l.stream}:${l.text}`),
    ['stderr:err-x', 'stdout:out-y'],
  );
});

test('a line without a timestamp keeps its text and gets the time it was read', () => {
  const d = new DockerLogDemuxer(() => 42);
  assert.deepEqual(d.push(frame(1, 'no time here\n')), [
    { stream: 'stdout', timeMs: 42, text: 'no time here' },
  ]);
});

test('an endless line is cut at the limit instead of growing without bound', () => {
  const d = new DockerLogDemuxer(() => 0);
  const lines = d.push(frame(1, 'x'.repeat(MAX_LOG_LINE_BYTES + 10)));
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.text.length, MAX_LOG_LINE_BYTES + 10);
});

test("since is Docker's seconds.nanoseconds; times parse with nanosecond digits", () => {
  assert.equal(dockerSince(1_700_000_000_123), '1700000000.123000000');
  assert.equal(dockerSince(1_700_000_000_000), '1700000000.000000000');
  assert.equal(parseDockerTime(T1), Date.parse('2026-11-22T14:49:05.123Z'));
  assert.ok(Number.isNaN(parseDockerTime('hello')));
});
