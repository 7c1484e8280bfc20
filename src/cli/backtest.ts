import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { TRACE_FORMATS, type TraceFormat } from "../backtest/adapters/index.js";
import { DEFAULT_POLICIES, POLICY_NAMES } from "../backtest/policies/index.js";
import { PARALLEL_FROM_ROWS, runBacktest } from "../backtest/run.js";
import { SERVICE_LEVEL } from "../forecast/ensemble.js";
import { fail } from "./common.js";

const list = (value: string) =>
  value
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);

export function registerBacktest(program: Command): void {
  program
    .command("backtest")
    .description("replay a trace in event time through the policies and score slack, violations, unmet demand and changes")
    .requiredOption("--trace <path>", "trace file (.csv or .csv.gz) or directory of them")
    .option("--format <format>", `trace format: ${TRACE_FORMATS.join(" | ")}`, "canonical")
    .option("--train <path>", "replayed first and learned from, but not scored (same format)")
    .option("--policies <list>", `comma-separated: ${POLICY_NAMES.join(",")}`, DEFAULT_POLICIES.join(","))
    .option("--resources <list>", "comma-separated resources to score (default: those in the trace)")
    .requiredOption("--out <file>", "RESULT.json")
    .option("--report <file>", "self-contained REPORT.html with plots")
    .option("--rejected <file>", "write rejected trace rows here, one JSON object per line with the reason")
    .option("--decision-seconds <n>", "augur: event time a limit decision holds, in seconds (0: decide every step)", "0")
    .option("--memory-miss-rate <fraction>", `augur: fraction of steps allowed above the memory limit (default ${SERVICE_LEVEL.memory})`)
    .option("--rate-miss-rate <fraction>", `augur: fraction of steps allowed above a CPU, GPU, network or disk limit (default ${SERVICE_LEVEL.rate})`)
    .option("--load-models <file>", "start from models learned by an earlier run (--save-models)")
    .option("--save-models <file>", "write the models learned in this run (versioned JSON)")
    .option("--workers <n>", `threads the replay runs on, one (policy, resource) at a time each; the result is the same (default: one per core from ${PARALLEL_FROM_ROWS.toLocaleString("en")} rows; 1: all in one thread)`)
    .action(async (flags) => {
      const bar = process.stderr.isTTY ? new SingleBar({ format: "replay [{bar}] {percentage}% | {value}/{total} rows | eta {eta_formatted}", hideCursor: true }) : null;
      let started = false;
      try {
        const { result } = await runBacktest({
          trace: flags.trace,
          format: flags.format as TraceFormat,
          train: flags.train,
          policies: list(flags.policies),
          resources: flags.resources ? list(flags.resources) : undefined,
          out: flags.out,
          report: flags.report,
          rejectedOut: flags.rejected,
          loadModels: flags.loadModels,
          saveModels: flags.saveModels,
          decisionSeconds: flags.decisionSeconds,
          memoryMissRate: flags.memoryMissRate,
          rateMissRate: flags.rateMissRate,
          workers: flags.workers,
          onProgress: (done, total) => {
            if (!bar) return;
            if (!started) bar.start(total, 0);
            started = true;
            bar.update(done);
          },
        });
        bar?.stop();
        const lines: string[] = [];
        for (const [policy, byResource] of Object.entries(result.policies)) {
          for (const [resource, score] of Object.entries(byResource)) {
            lines.push(
              `${policy.padEnd(10)} ${resource.padEnd(10)} slack ${score!.slack.toFixed(4)}  violations ${score!.violation_rate.toFixed(5)}  unmet ${score!.unmet.toFixed(5)}  changes/day ${score!.changes_per_day.toFixed(2)}`,
            );
          }
        }
        for (const [resource, references] of Object.entries(result.clairvoyant ?? {})) {
          lines.push(`clairvoyant ${resource.padEnd(10)} slack ${Object.entries(references).map(([period, slack]) => `${period} ${slack === null ? "–" : slack.toFixed(4)}`).join("  ")}`);
        }
        process.stderr.write(`${result.samples} samples, ${result.workloads} workloads, ${result.rejected} rows rejected, ${result.elapsed_ms} ms\n${lines.join("\n")}\n`);
      } catch (error) {
        bar?.stop();
        fail(error);
      }
    });
}
