// Docker-style output: aligned columns under upper-case headers, or one JSON object per line
// with Docker's field names (`--format json`), so scripts written for Docker port over.

export type OutputFormat = 'table' | 'json';

export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'json'];

export interface Column<Row> {
  /** Header shown in table output, e.g. "REPLICAS". */
  header: string;
  /** Field name in JSON output, Docker's, e.g. "Replicas". */
  field: string;
  value: (row: Row) => string;
}

// Docker's tabwriter pads each column to its widest cell plus three spaces.
const COLUMN_GAP = 3;

export function formatTable<Row>(columns: Column<Row>[], rows: Row[]): string {
  const cells = rows.map((row) => columns.map((c) => c.value(row)));
  const widths = columns.map((c, i) =>
    Math.max(c.header.length, ...cells.map((line) => line[i]?.length ?? 0)),
  );
  const render = (values: string[]) =>
    values
      .map((v, i) => (i === values.length - 1 ? v : v.padEnd((widths[i] ?? 0) + COLUMN_GAP)))
      .join('')
      .trimEnd();
  return [render(columns.map((c) => c.header)), ...cells.map(render)].join('\n') + '\n';
}

export function formatJsonLines<Row>(columns: Column<Row>[], rows: Row[]): string {
  return rows
    .map((row) => JSON.stringify(Object.fromEntries(columns.map((c) => [c.field, c.value(row)]))) + '\n')
    .join('');
}

export function formatRows<Row>(format: OutputFormat, columns: Column<Row>[], rows: Row[]): string {
  return format === 'json' ? formatJsonLines(columns, rows) : formatTable(columns, rows);
}

/** `-q`: the first column (the id) only, one per line. */
export function formatQuiet<Row>(columns: Column<Row>[], rows: Row[]): string {
  const first = columns[0];
  if (!first) return '';
  return rows.map((r) => first.value(r) + '\n').join('');
}
