// Runs the leader-only control loops (orchestrators, scheduler, allocator, dispatcher's writers)
// while this manager leads, and stops them when leadership is lost: each loop gets an
// AbortSignal that fires then. A loop that fails is logged and restarted after a pause, as
// long as leadership lasts.
import type { Logger } from '../common/logger';
import { abortableSleep } from '../common/sleep';

export interface LeaderLoop {
  name: string;
  run(signal: AbortSignal): Promise<void>;
}

/** Pause before restarting a loop that threw, so a persistent fault does not spin. */
export const LOOP_RESTART_DELAY_MS = 500;

export class LeaderLoops {
  private term?: AbortController;
  private running: Promise<void>[] = [];

  constructor(
    private readonly loops: readonly LeaderLoop[],
    private readonly logger: Logger,
  ) {}

  get active(): boolean {
    return this.term !== undefined;
  }

  /** Called on every leadership observation; starts or stops the loops on a change. */
  async setLeader(isLeader: boolean): Promise<void> {
    if (isLeader && !this.term) this.start();
    else if (!isLeader && this.term) await this.stop();
  }

  private start(): void {
    const controller = new AbortController();
    this.term = controller;
    this.logger.info({ loops: this.loops.map((l) => l.name) }, 'became leader: starting control loops');
    this.running = this.loops.map((loop) => this.supervise(loop, controller.signal));
  }

  private async supervise(loop: LeaderLoop, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await loop.run(signal);
        if (!signal.aborted)
          this.logger.warn({ loop: loop.name }, 'control loop returned while leading; restarting');
      } catch (err) {
        if (signal.aborted) break;
        this.logger.error({ loop: loop.name, err }, 'control loop failed; restarting');
      }
      await abortableSleep(LOOP_RESTART_DELAY_MS, signal);
    }
  }

  async stop(): Promise<void> {
    const controller = this.term;
    if (!controller) return;
    this.term = undefined;
    this.logger.info('stopping control loops');
    controller.abort();
    await Promise.all(this.running);
    this.running = [];
  }
}
