// Linearizable reads (Raft thesis §6.4): a ReadIndex request records the commit index when it
// arrives and is answered once a quorum acknowledges a heartbeat carrying its context, which
// proves this leader was still the leader when the request arrived.

import type { Message, NodeId } from './types';

export interface ReadIndexStatus {
  request: Message;
  index: number;
  acks: Map<NodeId, boolean>;
}

export function contextKey(ctx: Uint8Array): string {
  return Buffer.from(ctx.buffer, ctx.byteOffset, ctx.byteLength).toString('hex');
}

export class ReadOnly {
  private readonly pending = new Map<string, ReadIndexStatus>();
  /** Request contexts in arrival order: acknowledging one also answers every earlier one. */
  private queue: string[] = [];

  /** Most requests kept waiting at once; older duplicates are ignored, not queued again. */
  get size(): number {
    return this.queue.length;
  }

  addRequest(index: number, request: Message): void {
    const key = contextKey(request.context);
    if (this.pending.has(key)) return;
    this.pending.set(key, { request, index, acks: new Map() });
    this.queue.push(key);
  }

  /** Records `from`'s ack of the heartbeat carrying `ctx`; returns the acks so far. */
  recvAck(from: NodeId, ctx: Uint8Array): Map<NodeId, boolean> | undefined {
    const status = this.pending.get(contextKey(ctx));
    if (!status) return undefined;
    status.acks.set(from, true);
    return status.acks;
  }

  /** Removes and returns every request up to and including the one with context `ctx`. */
  advance(ctx: Uint8Array): ReadIndexStatus[] {
    const key = contextKey(ctx);
    const at = this.queue.indexOf(key);
    if (at < 0) return [];
    const done = this.queue.slice(0, at + 1);
    this.queue = this.queue.slice(at + 1);
    const result: ReadIndexStatus[] = [];
    for (const k of done) {
      const status = this.pending.get(k);
      if (status) result.push(status);
      this.pending.delete(k);
    }
    return result;
  }

  lastPendingContext(): Uint8Array | undefined {
    if (this.queue.length === 0) return undefined;
    return this.pending.get(this.queue[this.queue.length - 1])?.request.context;
  }
}
