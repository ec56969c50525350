// The `service logs` line format (Docker's prefix) and its flags.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LogEntry } from '../gen/cluster/v1/control';
import { formatLogLine, parseSince, parseTail, type LogFormat } from './logs';

const entry = (slot: number, text: string) =>
  LogEntry.fromPartial({
    context: {
      serviceId: 'svc1',
      serviceName: 'web',
      taskId: 'abc123def456ghi789jkl0123',
      slot,
      nodeId: 'node2node2node2node2node2',
      nodeName: 'node-2',
    },
    stream: 'stdout',
    timeMs: Date.parse('2026-11-22T14:00:00.250Z'),
    text,
  });

const plain: LogFormat = { timestamps: false, noTrunc: false, taskIds: true, slotWidth: 1 };

test("lines carry Docker's prefix: service.slot.task@node, then '    | '", () => {
  assert.equal(formatLogLine(entry(1, 'hello'), plain), 'web.1.abc123def456@node-2    | hello\n');
  assert.equal(
    formatLogLine(entry(1, 'hello'), { ...plain, noTrunc: true }),
    'web.1.abc123def456ghi789jkl0123@node-2    | hello\n',
  );
  assert.equal(formatLogLine(entry(1, 'x'), { ...plain, taskIds: false }), 'web.1@node-2    | x\n');
});

test('slots of fewer digits are padded so the bars line up', () => {
  const f = { ...plain, slotWidth: 2 };
  const a = formatLogLine(entry(3, 'a'), f);
  const b = formatLogLine(entry(12, 'b'), f);
  assert.equal(a.indexOf('|'), b.indexOf('|'));
});

test('timestamps come first, in RFC 3339', () => {
  assert.equal(
    formatLogLine(entry(1, 'hi'), { ...plain, timestamps: true }),
    '2026-11-22T14:00:00.250Z web.1.abc123def456@node-2    | hi\n',
  );
});

test('a global task is named by its node', () => {
  assert.equal(
    formatLogLine(entry(0, 'g'), plain),
    'web.node2node2node2node2node2.abc123def456@node-2    | g\n',
  );
});

test('--tail is all or a whole number; --since is Unix, RFC 3339 or a duration back', () => {
  assert.equal(parseTail(undefined), -1);
  assert.equal(parseTail('all'), -1);
  assert.equal(parseTail('5'), 5);
  assert.throws(() => parseTail('-1'), /--tail/);
  assert.throws(() => parseTail('five'), /--tail/);
  const now = Date.parse('2026-11-22T15:00:00Z');
  assert.equal(parseSince(undefined, now), 0);
  assert.equal(parseSince('1700000000', now), 1_700_000_000_000);
  assert.equal(parseSince('1700000000.5', now), 1_700_000_000_500);
  assert.equal(parseSince('2026-11-22T14:00:00Z', now), Date.parse('2026-11-22T14:00:00Z'));
  assert.equal(parseSince('10m', now), now - 600_000);
  assert.throws(() => parseSince('yesterday', now), /--since/);
});
