// The oci runtime's local image store under the node's data dir: one folder per image reference
// holding the unpacked root filesystem and the image config. `cluster image import` fills it from
// a root filesystem tar as `docker import` does; the runtime only reads it. No registry.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ClusterError } from '../../../common/errors';
import { applyChange, EMPTY_IMAGE_CONFIG, type ImageConfig } from './bundle';

export interface ImageRecord {
  ref: string;
  /** Unique per import: a re-import under the same reference is another image. */
  id: string;
  createdMs: number;
  sizeBytes: number;
  config: ImageConfig;
}

/** How long unpacking one tar may take. */
const IMPORT_TIMEOUT_MS = 10 * 60_000;

/** "busybox" → "busybox:latest"; a reference that already names a tag or digest is kept. */
export function normalizeRef(ref: string): string {
  const value = ref.trim();
  if (!/^[a-z0-9][a-z0-9._/:@-]*$/i.test(value) || value.includes('//') || value.endsWith(':'))
    throw new ClusterError(
      'INVALID_ARGUMENT',
      `invalid image reference "${ref}": expected NAME[:TAG] (letters, digits, . _ - / :)`,
    );
  if (value.includes('@')) return value;
  const slash = value.lastIndexOf('/');
  const colon = value.lastIndexOf(':');
  return colon > slash ? value : `${value}:latest`;
}

/** "local/busybox:1" → repo local/busybox, tag 1 (a normalized reference). */
export function splitRef(ref: string): { repo: string; tag: string } {
  const at = ref.indexOf('@');
  if (at >= 0) return { repo: ref.slice(0, at), tag: ref.slice(at + 1) };
  const colon = ref.lastIndexOf(':');
  return colon > ref.lastIndexOf('/')
    ? { repo: ref.slice(0, colon), tag: ref.slice(colon + 1) }
    : { repo: ref, tag: 'latest' };
}

/** A reference as one folder name (no slashes, reversible). */
function folderOf(ref: string): string {
  return encodeURIComponent(ref);
}

async function run(cmd: string, args: string[], timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()).slice(-4096));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || `exit ${code ?? signal}`}`));
    });
  });
}

function duBytes(dir: string): number {
  let total = 0;
  const stack = [dir];
  while (stack.length) {
    const current = stack.pop() ?? '';
    for (const entry of fs.readdirSync(current, { withFileTypes: true })) {
      const full = path.join(current, entry.name);
      if (entry.isDirectory()) stack.push(full);
      else if (entry.isFile()) total += fs.lstatSync(full).size;
    }
  }
  return total;
}

export class ImageStore {
  readonly dir: string;

  /** `ociDir` is the runtime's folder in the data dir (<data-dir>/oci). */
  constructor(ociDir: string) {
    this.dir = path.join(ociDir, 'images');
  }

  private folder(ref: string): string {
    return path.join(this.dir, folderOf(ref));
  }

  rootfs(ref: string): string {
    return path.join(this.folder(normalizeRef(ref)), 'rootfs');
  }

  /** Undefined when the node has no image under this reference. */
  get(ref: string): ImageRecord | undefined {
    let text: string;
    try {
      text = fs.readFileSync(path.join(this.folder(normalizeRef(ref)), 'image.json'), 'utf8');
    } catch {
      return undefined;
    }
    return JSON.parse(text) as ImageRecord;
  }

  list(): ImageRecord[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    const images: ImageRecord[] = [];
    for (const name of names) {
      if (name.startsWith('.')) continue;
      const image = this.get(decodeURIComponent(name));
      if (image) images.push(image);
    }
    return images.sort((a, b) => a.ref.localeCompare(b.ref));
  }

  /**
   * Unpacks a root filesystem tar (plain or compressed, as GNU tar reads it) under `ref`, with
   * the `--change` instructions applied to an empty config. Replaces an image of that reference
   * unless `inUse` names a task using it.
   */
  async import(
    tarPath: string,
    refText: string,
    changes: string[],
    inUse: (ref: string) => string[],
  ): Promise<ImageRecord> {
    const ref = normalizeRef(refText);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(tarPath);
    } catch {
      throw new ClusterError('NOT_FOUND', `cannot read ${tarPath}: no such file`);
    }
    if (!stat.isFile()) throw new ClusterError('INVALID_ARGUMENT', `${tarPath} is not a file`);
    let config = EMPTY_IMAGE_CONFIG;
    for (const change of changes) {
      try {
        config = applyChange(config, change);
      } catch (err) {
        throw new ClusterError('INVALID_ARGUMENT', (err as Error).message);
      }
    }
    const users = inUse(ref);
    if (users.length)
      throw new ClusterError(
        'FAILED_PRECONDITION',
        `image ${ref} is used by task container(s) ${users.join(', ')}: import it under another tag`,
      );
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const staging = fs.mkdtempSync(path.join(this.dir, '.import-'));
    try {
      const rootfs = path.join(staging, 'rootfs');
      fs.mkdirSync(rootfs, { mode: 0o755 });
      try {
        await run(
          'tar',
          [
            '-x',
            '-f',
            tarPath,
            '-C',
            rootfs,
            '--numeric-owner',
            '--same-permissions',
            '--same-owner',
            '--no-overwrite-dir',
          ],
          IMPORT_TIMEOUT_MS,
        );
      } catch (err) {
        throw new ClusterError(
          'INVALID_ARGUMENT',
          `cannot unpack ${tarPath} as a root filesystem tar: ${(err as Error).message}`,
        );
      }
      const record: ImageRecord = {
        ref,
        id: randomBytes(16).toString('hex'),
        createdMs: Date.now(),
        sizeBytes: duBytes(rootfs),
        config,
      };
      fs.writeFileSync(path.join(staging, 'image.json'), `${JSON.stringify(record, null, 1)}\n`);
      const target = this.folder(ref);
      const old = fs.existsSync(target) ? `${staging}.old` : undefined;
      if (old) fs.renameSync(target, old);
      fs.renameSync(staging, target);
      if (old) fs.rmSync(old, { recursive: true, force: true });
      return record;
    } catch (err) {
      fs.rmSync(staging, { recursive: true, force: true });
      throw err;
    }
  }

  /** Removes the image unless a task container uses it. */
  remove(refText: string, inUse: (ref: string) => string[]): ImageRecord {
    const ref = normalizeRef(refText);
    const image = this.get(ref);
    if (!image) throw new ClusterError('NOT_FOUND', `image ${ref} not found on this node (cluster image ls)`);
    const users = inUse(ref);
    if (users.length)
      throw new ClusterError(
        'FAILED_PRECONDITION',
        `image ${ref} is in use by task container(s) ${users.join(', ')}: remove the service (or its tasks) first`,
      );
    const target = this.folder(ref);
    const doomed = `${path.join(this.dir, '.rm-')}${image.id}`;
    fs.renameSync(target, doomed);
    fs.rmSync(doomed, { recursive: true, force: true });
    return image;
  }
}
