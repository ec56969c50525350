// A tiny replicated key-value store on RaftNode, used by the multi-process linearizability
// test and the Raft benchmark (never by the product). Commands are JSON in entry data.

import type { Entry } from '../types';
import type { StateMachine } from './index';

/** put sets the value; append adds to its end (an absent key counts as ""). */
export interface KvCommand {
  op: 'put' | 'append';
  key: string;
  value: string;
}

export function encodeKvCommand(command: KvCommand): Uint8Array {
  return Buffer.from(JSON.stringify(command));
}

function decodeKvCommand(data: Uint8Array): KvCommand {
  const parsed: unknown = JSON.parse(
    Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'),
  );
  if (
    typeof parsed === 'object' &&
    parsed !== null &&
    'op' in parsed &&
    (parsed.op === 'put' || parsed.op === 'append') &&
    'key' in parsed &&
    typeof parsed.key === 'string' &&
    'value' in parsed &&
    typeof parsed.value === 'string'
  ) {
    return { op: parsed.op, key: parsed.key, value: parsed.value };
  }
  throw new Error('not a KV command');
}

export interface KvResult {
  index: number;
}

export class KvStateMachine implements StateMachine<KvResult> {
  private readonly data = new Map<string, string>();

  get(key: string): string | null {
    return this.data.get(key) ?? null;
  }

  size(): number {
    return this.data.size;
  }

  apply(entry: Entry): KvResult {
    const command = decodeKvCommand(entry.data);
    const value =
      command.op === 'append' ? (this.data.get(command.key) ?? '') + command.value : command.value;
    this.data.set(command.key, value);
    return { index: entry.index };
  }

  snapshot(): Uint8Array {
    return Buffer.from(JSON.stringify([...this.data]));
  }

  restore(data: Uint8Array): void {
    this.data.clear();
    if (data.length === 0) return;
    const parsed: unknown = JSON.parse(
      Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'),
    );
    if (!Array.isArray(parsed)) throw new Error('KV snapshot is not a list of pairs');
    for (const pair of parsed) {
      if (!Array.isArray(pair) || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
        throw new Error('KV snapshot holds a malformed pair');
      }
      this.data.set(pair[0], pair[1]);
    }
  }
}
