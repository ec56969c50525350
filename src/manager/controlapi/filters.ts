// List filters with Docker's semantics. The wire form is a map of one string per key; a key
// given several values (Docker's `--filter name=a --filter name=b`) carries them joined by ','.
// Values of one key are alternatives (any may match), except `label`, whose values must all
// match (as Docker's). Different keys must all match.
import { invalidArgument } from '../../common/errors';

export type ParsedFilters = ReadonlyMap<string, readonly string[]>;

/** Splits each value on ','; a key not in `allowed` is refused as Docker refuses it. */
export function parseFilters(
  filters: Readonly<Record<string, string>>,
  allowed: readonly string[],
): ParsedFilters {
  const parsed = new Map<string, string[]>();
  for (const [key, value] of Object.entries(filters)) {
    if (!allowed.includes(key)) {
      throw invalidArgument(`invalid filter '${key}': use ${allowed.join(', ')}`, {
        field: 'filters',
        filter: key,
      });
    }
    const values = value
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v !== '');
    if (values.length === 0)
      throw invalidArgument(`filter '${key}' needs a value`, { field: 'filters', filter: key });
    parsed.set(key, values);
  }
  return parsed;
}

/** Every `label` value ("k" or "k=v") holds for the labels. */
export function labelsMatch(
  wanted: readonly string[],
  labels: Readonly<Record<string, string>> | undefined,
): boolean {
  return wanted.every((entry) => {
    const at = entry.indexOf('=');
    const key = at < 0 ? entry : entry.slice(0, at);
    if (labels === undefined || !Object.prototype.hasOwnProperty.call(labels, key)) return false;
    return at < 0 || labels[key] === entry.slice(at + 1);
  });
}

export function anyPrefix(wanted: readonly string[], value: string): boolean {
  return wanted.some((prefix) => value.startsWith(prefix));
}

/** Enumerated values ("replicated", "global") compared case-insensitively; unknown ones refused. */
export function enumValues<T>(
  key: string,
  wanted: readonly string[],
  names: Readonly<Record<string, T>>,
): T[] {
  return wanted.map((value) => {
    const found = names[value.toLowerCase()];
    if (found === undefined) {
      throw invalidArgument(
        `invalid value '${value}' for filter '${key}': use ${Object.keys(names).join(', ')}`,
        {
          field: 'filters',
          filter: key,
        },
      );
    }
    return found;
  });
}
