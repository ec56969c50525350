// The leader-only control loops: replicated and global orchestrators, the task supervisor
// (restarts, drain, node loss, history), the allocator and the scheduler loop, each a pure
// planner over the store with a thin loop shell (reconciler.ts).
import type { LeaderLoop } from '../../node/leader_loops';
import type { MemoryStore } from '../../store';
import { allocatorLoop, type AllocatorOptions } from '../allocator';
import { schedulerLoop } from '../scheduler/loop';
import { planOrchestration } from './orchestrator';
import { reconcilerLoop, type ReconcilerOptions } from './reconciler';
import { planSupervision } from './supervisor';
import { NODE_DOWN_GRACE_MS, TASK_HISTORY_RETENTION_LIMIT } from './tasks';

export { Plan, type ClusterState } from './plan';
export {
  markOrphaned,
  planGlobalService,
  planOrchestration,
  planRemovedServiceTasks,
  planReplicatedService,
  type OrchestratorOptions,
} from './orchestrator';
export {
  DEFAULT_RESTART_DELAY_MS,
  RESTART_HISTORY_LABEL,
  planHistoryRetention,
  planSupervision,
  restartDecision,
  taskFailed,
  type RestartDecision,
  type SupervisorOptions,
} from './supervisor';
export {
  DEFAULT_BATCH_WINDOW_MS,
  MAX_IDLE_MS,
  PLAN_BATCH_BYTES,
  readClusterState,
  reconcilerLoop,
  writePlan,
  type Planner,
  type ReconcilerOptions,
} from './reconciler';
export {
  NODE_DOWN_GRACE_MS,
  TASK_HISTORY_RETENTION_LIMIT,
  isUpToDate,
  newTask,
  nodeCondition,
} from './tasks';
export { planScheduling, schedulerLoop } from '../scheduler/loop';
export { allocatorLoop, planAllocation, type TaskAllocator } from '../allocator';

export interface ControlLoopOptions extends ReconcilerOptions, AllocatorOptions {
  /** How long a DOWN node keeps its tasks before they are replaced (default NODE_DOWN_GRACE_MS). */
  nodeDownGraceMs?: number;
  historyRetentionLimit?: number;
}

/** Every leader-only loop of the control plane except the dispatcher, for the node wiring. */
export function controlLoops(store: MemoryStore, options: ControlLoopOptions = {}): LeaderLoop[] {
  const nodeDownGraceMs = options.nodeDownGraceMs ?? NODE_DOWN_GRACE_MS;
  const historyRetentionLimit = options.historyRetentionLimit ?? TASK_HISTORY_RETENTION_LIMIT;
  return [
    reconcilerLoop(
      'orchestrator',
      store,
      ['services', 'tasks', 'nodes'],
      (state, plan, nowMs) => planOrchestration(state, plan, nowMs, { nodeDownGraceMs }),
      options,
    ),
    reconcilerLoop(
      'task-supervisor',
      store,
      ['services', 'tasks', 'nodes'],
      (state, plan, nowMs) => planSupervision(state, plan, nowMs, { nodeDownGraceMs, historyRetentionLimit }),
      options,
    ),
    allocatorLoop(store, options),
    schedulerLoop(store, options),
  ];
}
