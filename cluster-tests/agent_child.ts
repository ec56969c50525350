// A standalone agent process for the kill -9 test: the Docker runtime, insecure gRPC to the
// test's dispatcher on 127.0.0.1. Prints "connected" once its session is open; runs until killed.
import { credentials } from '@grpc/grpc-js';
import { componentLogger } from '../src/common/logger';
import { Agent } from '../src/agent';
import { DockerRuntime } from '../src/agent/runtime/docker';

interface ChildConfig {
  dataDir: string;
  manager: string;
  nodeId: string;
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '{}') as ChildConfig;
  const logger = componentLogger('agent-child');
  logger.level = 'warn';
  const agent = await Agent.start({
    dataDir: config.dataDir,
    credentials: credentials.createInsecure(),
    managers: [config.manager],
    nodeId: config.nodeId,
    runtime: new DockerRuntime(),
    logger,
  });
  await agent.connected();
  process.stdout.write('connected\n');
  process.on('SIGTERM', () => {
    agent.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`agent child failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
