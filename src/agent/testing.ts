// An in-memory Runtime for tests of the controller and the agent: containers are records, a
// container "exits" when the test says so or when it is stopped.
import { Server, ServerCredentials } from '@grpc/grpc-js';
import type { Task } from '../gen/cluster/v1/objects';
import { DispatcherService } from '../gen/cluster/v1/dispatcher';
import type { Logger } from '../common/logger';
import { createDispatcher, type Dispatcher } from '../manager/dispatcher';
import type { MemoryStore } from '../store';
import {
  RuntimeUnavailableError,
  TaskRuntimeError,
  type ContainerInfo,
  type Runtime,
  type RuntimeDescription,
} from './runtime';

interface FakeContainer {
  info: ContainerInfo;
  nodeId: string;
  exited: Promise<number>;
  exit(code: number): void;
}

export class FakeRuntime implements Runtime {
  readonly name = 'fake';
  readonly containers = new Map<string, FakeContainer>();
  /** Every runtime call in order ("prepare t1", "stop c1 500"), for assertions. */
  readonly calls: string[] = [];
  /** Images prepare() refuses as missing. */
  readonly missingImages = new Set<string>();
  /** Containers whose start() fails (command not found). */
  failStart = new Set<string>();
  /** While set, every call fails as an engine that does not answer. */
  down = false;
  private nextId = 1;

  describe(): Promise<RuntimeDescription> {
    if (this.down) return Promise.reject(new RuntimeUnavailableError('the fake engine is down'));
    return Promise.resolve({
      hostname: 'fake-host',
      os: 'linux',
      architecture: 'x86_64',
      nanoCpus: 2e9,
      memoryBytes: 4 * 2 ** 30,
      runtimeName: 'fake',
      runtimeVersion: '1.0',
    });
  }

  ping(): Promise<void> {
    return this.down
      ? Promise.reject(new RuntimeUnavailableError('the fake engine is down'))
      : Promise.resolve();
  }

  prepare(task: Task, nodeId: string): Promise<string> {
    if (this.down) return Promise.reject(new RuntimeUnavailableError('the fake engine is down'));
    this.calls.push(`prepare ${task.id}`);
    const image = task.spec?.container?.image ?? '';
    if (this.missingImages.has(image)) {
      return Promise.reject(
        new TaskRuntimeError(`image ${image} not found locally and no registry is reachable`),
      );
    }
    const id = `c${this.nextId++}`;
    let exit: (code: number) => void = () => undefined;
    const exited = new Promise<number>((resolve) => (exit = resolve));
    const container: FakeContainer = {
      info: { id, taskId: task.id, status: 'created', exitCode: 0, pid: 0, error: '' },
      nodeId,
      exited,
      exit: (code) => {
        if (container.info.status === 'exited') return;
        container.info.status = 'exited';
        container.info.exitCode = code;
        exit(code);
      },
    };
    this.containers.set(id, container);
    return Promise.resolve(id);
  }

  private get(id: string): FakeContainer {
    const c = this.containers.get(id);
    if (!c) throw new Error(`no such container ${id}`);
    return c;
  }

  start(id: string): Promise<void> {
    if (this.down) return Promise.reject(new RuntimeUnavailableError('the fake engine is down'));
    this.calls.push(`start ${id}`);
    const c = this.get(id);
    if (this.failStart.has(c.info.taskId)) {
      return Promise.reject(new TaskRuntimeError('exec: "nope": executable file not found in $PATH'));
    }
    c.info.status = 'running';
    c.info.pid = 100;
    return Promise.resolve();
  }

  wait(id: string, signal: AbortSignal): Promise<number> {
    const c = this.get(id);
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(new Error('wait aborted'));
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      void c.exited.then((code) => {
        signal.removeEventListener('abort', onAbort);
        resolve(code);
      });
    });
  }

  stop(id: string, graceMs: number): Promise<void> {
    this.calls.push(`stop ${id} ${graceMs}`);
    this.containers.get(id)?.exit(137);
    return Promise.resolve();
  }

  remove(id: string): Promise<void> {
    this.calls.push(`remove ${id}`);
    this.containers.get(id)?.exit(137);
    this.containers.delete(id);
    return Promise.resolve();
  }

  inspect(id: string): Promise<ContainerInfo | undefined> {
    if (this.down) return Promise.reject(new RuntimeUnavailableError('the fake engine is down'));
    const c = this.containers.get(id);
    return Promise.resolve(c ? { ...c.info } : undefined);
  }

  adopt(nodeId: string): Promise<ContainerInfo[]> {
    if (this.down) return Promise.reject(new RuntimeUnavailableError('the fake engine is down'));
    return Promise.resolve(
      [...this.containers.values()].filter((c) => c.nodeId === nodeId).map((c) => ({ ...c.info })),
    );
  }

  /** The container of a task, if any. */
  containerOf(taskId: string): FakeContainer | undefined {
    return [...this.containers.values()].find((c) => c.info.taskId === taskId);
  }
}

/** A real Dispatcher served over insecure gRPC on 127.0.0.1, as agent tests talk to one. */
export interface TestDispatcher {
  addr: string;
  dispatcher: Dispatcher;
  stop(): Promise<void>;
}

export async function startTestDispatcher(options: {
  store: MemoryStore;
  nodeId: string;
  logger: Logger;
  heartbeatPeriodMs?: number;
  batchMs?: number;
  isLeader?: () => boolean;
  leaderAddress?: () => string | undefined;
}): Promise<TestDispatcher> {
  const dispatcher = createDispatcher({
    store: options.store,
    isLeader: options.isLeader ?? (() => true),
    leaderAddress: options.leaderAddress ?? (() => undefined),
    heartbeatPeriodMs: options.heartbeatPeriodMs,
    batchMs: options.batchMs,
    logger: options.logger,
    identify: () => ({ nodeId: options.nodeId, role: 'worker', clusterId: 'c' }),
  });
  const server = new Server();
  server.addService(DispatcherService, dispatcher.server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const loop = new AbortController();
  const loopDone = dispatcher.loop.run(loop.signal);
  return {
    addr: `127.0.0.1:${port}`,
    dispatcher,
    async stop() {
      loop.abort();
      await loopDone;
      dispatcher.close();
      server.forceShutdown();
    },
  };
}
