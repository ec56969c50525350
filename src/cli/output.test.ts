import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatJsonLines, formatQuiet, formatRows, formatTable, type Column } from './output';

interface ServiceRow {
  id: string;
  name: string;
  replicas: string;
}

const columns: Column<ServiceRow>[] = [
  { header: 'ID', field: 'ID', value: (r) => r.id },
  { header: 'NAME', field: 'Name', value: (r) => r.name },
  { header: 'REPLICAS', field: 'Replicas', value: (r) => r.replicas },
];
const rows: ServiceRow[] = [
  { id: 'abc123', name: 'web', replicas: '3/3' },
  { id: 'def4567890', name: 'db', replicas: '1/1' },
];

test('table columns are aligned with a three-space gap, as Docker prints', () => {
  assert.equal(
    formatTable(columns, rows),
    'ID           NAME   REPLICAS\n' + 'abc123       web    3/3\n' + 'def4567890   db     1/1\n',
  );
});

test('an empty table still prints its header', () => {
  assert.equal(formatTable(columns, []), 'ID   NAME   REPLICAS\n');
});

test('json output is one object per line with Docker field names', () => {
  const lines = formatJsonLines(columns, rows).trimEnd().split('\n');
  assert.equal(lines.length, 2);
  assert.deepEqual(JSON.parse(lines[0] ?? ''), { ID: 'abc123', Name: 'web', Replicas: '3/3' });
  assert.equal(formatRows('json', columns, rows), formatJsonLines(columns, rows));
});

test('quiet output lists ids only', () => {
  assert.equal(formatQuiet(columns, rows), 'abc123\ndef4567890\n');
});
