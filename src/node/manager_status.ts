// Keeps the managers' status in the store true while this manager leads: which one is the
// leader, and which the leader can reach. `node ls` shows it (MANAGER STATUS), and the control
// API's quorum checks read it.
import { NodeRole, type Node as ClusterNode } from '../gen/cluster/v1/objects';
import type { Logger } from '../common/logger';
import type { MemoryStore } from '../store';
import type { LeaderLoop } from './leader_loops';
import { abortableSleep } from '../common/sleep';

/** How often the leader compares what the store says with what Raft sees. */
export const MANAGER_STATUS_PERIOD_MS = 500;

export interface RaftView {
  selfRaftId: number;
  isLeader(): boolean;
  peerConnected(raftId: number): boolean;
}

/** The manager records whose status differs from what Raft sees now, updated. */
export function staleManagerStatus(nodes: readonly ClusterNode[], raft: RaftView): ClusterNode[] {
  const changed: ClusterNode[] = [];
  for (const node of nodes) {
    const status = node.managerStatus;
    if (node.role !== NodeRole.NODE_ROLE_MANAGER || !status || status.raftId === 0) continue;
    const leader = status.raftId === raft.selfRaftId && raft.isLeader();
    const reachability = raft.peerConnected(status.raftId) ? 'reachable' : 'unreachable';
    if (status.leader !== leader || status.reachability !== reachability) {
      changed.push({ ...node, managerStatus: { ...status, leader, reachability } });
    }
  }
  return changed;
}

export function managerStatusLoop(store: MemoryStore, raft: RaftView, logger: Logger): LeaderLoop {
  return {
    name: 'manager-status',
    async run(signal) {
      while (!signal.aborted) {
        const nodes = store.view((tx) => tx.nodes.list((n) => n.role === NodeRole.NODE_ROLE_MANAGER));
        const changed = staleManagerStatus(nodes, raft);
        if (changed.length > 0) {
          try {
            await store.update((tx) => {
              for (const node of changed) tx.nodes.update(node);
            });
          } catch (err) {
            // A concurrent write (a CONFLICT) or lost leadership: the next round sees fresh state.
            if (!signal.aborted) logger.debug({ err }, 'manager status not updated this round');
          }
        }
        await abortableSleep(MANAGER_STATUS_PERIOD_MS, signal);
      }
    },
  };
}
