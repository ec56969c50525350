// Defaults a new service gets where its spec leaves a field out, as Docker Swarm's: so that
// `service inspect` shows what will actually happen and the orchestrators read no implicit values.
import { randomInt } from 'node:crypto';

import {
  RestartPolicy_Condition,
  ServiceSpec,
  UpdateConfig,
  UpdateConfig_FailureAction,
  UpdateConfig_Order,
} from '../../gen/cluster/v1/objects';
import type { Duration } from '../../gen/google/protobuf/duration';

export const DEFAULT_UPDATE_PARALLELISM = 1;
export const DEFAULT_UPDATE_MONITOR: Duration = { seconds: 5, nanos: 0 };
export const DEFAULT_RESTART_DELAY: Duration = { seconds: 5, nanos: 0 };
const ZERO: Duration = { seconds: 0, nanos: 0 };

/** Swarm's update (and rollback) defaults: one task at a time, no delay, pause on failure, 5 s monitor. */
export function defaultUpdateConfig(): UpdateConfig {
  return UpdateConfig.fromPartial({
    parallelism: DEFAULT_UPDATE_PARALLELISM,
    delay: { ...ZERO },
    failureAction: UpdateConfig_FailureAction.FAILURE_ACTION_PAUSE,
    monitor: { ...DEFAULT_UPDATE_MONITOR },
    maxFailureRatio: 0,
    order: UpdateConfig_Order.ORDER_STOP_FIRST,
  });
}

/**
 * A copy of the spec with defaults filled in. A message left out gets every default; a message
 * that is present is taken as written (parallelism 0 then means "all at once", as in Docker),
 * except for durations left out, which get their defaults.
 */
export function withServiceDefaults(spec: ServiceSpec): ServiceSpec {
  const filled = ServiceSpec.fromPartial(spec);
  filled.mode ??= { $case: 'replicated', value: { replicas: 1 } };
  for (const which of ['update', 'rollback'] as const) {
    const config = filled[which];
    if (config === undefined) {
      filled[which] = defaultUpdateConfig();
    } else {
      config.delay ??= { ...ZERO };
      config.monitor ??= { ...DEFAULT_UPDATE_MONITOR };
    }
  }
  const task = filled.task;
  if (task !== undefined) {
    task.restart ??= {
      condition: RestartPolicy_Condition.CONDITION_ANY,
      delay: undefined,
      maxAttempts: 0,
      window: undefined,
    };
    task.restart.delay ??= { ...DEFAULT_RESTART_DELAY };
    task.restart.window ??= { ...ZERO };
  }
  return filled;
}

// Docker names services it was not given a name for as adjective_surname; a short list does.
const ADJECTIVES = [
  'admiring',
  'brave',
  'calm',
  'dazzling',
  'eager',
  'fervent',
  'gallant',
  'happy',
  'jolly',
  'keen',
  'lucid',
  'modest',
  'nifty',
  'optimistic',
  'peaceful',
  'quirky',
  'relaxed',
  'serene',
  'tender',
  'vibrant',
];
const SURNAMES = [
  'babbage',
  'curie',
  'dijkstra',
  'euler',
  'feynman',
  'goldberg',
  'hopper',
  'hypatia',
  'kalam',
  'knuth',
  'lamport',
  'liskov',
  'lovelace',
  'noether',
  'ritchie',
  'shannon',
  'thompson',
  'turing',
  'wing',
  'wozniak',
];

export function randomServiceName(): string {
  return `${ADJECTIVES[randomInt(ADJECTIVES.length)] ?? 'brave'}_${SURNAMES[randomInt(SURNAMES.length)] ?? 'turing'}`;
}
