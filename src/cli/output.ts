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
  /** The JSON value when it is not the text, e.g. Docker's boolean `Self`. */
  json?: (row: Row) => unknown;
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
    .map(
      (row) =>
        JSON.stringify(
          Object.fromEntries(columns.map((c) => [c.field, c.json ? c.json(row) : c.value(row)])),
        ) + '\n',
    )
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

/** Docker's units.HumanDuration: "Less than a second", "About a minute", "2 hours", "3 weeks". */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.floor(seconds / 60);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(ms / 3_600_000);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  return `${Math.floor(ms / 3_600_000 / 24 / 365)} years`;
}

/** `inspect`: a JSON array indented by four spaces, as docker inspect prints. */
export function formatInspect(objects: unknown[]): string {
  return JSON.stringify(objects, null, 4) + '\n';
}

/** `inspect --pretty`: "Label:   value" lines, aligned, with nested sections indented. */
export function formatPretty(sections: Array<[string, string | Array<[string, string]>]>): string {
  const lines: string[] = [];
  const keyWidth = Math.max(...sections.map(([k]) => k.length)) + 2;
  for (const [key, value] of sections) {
    if (typeof value === 'string') {
      lines.push(`${(key + ':').padEnd(keyWidth)} ${value}`.trimEnd());
    } else {
      lines.push(`${key}:`);
      const inner = Math.max(0, ...value.map(([k]) => k.length)) + 2;
      for (const [k, v] of value) lines.push(` ${(k + ':').padEnd(inner)} ${v}`.trimEnd());
    }
  }
  return lines.join('\n') + '\n';
}
