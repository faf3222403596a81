// The delays between auto-reconnect attempts.

import type { ReconnectOptions } from './types.js';

/** Default auto-reconnect tuning. */
export const DEFAULT_RECONNECT: Required<ReconnectOptions> = {
  maxAttempts: 8,
  initialDelayMs: 100,
  maxDelayMs: 5000,
};

/**
 * The delay before reconnect attempt `attempt` (0-based): exponential,
 * capped, with "equal jitter" (between half and all of it) so that many
 * clients dropped together do not come back in lockstep.
 */
export function backoffDelay(attempt: number, options: Required<ReconnectOptions>, random: () => number = Math.random): number {
  const exp = options.initialDelayMs * 2 ** Math.max(0, attempt);
  const capped = Math.min(options.maxDelayMs, exp);
  return Math.round(capped / 2 + (random() * capped) / 2);
}
