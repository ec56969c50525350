// The leader's side of `node demote`: a manager whose desired role is worker is taken out of the
// Raft group (a membership change) and then recorded as a worker; its daemon learns it through
// NodeCertificates.Renew, gets a worker certificate and stops its manager parts. A removal that
// would cost the group its quorum waits (the control API already refuses the foreseeable
// cases). The leader does not remove itself: it hands leadership to a reachable member first.
// Promotion needs nothing here: the promoted node asks for its certificate and joins Raft.
import { NodeRole, type Node as ClusterNode } from '../gen/cluster/v1/objects';
import type { Logger } from '../common/logger';
import { abortableSleep } from '../common/sleep';
import type { MemoryStore } from '../store';
import type { LeaderLoop } from './leader_loops';

export const ROLE_LOOP_PERIOD_MS = 250;

export interface RoleRaft {
  selfRaftId: number;
  voters(): number[];
  peerConnected(raftId: number): boolean;
  removeMember(raftId: number): Promise<unknown>;
  transferLeadership(to: number): void;
}

export type DemotionStep =
  | { kind: 'transfer'; to: number }
  | { kind: 'remove'; raftId: number }
  | { kind: 'record' }
  | { kind: 'wait'; why: string };

/** What to do next about demoting `node` (desired role worker, role manager). Pure. */
export function demotionStep(
  node: ClusterNode,
  raft: Pick<RoleRaft, 'selfRaftId' | 'voters' | 'peerConnected'>,
): DemotionStep {
  const raftId = node.managerStatus?.raftId ?? 0;
  const voters = raft.voters();
  if (raftId === 0 || !voters.includes(raftId)) return { kind: 'record' };
  const others = voters.filter((v) => v !== raftId);
  if (others.length === 0) return { kind: 'wait', why: 'it is the last manager' };
  const reachable = others.filter((v) => raft.peerConnected(v));
  const needed = Math.floor(others.length / 2) + 1;
  if (reachable.length < needed)
    return {
      kind: 'wait',
      why: `${reachable.length} of the ${others.length} other managers are reachable, ${needed} needed`,
    };
  if (raftId === raft.selfRaftId) {
    const to = reachable[0];
    return to === undefined
      ? { kind: 'wait', why: 'no member to hand leadership to' }
      : { kind: 'transfer', to };
  }
  return { kind: 'remove', raftId };
}

export function roleLoop(store: MemoryStore, raft: RoleRaft, logger: Logger): LeaderLoop {
  const waiting = new Map<string, string>();
  return {
    name: 'roles',
    async run(signal) {
      while (!signal.aborted) {
        const demoting = store.view((tx) =>
          tx.nodes.list(
            (n) => n.spec?.desiredRole === NodeRole.NODE_ROLE_WORKER && n.role === NodeRole.NODE_ROLE_MANAGER,
          ),
        );
        for (const node of demoting) {
          if (signal.aborted) break;
          const step = demotionStep(node, raft);
          try {
            if (step.kind === 'wait') {
              if (waiting.get(node.id) !== step.why)
                logger.warn({ nodeId: node.id, why: step.why }, 'demotion waits');
              waiting.set(node.id, step.why);
            } else if (step.kind === 'transfer') {
              logger.info({ to: step.to }, 'this leader is being demoted: handing leadership over');
              raft.transferLeadership(step.to);
            } else {
              if (step.kind === 'remove') {
                await raft.removeMember(step.raftId);
                logger.info(
                  { nodeId: node.id, raftId: step.raftId },
                  'demoted manager removed from the raft group',
                );
              }
              await store.update((tx) => {
                const current = tx.nodes.get(node.id);
                if (!current || current.spec?.desiredRole !== NodeRole.NODE_ROLE_WORKER) return;
                current.role = NodeRole.NODE_ROLE_WORKER;
                current.managerStatus = undefined;
                tx.nodes.update(current);
              });
              waiting.delete(node.id);
              logger.info({ nodeId: node.id }, 'node recorded as a worker');
            }
          } catch (err) {
            // Lost leadership, a conflicting write, a membership change in flight: next round.
            if (!signal.aborted) logger.warn({ nodeId: node.id, err }, 'demotion step failed; will retry');
          }
        }
        await abortableSleep(ROLE_LOOP_PERIOD_MS, signal);
      }
    },
  };
}
