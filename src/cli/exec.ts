import type { Command } from "commander";
import type { RunEvent } from "../actuate/launcher.js";
import { AugurError, ValidationError } from "../core/errors.js";
import { DEFAULT_CONFIG, EXIT, fail, loadFromFlags } from "./common.js";
import { exitStatus } from "../core/exit-status.js";
import { HeldSignals } from "./signals.js";

/** Parses --request: explicit amounts for this run (cores, bytes, GPUs, egress bytes/s). */
export function parseRequestFlag(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ValidationError(`--request is not JSON: ${(error as Error).message}`, text);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new ValidationError('--request must be a JSON object, e.g. {"cpu":0.5,"memory":209715200}', text);
  return value as Record<string, unknown>;
}

export function describeRunEvent(event: RunEvent): string {
  switch (event.type) {
    case "started":
      return `started pid ${event.pid} in ${event.cgroup}; limits ${JSON.stringify(event.limits)}${event.network ? `; network ${JSON.stringify(event.network)}` : ""}`;
    case "exited":
      return `exited ${event.signal ? `by ${event.signal}` : `with ${event.code}`}${event.oomKilled ? " (OOM-killed by the kernel)" : ""}`;
    case "refused":
      return `resize to ${JSON.stringify(event.limits)} not made: ${event.why} (${(event.reasons as string[]).join("; ")})`;
    case "remediated": {
      const limits = event.limits as { cpuLimitCores: number } | undefined;
      return `${event.action} by remediation${limits ? ` (CPU held at ${limits.cpuLimitCores} cores)` : ""}: ${event.reason}`;
    }
    case "oom":
      return `OOM kill at ${event.limitBytes} bytes; the next run of this pair gets at least ${Math.ceil(Number(event.nextFloorBytes))} bytes`;
    case "allocated": {
      const decision = event.decision as { cpu: unknown; memory: unknown; level: string; message: string };
      return `allocated (${decision.level}): cpu ${JSON.stringify(decision.cpu)} memory ${JSON.stringify(decision.memory)}; ${decision.message}`;
    }
    default:
      return `${event.type} ${JSON.stringify({ ...event, type: undefined, ts: undefined })}`;
  }
}

export function registerExec(program: Command): void {
  program
    .command("exec")
    .description("run COMMAND for (IMAGE, USER) under the allocation augur decides: cgroup limits, network shaping, GPUs")
    .requiredOption("--image <image>", "software image id")
    .requiredOption("--user <user>", "user id")
    .option("--request <json>", 'explicit amounts that override the prediction, e.g. {"cpu":0.5,"memory":209715200,"netEgress":1000000,"gpus":1}', parseRequestFlag)
    .option("--priority-class <name>", "priority class from the config")
    .option("--events <format>", "how to report the run on stderr: text or json (one event per line)", "text")
    .option("-c, --config <file>", "pipeline config", DEFAULT_CONFIG)
    .option("--data-dir <dir>", "override the config's dataDir")
    .argument("<command...>", "the command and its arguments (after --)")
    .action(async (command: string[], flags: { image: string; user: string; request?: Record<string, unknown>; priorityClass?: string; events: string; config: string; dataDir?: string }) => {
      if (flags.events !== "text" && flags.events !== "json") fail(new ValidationError(`--events must be text or json, got '${flags.events}'`));
      // Caught from here on: a signal while the run's cgroup (and network) is
      // being made stops the run once it exists, and takes all of it away.
      const signals = new HeldSignals();
      let opened;
      try {
        const pipeline = loadFromFlags(flags);
        const { openLaunchPipeline } = await import("../pipeline/launch.js");
        opened = await openLaunchPipeline(pipeline);
      } catch (error) {
        fail(error);
      }
      const early = signals.pending;
      if (early) {
        process.stderr.write(`augur: ${early}: not starting the run\n`);
        await opened.close().catch(() => undefined);
        process.exit(exitStatus(null, early));
      }
      let status: number = EXIT.failed;
      try {
        const run = await opened.launcher.start({
          image: flags.image,
          user: flags.user,
          request: flags.request as never,
          priorityClass: flags.priorityClass,
          argv: command,
          stdio: "inherit",
        });
        const report = (event: RunEvent) =>
          process.stderr.write(flags.events === "json" ? `${JSON.stringify({ run: run.id, ...event })}\n` : `augur: run ${run.id}: ${describeRunEvent(event)}\n`);
        for (const event of run.status.events) report(event);
        run.on("event", report);
        signals.handle((signal) => {
          process.stderr.write(`augur: ${signal}: stopping run ${run.id}\n`);
          void opened.launcher.stop(run.id);
        });
        const exit = await run.done;
        status = exit.status;
      } catch (error) {
        await opened.close().catch(() => undefined);
        if (error instanceof AugurError && error.code === "capacity") {
          process.stderr.write(`augur: refused: ${error.message}\n`);
          process.exit(EXIT.failed);
        }
        fail(error);
      }
      await opened.close();
      process.exit(status);
    });
}
