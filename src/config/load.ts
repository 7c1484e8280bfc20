import { readFileSync } from "node:fs";
import { parseDocument } from "yaml";
import { z } from "zod";
import { cannotRead, ConfigError } from "../core/errors.js";

const MAX_CONFIG_BYTES = 1 << 20;

function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (typeof value === "number" && !Number.isFinite(value)) return String(value); // JSON would say null
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 60 ? text.slice(0, 60) + "…" : text;
}

/** Formats a zod failure as "file: path: message (got …)" lines. */
export function formatIssues(source: string, error: z.ZodError, input: unknown): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.join(".") || "(top level)";
      let got: unknown = input;
      for (const part of issue.path) got = got && typeof got === "object" ? (got as Record<string | number, unknown>)[part] : undefined;
      const keys = issue.code === "unrecognized_keys" ? ` ${issue.keys.map((key) => JSON.stringify(key)).join(", ")}` : "";
      return `${source}: ${path}: ${issue.message}${keys}${issue.code === "unrecognized_keys" ? "" : ` (got ${describe(got)})`}`;
    })
    .join("\n");
}

/** Parses YAML text, rejecting duplicate keys and anchors bombs, with line numbers in errors. */
export function parseYaml(text: string, source: string): unknown {
  const document = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (document.errors.length > 0) throw new ConfigError(`${source}: ${document.errors[0]!.message}`);
  try {
    return document.toJS({ maxAliasCount: 100 });
  } catch (error) {
    // The yaml library refuses alias bombs while resolving: still a config error.
    throw new ConfigError(`${source}: ${(error as Error).message}`);
  }
}

export function readConfigFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new ConfigError(cannotRead("config", path, error));
  }
  if (text.length > MAX_CONFIG_BYTES) throw new ConfigError(`${path}: config larger than ${MAX_CONFIG_BYTES} bytes`);
  if (text.includes("\0")) throw new ConfigError(`${path}: config contains a NUL byte`);
  return text;
}

/** A regular expression in a config file: compiled once at load, a syntax error is a config error. */
export const regexSchema = z.string().transform((source, ctx) => {
  try {
    return new RegExp(source);
  } catch (error) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid regular expression: ${(error as Error).message}` });
    return z.NEVER;
  }
});

/** Validates a parsed value against a schema: the only way config enters augur. */
export function validateConfig<S extends z.ZodTypeAny>(schema: S, value: unknown, source: string): z.output<S> {
  const parsed = schema.safeParse(value ?? {});
  if (!parsed.success) throw new ConfigError(formatIssues(source, parsed.error, value));
  return parsed.data;
}

export function loadYamlConfig<S extends z.ZodTypeAny>(schema: S, path: string): z.output<S> {
  return validateConfig(schema, parseYaml(readConfigFile(path), path), path);
}
