// The tiny key-value state machine the simulated nodes apply committed entries to. A command
// carries a request id and is applied at most once: a duplicated proposal (the network may
// duplicate a forwarded MsgProp) lands in the log twice but takes effect once, as a client
// session table would make it.

export interface KvCommand {
  id: string;
  op: 'put' | 'append';
  key: string;
  value: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeCommand(cmd: KvCommand): Uint8Array {
  return encoder.encode(JSON.stringify(cmd));
}

/** Undefined for an entry that is not a command (the empty entry a new leader appends). */
export function decodeCommand(data: Uint8Array): KvCommand | undefined {
  if (data.length === 0) return undefined;
  const parsed = JSON.parse(decoder.decode(data)) as KvCommand;
  return parsed;
}

export class KvStateMachine {
  private readonly values = new Map<string, string>();
  private readonly seen = new Set<string>();

  get(key: string): string | null {
    return this.values.get(key) ?? null;
  }

  hasApplied(id: string): boolean {
    return this.seen.has(id);
  }

  /** Applies the command unless its id was applied before; returns whether it took effect. */
  apply(cmd: KvCommand): boolean {
    if (this.seen.has(cmd.id)) return false;
    this.seen.add(cmd.id);
    if (cmd.op === 'put') this.values.set(cmd.key, cmd.value);
    else this.values.set(cmd.key, (this.values.get(cmd.key) ?? '') + cmd.value);
    return true;
  }

  /** A canonical encoding: equal states give equal bytes (the simulator compares snapshots). */
  serialize(): Uint8Array {
    const values = [...this.values.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const seen = [...this.seen].sort();
    return encoder.encode(JSON.stringify({ values, seen }));
  }

  static restore(data: Uint8Array): KvStateMachine {
    const sm = new KvStateMachine();
    if (data.length === 0) return sm;
    const parsed = JSON.parse(decoder.decode(data)) as { values: [string, string][]; seen: string[] };
    for (const [k, v] of parsed.values) sm.values.set(k, v);
    for (const id of parsed.seen) sm.seen.add(id);
    return sm;
  }
}
