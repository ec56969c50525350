// A child process's output, kept for a verdict or a reason: stdout and stderr interleaved, capped.
import type { ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';

/** Collects what `child` prints on stdout and stderr, up to `maxChars`; call the result for the text so far. */
export function captureOutput(
  child: ChildProcessByStdio<null, Readable, Readable>,
  maxChars: number,
): () => string {
  let output = '';
  const take = (chunk: Buffer) => {
    if (output.length < maxChars) output += chunk.toString().slice(0, maxChars - output.length);
  };
  child.stdout.on('data', take);
  child.stderr.on('data', take);
  return () => output;
}
