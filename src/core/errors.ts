// Typed errors. Each says whether retrying can help and carries the
// offending input, so callers decide between retry, dead letter and exit.

export abstract class AugurError extends Error {
  abstract readonly code: string;
  abstract readonly retriable: boolean;
  constructor(
    message: string,
    readonly input?: unknown,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** A configuration file or flag is wrong. Fatal: fix the config. */
export class ConfigError extends AugurError {
  readonly code = "config";
  readonly retriable = false;
}

/** An input value (record, request body, id) breaks its contract. */
export class ValidationError extends AugurError {
  readonly code = "invalid";
  readonly retriable = false;
}

/** Bytes could not be decoded into a record. */
export class DecodeError extends AugurError {
  readonly code = "decode";
  readonly retriable = false;
}

/** Not enough capacity on the node for an allocation. */
export class CapacityError extends AugurError {
  readonly code = "capacity";
  readonly retriable = true;
}

/** A connector could not apply a setting. */
export class ActuationError extends AugurError {
  readonly code = "actuation";
  constructor(
    message: string,
    input?: unknown,
    readonly retriable = false,
  ) {
    super(message, input);
  }
}

/** A transient I/O failure (a file vanished mid-read, a hook timed out). */
export class TransientError extends AugurError {
  readonly code = "transient";
  readonly retriable = true;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** "cannot read WHAT PATH: REASON", the reason being the system's error code (ENOENT, EISDIR…) where there is one, else the message. */
export function cannotRead(what: string, path: string, error: unknown): string {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return `cannot read ${what} ${path}: ${typeof code === "string" ? code : errorMessage(error)}`;
}
