// What one reconciliation pass decided: tasks to create, update and delete, services to update,
// and when the pass must run again even if nothing changes (a restart delay or a grace period
// ends). Planners are pure and fill a Plan; the loop shell writes it.
import type { Node, Service, Task } from '../../gen/cluster/v1/objects';

/** The part of the store the control loops decide from: plain copies, free to change. */
export interface ClusterState {
  readonly services: readonly Service[];
  readonly tasks: readonly Task[];
  readonly nodes: readonly Node[];
}

export class Plan {
  readonly createdTasks: Task[] = [];
  /** Updates by task id: a later change of the same task in one pass replaces the earlier one. */
  readonly updatedTasks = new Map<string, Task>();
  /** Deleted tasks as read (their version is checked when the delete is written). */
  readonly deletedTasks = new Map<string, Task>();
  readonly updatedServices = new Map<string, Service>();
  /** Earliest wall-clock time (ms) at which a pass must run again; undefined: only on changes. */
  wakeAtMs: number | undefined;

  createTask(task: Task): void {
    this.createdTasks.push(task);
  }

  updateTask(task: Task): void {
    this.updatedTasks.set(task.id, task);
  }

  deleteTask(task: Task): void {
    this.updatedTasks.delete(task.id);
    this.deletedTasks.set(task.id, task);
  }

  updateService(service: Service): void {
    this.updatedServices.set(service.id, service);
  }

  wakeAt(ms: number): void {
    if (this.wakeAtMs === undefined || ms < this.wakeAtMs) this.wakeAtMs = ms;
  }

  get empty(): boolean {
    return (
      this.createdTasks.length === 0 &&
      this.updatedTasks.size === 0 &&
      this.deletedTasks.size === 0 &&
      this.updatedServices.size === 0
    );
  }
}
