import { createHash } from "node:crypto";
import { ValidationError } from "./errors.js";

/** Wildcard used by fallback profiles: (image, *), (*, user), (*, *). */
export const ANY = "*";

export const MAX_ID_LENGTH = 512;

/**
 * Checks an image, user or workload id. Ids may contain `/`, `:` and `@`
 * (image references do); they never become file paths or command arguments
 * as they are (see `safePathSegment`). Control characters (NUL included),
 * the key separator `|`, empty ids and the wildcard are rejected.
 */
export function validateId(kind: string, id: unknown, options: { allowWildcard?: boolean } = {}): string {
  if (typeof id !== "string") throw new ValidationError(`${kind} must be a string`, { [kind]: id });
  if (id.length === 0) throw new ValidationError(`${kind} must not be empty`, { [kind]: id });
  if (id.length > MAX_ID_LENGTH) {
    throw new ValidationError(`${kind} is longer than ${MAX_ID_LENGTH} characters`, { [kind]: id.slice(0, 64) + "…" });
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(id)) {
    throw new ValidationError(`${kind} contains a control character (NUL, newline, …)`, { [kind]: JSON.stringify(id) });
  }
  if (id.includes("|")) throw new ValidationError(`${kind} must not contain '|', the key separator`, { [kind]: id });
  if (id === ANY && !options.allowWildcard) {
    throw new ValidationError(`${kind} '*' is reserved for fallback profiles`, { [kind]: id });
  }
  return id;
}

export interface PairKey {
  image: string;
  user: string;
}

/** The transport key of an (image, user) pair, as in the design: `image|user`. */
export function pairKey(image: string, user: string): string {
  return `${image}|${user}`;
}

export function parsePairKey(key: string): PairKey {
  const at = key.indexOf("|");
  if (at < 0) throw new ValidationError("key is not of the form image|user", { key });
  return { image: key.slice(0, at), user: key.slice(at + 1) };
}

/** The four profile levels a window of (image, user) updates, most specific first. */
export function profileLevels(image: string, user: string): Array<PairKey & { level: "exact" | "image" | "user" | "global" }> {
  return [
    { image, user, level: "exact" },
    { image, user: ANY, level: "image" },
    { image: ANY, user, level: "user" },
    { image: ANY, user: ANY, level: "global" },
  ];
}

/** The hex digest that names an id in paths and names (twelve digits of its SHA-256). */
export function idDigest(id: string): string {
  return createHash("sha256").update(id).digest("hex").slice(0, 12);
}

/**
 * Turns any id into a single, harmless path segment: letters, digits, `-`,
 * `_` and `.` are kept (no leading dot, so never `.` or `..`), everything
 * else becomes `_`, and a hash of the original keeps distinct ids distinct.
 */
export function safePathSegment(id: string, maxReadable = 48): string {
  const readable = id
    .replace(/[^A-Za-z0-9._-]/g, "_")
    .replace(/^[.]+/, "_")
    .slice(0, maxReadable);
  return `${readable || "_"}-${idDigest(id)}`;
}
