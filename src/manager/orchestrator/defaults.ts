// Defaults the control loops assume where a stored spec leaves a field out (the control API
// normally fills them: src/manager/controlapi/defaults.ts holds the same values).

/** Docker's default monitor period of an update. */
export const DEFAULT_UPDATE_MONITOR_MS = 5_000;
