// A linearizability checker in the style of Wing & Gong with Lowe's memoization, as in
// Porcupine: the history is split per key (linearizability is compositional, so each key is
// checked alone), then a depth-first search tries to order the operations consistently with
// real time and with a sequential model, remembering (linearized set, state) pairs already
// explored so the search does not repeat itself.

/** A sequential specification: step returns the next state, or undefined when `output` is impossible. */
export interface Model<State, Input, Output> {
  init(): State;
  /** `output` undefined means unknown (the client never heard back): any outcome is allowed. */
  step(state: State, input: Input, output: Output | undefined): State | undefined;
  /** A string equal for equal states (memoization key). */
  stateKey(state: State): string;
}

export interface Operation<Input, Output> {
  clientId: number;
  input: Input;
  /** Invocation time. */
  call: number;
  /**
   * Response time, or undefined when the outcome is unknown (a timeout, a crashed server): the
   * operation may have taken effect at any time after `call`, or never.
   */
  return?: number;
  output?: Output;
}

export type CheckResult =
  | { ok: true }
  | { ok: false; reason: 'illegal'; partition: string; operations: number; longestPrefix: number }
  | { ok: false; reason: 'timeout'; partition: string; operations: number };

// ---- The key-value model -------------------------------------------------------------------

export type KvInput =
  | { op: 'put'; key: string; value: string }
  | { op: 'get'; key: string }
  /** Sets value when the current value equals expected (null: the key is absent). */
  | { op: 'cas'; key: string; expected: string | null; value: string }
  | { op: 'append'; key: string; value: string };

/** get: the value read (null when absent); cas: whether it swapped; put/append: nothing. */
export type KvOutput = { value?: string | null; ok?: boolean };

export type KvOperation = Operation<KvInput, KvOutput>;

/** The sequential model of one key: its value, or null when absent. */
export const kvKeyModel: Model<string | null, KvInput, KvOutput> = {
  init: () => null,
  step(state, input, output) {
    switch (input.op) {
      case 'put':
        return input.value;
      case 'append':
        return (state ?? '') + input.value;
      case 'get':
        if (output === undefined) return state;
        return output.value === state ? state : undefined;
      case 'cas': {
        const swaps = state === input.expected;
        if (output !== undefined && output.ok !== swaps) return undefined;
        return swaps ? input.value : state;
      }
    }
  },
  // A prefix keeps null distinct from the string "null".
  stateKey: (state) => (state === null ? '-' : `+${state}`),
};

/** Checks a key-value history: each key is an independent register. */
export function checkKvHistory(history: readonly KvOperation[], options: CheckOptions = {}): CheckResult {
  const byKey = new Map<string, KvOperation[]>();
  for (const op of history) {
    // A read with no answer constrains nothing: leave it out rather than make the search wider.
    if (op.input.op === 'get' && (op.return === undefined || op.output === undefined)) continue;
    const list = byKey.get(op.input.key);
    if (list === undefined) byKey.set(op.input.key, [op]);
    else list.push(op);
  }
  // Sorted so the result (which partition is reported) does not depend on insertion order.
  for (const key of [...byKey.keys()].sort()) {
    const ops = byKey.get(key) ?? [];
    const result = checkOperations(kvKeyModel, ops, { ...options, partition: key });
    if (!result.ok) return result;
  }
  return { ok: true };
}

// ---- The search ----------------------------------------------------------------------------

export interface CheckOptions {
  /** Upper bound on search steps per partition; past it the result is 'timeout', not a verdict. */
  maxSteps?: number;
  /** Name used in the result (the key). */
  partition?: string;
}

const DEFAULT_MAX_STEPS = 5_000_000;

/** A node of the doubly linked list of call and return events the search lifts and unlifts. */
interface EventNode<I, O> {
  isCall: boolean;
  opId: number;
  input: I;
  output: O | undefined;
  /** For a call: its return event. */
  match: EventNode<I, O> | undefined;
  prev: EventNode<I, O> | undefined;
  next: EventNode<I, O> | undefined;
}

