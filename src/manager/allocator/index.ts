// The allocator: service endpoints (published ingress ports) and task readiness NEW → PENDING.
import type { LeaderLoop } from '../../node/leader_loops';
import type { MemoryStore } from '../../store';
import { reconcilerLoop, type ReconcilerOptions } from '../orchestrator/reconciler';
import { planAllocation, type AllocatorOptions } from './allocator';

export {
  INGRESS_PORT_RANGE_END,
  INGRESS_PORT_RANGE_START,
  allocateEndpoint,
  planAllocation,
  type AllocatorOptions,
  type TaskAllocator,
} from './allocator';

export function allocatorLoop(
  store: MemoryStore,
  options: ReconcilerOptions & AllocatorOptions = {},
): LeaderLoop {
  return reconcilerLoop(
    'allocator',
    store,
    ['services', 'tasks'],
    (state, plan) => planAllocation(state, plan, options),
    options,
  );
}
