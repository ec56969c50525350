// Waiting that a loop's AbortSignal can cut short: every control loop and retry pace uses it, so
// a stop never waits for a timer, and no timer outlives its loop.

/** Resolves after `ms`, or at once when `signal` fires (or has fired); never rejects. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted || ms <= 0) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
