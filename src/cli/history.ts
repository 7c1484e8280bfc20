import type { Command } from "commander";
import { LineFile } from "../backtest/trace.js";
import { ConfigError, ValidationError } from "../core/errors.js";
import { validateId } from "../core/keys.js";
import { exportHistory, type HistoryStat } from "../history/export.js";
import { HISTORY_STATS } from "../history/sink.js";
import { DEFAULT_KAFKA_CONFIG, fail, loadFromFlags } from "./common.js";

/** A point in time from the command line: ISO 8601 (2013-08-01, 2013-08-01T07:00:00Z) or epoch milliseconds. */
export function parseTime(flag: string, text: string): number {
  const trimmed = text.trim();
  const ms = /^\d{1,15}$/.test(trimmed) ? Number(trimmed) : /^\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(trimmed) ? Date.parse(trimmed) : Number.NaN;
  if (!Number.isFinite(ms)) throw new ValidationError(`${flag} takes an ISO 8601 time or epoch milliseconds, got '${trimmed.slice(0, 40)}'`);
  return ms;
}

export function registerHistory(program: Command): void {
  const history = program.command("history").description("the window history the history stage writes (InfluxDB line protocol)");
  history
    .command("export")
    .description("read windows back from the history database and write them as a canonical trace, for `augur backtest --trace/--train`")
    .option("-c, --config <file>", "pipeline config with a `history` section", DEFAULT_KAFKA_CONFIG)
    .requiredOption("--from <time>", "first window start (ISO 8601 or epoch ms)")
    .requiredOption("--to <time>", "last window start (ISO 8601 or epoch ms)")
    .option("--image <image>", "only this image")
    .option("--user <user>", "only this user")
    .option("--stat <stat>", `window statistic used as the step's usage: ${HISTORY_STATS.join(" | ")}`, "max")
    .requiredOption("--out <file>", "trace to write (.csv, or .csv.gz to compress)")
    .action(async (flags: { config: string; from: string; to: string; image?: string; user?: string; stat: string; out: string }) => {
      try {
        const fromMs = parseTime("--from", flags.from);
        const toMs = parseTime("--to", flags.to);
        if (toMs < fromMs) throw new ValidationError("--to is before --from");
        if (!(HISTORY_STATS as readonly string[]).includes(flags.stat)) throw new ValidationError(`--stat takes one of ${HISTORY_STATS.join(", ")}, got '${flags.stat.slice(0, 40)}'`);
        const image = flags.image === undefined ? undefined : validateId("--image", flags.image);
        const user = flags.user === undefined ? undefined : validateId("--user", flags.user);
        const pipeline = loadFromFlags({ config: flags.config });
        const config = pipeline.config.history;
        if (!config) throw new ConfigError(`${pipeline.path}: no history section (kind: influxdb, url, measurement)`);
        const query = { url: config.url, measurement: config.measurement, fromMs, toMs, image, user, query: config.query, org: config.org, bucket: config.bucket, token: process.env[config.tokenEnv] };
        const out = new LineFile(flags.out);
        const summary = await exportHistory(query, flags.stat as HistoryStat, (line) => out.write(line));
        await out.close();
        for (const refused of summary.refusedKept.slice(0, 20)) process.stderr.write(`augur: window ${refused.image}|${refused.user} at ${refused.ts} refused: ${refused.reason}\n`);
        process.stdout.write(`${JSON.stringify({ out: flags.out, windows: summary.windows, rows: summary.rows, pairs: summary.pairs, refused: summary.refused })}\n`);
      } catch (error) {
        fail(error);
      }
    });
}
