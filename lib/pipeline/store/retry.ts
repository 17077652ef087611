/**
 * Retries with capped exponential backoff and full jitter (the AWS Architecture Blog's "Exponential Backoff And
 * Jitter"; the SDKs' standard mode): attempt k waits a random time in [0, min(maxDelayMs, baseDelayMs · 2^k)].
 * Only transient errors are retried: throttling (SlowDown, 429, Throttling*), server errors (5xx), timeouts and
 * dropped connections. Anything else (403, 404, a bad request) fails at once.
 */

export interface RetryOptions {
  /** Total attempts, the first included (default 6). */
  maxAttempts?: number;
  /** Default 200 ms. */
  baseDelayMs?: number;
  /** Default 20 s. */
  maxDelayMs?: number;
  /** Called before each wait (logging). */
  onRetry?: (info: { what: string; attempt: number; delayMs: number; error: unknown }) => void;
  /** Injected in tests. */
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
}

const RETRYABLE_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'TooManyRequestsException',
  'RequestThrottled',
  'RequestThrottledException',
  'RequestLimitExceeded',
  'ProvisionedThroughputExceededException',
  'RequestTimeout',
  'RequestTimeoutException',
  'InternalError',
  'ServiceUnavailable',
  'TimeoutError',
]);
const RETRYABLE_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'ENOTFOUND',
]);

/** True for errors worth another attempt (see the module comment). */
export function isTransientError(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as {
    name?: string;
    code?: string;
    $metadata?: { httpStatusCode?: number };
    $retryable?: unknown;
  };
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined && (status === 429 || status >= 500)) return true;
  if (e.$retryable) return true;
  if (e.name && RETRYABLE_NAMES.has(e.name)) return true;
  return e.code !== undefined && RETRYABLE_CODES.has(e.code);
}

export async function withRetry<T>(
  what: string,
  fn: (attempt: number) => Promise<T>,
  opts: RetryOptions = {},
): Promise<T> {
  const maxAttempts = opts.maxAttempts ?? 6;
  const base = opts.baseDelayMs ?? 200;
  const cap = opts.maxDelayMs ?? 20_000;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const random = opts.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= maxAttempts || !isTransientError(err)) throw err;
      const delayMs = Math.floor(random() * Math.min(cap, base * 2 ** (attempt - 1)));
      opts.onRetry?.({ what, attempt, delayMs, error: err });
      await sleep(delayMs);
    }
  }
}
