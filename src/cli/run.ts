import type { Command } from "commander";
import { TRACE_FORMATS, type TraceFormat } from "../backtest/adapters/index.js";
import { ConfigError, ValidationError, errorMessage } from "../core/errors.js";
import { DEFAULT_CONFIG, fail, loadFromFlags } from "./common.js";
import { HeldSignals, stopOnSignal } from "./signals.js";

interface RunFlags {
  config: string;
  dataDir?: string;
  listen?: string;
  reports?: string;
  replay?: string;
  format: string;
  speedup?: string;
}

export function registerRun(program: Command): void {
  program
    .command("run")
    .description("run the whole embedded pipeline on this host and serve the HTTP API and the dashboard")
    .option("-c, --config <file>", "pipeline config", DEFAULT_CONFIG)
    .option("--data-dir <dir>", "override the config's dataDir")
    .option("--listen <host:port>", "override the config's api.listen")
    .option("--reports <dir>", "override the config's dashboard.reports (backtest results the dashboard lists)")
    .option("--replay <trace>", "also feed this trace's samples into the running pipeline, in event time (then keep serving)")
    .option("--format <format>", `format of the --replay trace: ${TRACE_FORMATS.join(" | ")}`, "canonical")
    .option("--speedup <factor>", "--replay: event time runs this many times faster than wall time (default: as fast as possible)")
    .action(async (flags: RunFlags) => {
      // Caught from here on: a signal while the pipeline starts stops it once started.
      const signals = new HeldSignals();
      let running;
      let node: string;
      let speedup: number | undefined;
      try {
        if (!(TRACE_FORMATS as readonly string[]).includes(flags.format)) throw new ConfigError(`--format: one of ${TRACE_FORMATS.join(", ")}, got ${JSON.stringify(flags.format)}`);
        speedup = flags.speedup === undefined ? undefined : Number(flags.speedup);
        if (speedup !== undefined && !(speedup > 0 && Number.isFinite(speedup))) throw new ValidationError(`--speedup: a positive number, got ${JSON.stringify(flags.speedup)}`);
        const pipeline = loadFromFlags(flags);
        node = pipeline.node;
        const { startEmbeddedPipeline } = await import("../pipeline/embedded.js");
        running = await startEmbeddedPipeline(pipeline);
      } catch (error) {
        fail(error);
      }
      const versions = running.collectors.map((c) => c.cgroupVersion ?? "none").join(",");
      process.stderr.write(
        `augur: serving http://${running.address.replace(/^http:\/\//, "")} (node ${node}, dashboard at /ui/); ` +
          `data in ${running.store.dataDir}; write token from ${running.tokenSource}; cgroups ${versions || "off"}\n`,
      );
      stopOnSignal(signals, () => running.stop(), fail);
      if (flags.replay) {
        const started = Date.now();
        const { publishTrace } = await import("../pipeline/replay.js");
        publishTrace(running.transport, { trace: flags.replay, format: flags.format as TraceFormat, speedup }).then(
          (done) => process.stderr.write(`augur: replayed ${done.samples} samples of ${flags.replay} in ${Date.now() - started} ms (${done.rejectedRows} rows rejected)\n`),
          (error: unknown) => process.stderr.write(`augur: --replay ${flags.replay}: ${errorMessage(error)}\n`),
        );
      }
    });
}
