// `cluster image import|ls|rm`: the oci runtime's local image store on this host. The command
// acts on the data dir directly (as the daemon's runtime reads it), so it works whether or not
// the daemon runs; it needs the same rights on the data dir as the daemon (root).
import { Command } from 'commander';
import path from 'node:path';
import { OciRuntime, splitRef } from '../agent/runtime/oci';
import type { ImageRecord } from '../agent/runtime/oci/images';
import { ClusterError, toClusterError } from '../common/errors';
import type { Runtime } from './commands';
import { DEFAULT_DATA_DIR } from './connect';
import { formatQuiet, formatRows, humanDuration, type Column } from './output';

function humanSize(bytes: number): string {
  if (bytes < 1000) return `${bytes}B`;
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(1)}kB`;
  if (bytes < 1e9) return `${(bytes / 1e6).toFixed(1)}MB`;
  return `${(bytes / 1e9).toFixed(2)}GB`;
}

function imageColumns(now: Date): Column<ImageRecord>[] {
  return [
    { header: 'REPOSITORY', field: 'Repository', value: (i) => splitRef(i.ref).repo },
    { header: 'TAG', field: 'Tag', value: (i) => splitRef(i.ref).tag },
    { header: 'IMAGE ID', field: 'ID', value: (i) => i.id.slice(0, 12) },
    {
      header: 'CREATED',
      field: 'CreatedSince',
      value: (i) => `${humanDuration(Math.max(0, now.getTime() - i.createdMs))} ago`,
    },
    { header: 'SIZE', field: 'Size', value: (i) => humanSize(i.sizeBytes) },
  ];
}

function runtimeAt(dataDir: string): OciRuntime {
  return new OciRuntime({ dataDir: path.resolve(dataDir) });
}

export function addImageCommands(program: Command, rt: Runtime): void {
  const image = program
    .command('image')
    .description("Manage the oci runtime's local images on this host (acts on --data-dir directly)");

  image
    .command('import')
    .description('Import a root filesystem tar as an image, as `docker import` does')
    .option('--data-dir <dir>', "the node's data directory", DEFAULT_DATA_DIR)
    .option(
      '-c, --change <instruction>',
      'apply an instruction: CMD, ENTRYPOINT, ENV, WORKDIR, USER (repeatable)',
      (v: string, p: string[] = []) => [...p, v],
    )
    .argument('<file>', 'root filesystem tar (plain, gzip, xz, ... as GNU tar reads it)')
    .argument('<name>', 'NAME[:TAG]')
    .action(async (file: string, name: string, flags: { dataDir: string; change?: string[] }) => {
      const oci = runtimeAt(flags.dataDir);
      const record = await oci.images.import(path.resolve(file), name, flags.change ?? [], (ref) =>
        oci.containersUsing(ref),
      );
      rt.out(`${record.ref} ${record.id}\n`);
    });

  image
    .command('ls')
    .alias('list')
    .description('List the images')
    .option('--data-dir <dir>', "the node's data directory", DEFAULT_DATA_DIR)
    .option('-q, --quiet', 'only references')
    .action((flags: { dataDir: string; quiet?: boolean }) => {
      const images = runtimeAt(flags.dataDir).images.list();
      if (flags.quiet) {
        rt.out(formatQuiet([{ header: 'REF', field: 'Ref', value: (i: ImageRecord) => i.ref }], images));
        return;
      }
      rt.out(formatRows(rt.format(), imageColumns(rt.now()), images));
    });

  image
    .command('rm')
    .alias('remove')
    .description('Remove images (refused while a task container uses one)')
    .option('--data-dir <dir>', "the node's data directory", DEFAULT_DATA_DIR)
    .argument('<name...>', 'NAME[:TAG]')
    .action((names: string[], flags: { dataDir: string }) => {
      const oci = runtimeAt(flags.dataDir);
      const failures: ClusterError[] = [];
      for (const name of names) {
        try {
          const removed = oci.images.remove(name, (ref) => oci.containersUsing(ref));
          rt.out(`Untagged: ${removed.ref}\n`);
        } catch (err) {
          failures.push(toClusterError(err));
        }
      }
      const [first, ...more] = failures;
      if (first && more.length === 0) throw first;
      if (first) throw new ClusterError(first.code, failures.map((f) => f.message).join('\n'));
    });
}