/** Checks one partition of a history against `model`. */
export function checkOperations<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly Operation<I, O>[],
  options: CheckOptions = {},
): CheckResult {
  const partition = options.partition ?? '';
  const maxSteps = options.maxSteps ?? DEFAULT_MAX_STEPS;
  if (ops.length === 0) return { ok: true };

  const head = buildEventList(ops);
  const cache = new Set<string>();
  const calls: { node: EventNode<I, O>; state: S }[] = [];
  let linearized = 0n;
  let state = model.init();
  let longestPrefix = 0;
  let node = head.next;
  let steps = 0;

  while (head.next !== undefined) {
    if (++steps > maxSteps) return { ok: false, reason: 'timeout', partition, operations: ops.length };
    if (node === undefined) throw new Error('linearizability: ran off the event list');
    if (node.isCall) {
      const ret = node.match;
      if (ret === undefined) throw new Error('linearizability: call without return');
      const next = model.step(state, node.input, ret.output);
      if (next !== undefined) {
        const nextLinearized = linearized | (1n << BigInt(node.opId));
        const key = `${nextLinearized.toString(36)}|${model.stateKey(next)}`;
        if (!cache.has(key)) {
          cache.add(key);
          calls.push({ node, state });
          state = next;
          linearized = nextLinearized;
          if (calls.length > longestPrefix) longestPrefix = calls.length;
          lift(node);
          node = head.next;
          continue;
        }
      }
      node = node.next;
    } else {
      // A return reached before its call was linearized: some operation that had to come
      // earlier cannot, so undo the last choice and try the next candidate after it.
      const top = calls.pop();
      if (top === undefined) {
        return { ok: false, reason: 'illegal', partition, operations: ops.length, longestPrefix };
      }
      state = top.state;
      linearized &= ~(1n << BigInt(top.node.opId));
      unlift(top.node);
      node = top.node.next;
    }
  }
  return { ok: true };
}

function buildEventList<I, O>(ops: readonly Operation<I, O>[]): EventNode<I, O> {
  interface TimedEvent {
    time: number;
    isCall: boolean;
    node: EventNode<I, O>;
  }
  const events: TimedEvent[] = [];
  ops.forEach((op, opId) => {
    const ret: EventNode<I, O> = {
      isCall: false,
      opId,
      input: op.input,
      output: op.return === undefined ? undefined : op.output,
      match: undefined,
      prev: undefined,
      next: undefined,
    };
    const call: EventNode<I, O> = { ...ret, isCall: true, match: ret };
    events.push({ time: op.call, isCall: true, node: call });
    // An unknown outcome may take effect at any later time: its return is at infinity.
    events.push({ time: op.return ?? Number.POSITIVE_INFINITY, isCall: false, node: ret });
  });
  // At equal times calls come first, so touching operations count as concurrent (the lenient
  // reading; the simulator uses strictly increasing times anyway). The op id breaks ties so
  // the order never depends on the sort's stability.
  events.sort((x, y) => x.time - y.time || Number(y.isCall) - Number(x.isCall) || x.node.opId - y.node.opId);
  const head: EventNode<I, O> = {
    isCall: false,
    opId: -1,
    input: ops[0].input,
    output: undefined,
    match: undefined,
    prev: undefined,
    next: undefined,
  };
  let last = head;
  for (const e of events) {
    last.next = e.node;
    e.node.prev = last;
    last = e.node;
  }
  return head;
}

/** Removes a call and its return from the list (the operation is now linearized). */
function lift<I, O>(call: EventNode<I, O>): void {
  unlink(call);
  if (call.match !== undefined) unlink(call.match);
}

/** Puts a call and its return back where they were, in reverse order of lift. */
function unlift<I, O>(call: EventNode<I, O>): void {
  if (call.match !== undefined) relink(call.match);
  relink(call);
}

function unlink<I, O>(node: EventNode<I, O>): void {
  if (node.prev !== undefined) node.prev.next = node.next;
  if (node.next !== undefined) node.next.prev = node.prev;
}

function relink<I, O>(node: EventNode<I, O>): void {
  if (node.prev !== undefined) node.prev.next = node;
  if (node.next !== undefined) node.next.prev = node;
}
