import { postJson } from "../core/http.js";
import { spawn } from "node:child_process";
import { z } from "zod";
import { TransientError } from "../core/errors.js";
import type { ScalerConfig } from "./config.js";
import type { Inventory } from "./inventory.js";

export interface ScaleRequest {
  node: string;
  /** What is missing for the request to fit. */
  shortfall: Inventory;
  image: string;
  user: string;
  requestId: string;
}

const scaleAnswer = z
  .object({
    added: z
      .object({
        cpu: z.number().finite().nonnegative().max(1e5).default(0),
        memory: z.number().finite().nonnegative().max(1e15).default(0),
        gpus: z.number().int().nonnegative().max(1024).default(0),
      })
      .strict(),
  })
  .passthrough();

/** Asks for more capacity; resolves with what was added (all zero if nothing). */
export type Scaler = (request: ScaleRequest) => Promise<Inventory>;

const NOTHING: Inventory = { cpu: 0, memory: 0, gpus: 0 };

function parseAnswer(text: string, from: string): Inventory {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new TransientError(`scaler ${from} did not answer JSON`, text.slice(0, 200));
  }
  const parsed = scaleAnswer.safeParse(json);
  if (!parsed.success) throw new TransientError(`scaler ${from} answered ${parsed.error.issues[0]!.path.join(".")}: ${parsed.error.issues[0]!.message}`, json);
  return parsed.data.added;
}

/** Runs the program without a shell: the request on stdin, `{"added": {...}}` expected on stdout. */
function commandScaler(argv: string[], timeoutMs: number): Scaler {
  return (request) =>
    new Promise((resolve, reject) => {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], timeout: timeoutMs, shell: false });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout = (stdout + chunk).slice(0, 1 << 20)));
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr = (stderr + chunk).slice(-4096)));
      child.on("error", (error) => reject(new TransientError(`scaler command ${argv[0]} failed to start: ${error.message}`)));
      child.on("close", (code, signal) => {
        if (code !== 0) return reject(new TransientError(`scaler command ${argv[0]} exited with ${signal ?? code}: ${stderr.trim()}`));
        try {
          resolve(parseAnswer(stdout, argv[0]!));
        } catch (error) {
          reject(error);
        }
      });
      child.stdin.on("error", () => undefined); // the program may exit without reading
      child.stdin.end(JSON.stringify(request));
    });
}

function webhookScaler(url: string, timeoutMs: number, token: string | undefined): Scaler {
  return async (request) => parseAnswer(await postJson(url, request, { timeoutMs, token, what: "scaler webhook" }), url);
}

export function createScaler(config: ScalerConfig): Scaler {
  switch (config.kind) {
    case "none":
      return async () => NOTHING;
    case "command":
      return commandScaler(config.argv, config.timeoutSeconds * 1000);
    case "webhook":
      return webhookScaler(config.url, config.timeoutSeconds * 1000, config.token);
  }
}
