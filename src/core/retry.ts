import { errorMessage } from "./errors.js";

export interface RetryOptions {
  /** First wait, doubled after each failure up to maxDelayMs. */
  initialDelayMs: number;
  maxDelayMs: number;
  /** Attempts in all; Infinity retries until `shouldStop` says so. */
  attempts: number;
  shouldStop?: () => boolean;
  onError?: (error: unknown, attempt: number, delayMs: number) => void;
  /** Errors whose `retriable` flag is false are thrown at once. */
  respectRetriable?: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The one place that retries with exponential backoff. */
export async function withRetry<T>(operation: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  let delay = options.initialDelayMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation(attempt);
    } catch (error) {
      const fatal = options.respectRetriable && (error as { retriable?: boolean }).retriable === false;
      if (fatal || attempt >= options.attempts || options.shouldStop?.()) throw error;
      options.onError?.(error, attempt, delay);
      await sleep(delay);
      delay = Math.min(delay * 2, options.maxDelayMs);
    }
  }
}

export function logRetry(what: string) {
  return (error: unknown, attempt: number, delayMs: number) =>
    console.error(`augur: ${what} failed (attempt ${attempt}): ${errorMessage(error)}; retrying in ${delayMs} ms`);
}
