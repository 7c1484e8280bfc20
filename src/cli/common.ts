import { fileURLToPath } from "node:url";
import { AugurError, errorMessage } from "../core/errors.js";
import { loadPipeline, type LoadedPipeline } from "../config/pipeline.js";

/** The package root, so the default config is found wherever augur is started from. */
export const PACKAGE_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const DEFAULT_CONFIG = `${PACKAGE_ROOT}pipelines/local.yaml`;
export const DEFAULT_KAFKA_CONFIG = `${PACKAGE_ROOT}pipelines/kafka.yaml`;

/** Exit codes: 0 success, 1 the operation failed, 2 bad flags or config. */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

export interface PipelineFlags {
  config: string;
  dataDir?: string;
}

export function loadFromFlags(flags: PipelineFlags & { listen?: string; reports?: string }): LoadedPipeline {
  return loadPipeline(flags.config, { dataDir: flags.dataDir, listen: flags.listen, reports: flags.reports });
}

/** Prints an error the way every command does and picks the exit code. */
export function fail(error: unknown): never {
  const usage = error instanceof AugurError && (error.code === "config" || error.code === "invalid");
  process.stderr.write(`augur: ${errorMessage(error)}\n`);
  process.exit(usage ? EXIT.usage : EXIT.failed);
}
