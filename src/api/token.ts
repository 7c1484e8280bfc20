import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../core/errors.js";

/**
 * The write token: from the environment variable, else the configured file,
 * else `<dataDir>/api-token`, created with a random value (mode 0600) on
 * first start. Writes are never open by accident.
 */
export function resolveApiToken(options: { tokenEnv: string; tokenFile?: string; dataDir: string }): { token: string; source: string } {
  const fromEnv = process.env[options.tokenEnv];
  if (fromEnv !== undefined && fromEnv !== "") return { token: checked(fromEnv, `$${options.tokenEnv}`), source: `$${options.tokenEnv}` };
  const file = options.tokenFile ?? join(options.dataDir, "api-token");
  if (!existsSync(file)) {
    if (options.tokenFile) throw new ConfigError(`api.tokenFile ${file} does not exist`);
    writeFileSync(file, randomBytes(24).toString("hex") + "\n", { mode: 0o600 });
  }
  return { token: checked(readFileSync(file, "utf8").trim(), file), source: file };
}

function checked(token: string, source: string): string {
  if (token.length < 16) throw new ConfigError(`the API token from ${source} is shorter than 16 characters`);
  return token;
}
