import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { parser } from "@prometheus-io/lezer-promql";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { allocationConfig } from "../../src/allocate/config.js";
import { AllocationEngine } from "../../src/allocate/engine.js";
import { createScaler } from "../../src/allocate/scaler.js";
import { buildApi } from "../../src/api/server.js";
import { Metrics } from "../../src/core/metrics.js";
import { RESOURCES } from "../../src/core/types.js";
import { HISTORY_STATS } from "../../src/history/sink.js";
import { historyConfig } from "../../src/config/pipeline.js";
import { ProfileStore } from "../../src/store/profile-store.js";
import { tempDir } from "../helpers.js";

const repo = fileURLToPath(new URL("../../../", import.meta.url));

let lastScrape = "";

/** Every metric the process exposes, scraped through the API and parsed as Prometheus text. */
async function scrape(): Promise<ReturnType<typeof parsePrometheusTextFormat>> {
  const { dir, cleanup } = tempDir();
  const store = new ProfileStore(dir);
  const metrics = new Metrics({ defaultMetrics: true });
  const config = allocationConfig.parse({ inventory: { cpu: 2, memory: 2 ** 30, gpus: 0 } });
  const engine = new AllocationEngine(config, store, { cpu: 2, memory: 2 ** 30, gpus: 0 }, "n", createScaler(config.scaler), metrics);
  // Touch the labelled series so they are printed.
  metrics.recordsIn.inc({ stage: "aggregate" });
  metrics.recordsOut.inc({ stage: "aggregate" });
  metrics.deadLetters.inc({ stage: "aggregate", code: "decode" });
  metrics.rejectedSamples.inc({ reason: "late" });
  metrics.stageErrors.inc({ stage: "detect" });
  metrics.workloads.set({ source: "cgroup" }, 3);
  metrics.watermarkLagSeconds.set({ stage: "aggregate" }, 1.5);
  metrics.actuations.inc({ connector: "cgroup", action: "limits", ok: "true" });
  metrics.forecastEvaluations.inc({ resource: "cpu", outcome: "within" });
  metrics.consumerLag.set({ topic: "augur.samples", group: "augur-aggregate", partition: "0" }, 3);
  metrics.forecastSlackRatio.observe({ resource: "cpu" }, 0.3);
  const app = buildApi({ store, engine, metrics, node: "n", token: "t".repeat(20), bodyLimitBytes: 4096 });
  try {
    await app.inject({ method: "POST", url: "/v1/allocations", headers: { authorization: `Bearer ${"t".repeat(20)}` }, payload: { image: "i", user: "u" } });
    const response = await app.inject({ url: "/metrics" });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
    lastScrape = response.body;
    return parsePrometheusTextFormat(response.body);
  } finally {
    await app.close();
    store.close();
    cleanup();
  }
}

describe("Prometheus metrics and the Grafana dashboard", () => {
  it("/metrics scrapes cleanly: every family typed, documented, with parseable samples", async () => {
    const families = await scrape();
    const names = new Set(families.map((f) => f.name));
    for (const name of ["augur_stage_records_in_total", "augur_stage_records_out_total", "augur_dead_letters_total", "augur_stage_errors_total", "augur_stage_watermark_lag_seconds", "augur_allocation_decision_seconds", "augur_actuations_total", "augur_runs", "augur_forecast_evaluations_total", "augur_forecast_slack_ratio", "augur_forecast_model_seconds", "augur_consumer_lag_records"]) {
      assert.ok(names.has(name), name);
    }
    for (const family of families) {
      assert.ok(family.help.length > 0, family.name);
      assert.ok(["COUNTER", "GAUGE", "HISTOGRAM", "SUMMARY"].includes(family.type), `${family.name}: ${family.type}`);
      for (const metric of family.metrics) {
        // The parser drops _sum and _count of histograms whose bucket lines carry labels after `le` (prom-client's order); those are checked in the text below.
        const values = metric.buckets ? [...Object.values(metric.buckets), metric.count, metric.sum].filter((v): v is string => v !== undefined) : [metric.value!];
        // Go's ParseFloat (Prometheus) reads numbers, ±Inf and NaN in any case (prom-client prints "Nan" before the first event-loop measurement).
        for (const value of values) assert.match(value, /^([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?|[-+]?inf|nan)$/i, `${family.name}: ${value}`);
      }
    }
    for (const family of families.filter((f) => f.type === "HISTOGRAM" && f.metrics.length > 0)) {
      for (const suffix of ["_sum", "_count"]) assert.match(lastScrape, new RegExp(`^${family.name}${suffix}(\\{[^}]*\\})? [-+.0-9eE]+$`, "m"), `${family.name}${suffix}`);
    }
    const histogram = families.find((f) => f.name === "augur_allocation_decision_seconds")!;
    assert.equal(histogram.type, "HISTOGRAM");
    assert.equal(histogram.metrics[0]!.count, "1");
  });

  it("the Grafana dashboard is valid and reads only metrics that exist", async () => {
    const dashboard = JSON.parse(readFileSync(repo + "grafana/augur.json", "utf8"));
    const exposed = new Set<string>();
    for (const family of await scrape()) {
      exposed.add(family.name);
      if (family.type === "HISTOGRAM") for (const suffix of ["_bucket", "_sum", "_count"]) exposed.add(family.name + suffix);
    }
    // The history database: InfluxDB line protocol fields become <measurement>_<field> in VictoriaMetrics.
    const measurement = historyConfig.parse({ kind: "influxdb" }).measurement;
    const fields = ["samples", "workloads", "oom_kills", "throttled_seconds", "window_ms", "mem_limit", "cpu_limit", ...RESOURCES.flatMap((r) => HISTORY_STATS.map((s) => `${r}_${s}`))];
    const history = new Set(fields.map((field) => `${measurement}_${field}`));
    const selectors = (expr: string): string[] => {
      const found: string[] = [];
      const tree = parser.parse(expr);
      tree.iterate({
        enter(node) {
          assert.ok(!node.type.isError, `PromQL syntax error in ${expr} at ${node.from}`);
          if (node.name === "VectorSelector") {
            const identifier = node.node.getChild("Identifier");
            if (identifier) found.push(expr.slice(identifier.from, identifier.to));
          }
        },
      });
      return found;
    };
    assert.ok(dashboard.panels.length >= 8);
    let checked = 0;
    for (const panel of dashboard.panels) {
      assert.ok(panel.gridPos && panel.title && panel.datasource?.uid, JSON.stringify(panel).slice(0, 80));
      for (const target of panel.targets) {
        const fromHistory = target.datasource.uid === "${DS_HISTORY}";
        for (const name of selectors(target.expr)) {
          assert.ok((fromHistory ? history : exposed).has(name), `panel "${panel.title}" reads ${name}, which ${fromHistory ? "the history sink" : "augur"} does not write`);
          checked++;
        }
      }
    }
    for (const variable of dashboard.templating.list) for (const name of selectors(variable.query.replace(/^label_values\((.*),\s*\w+\)$/, "$1"))) assert.ok(history.has(name), name);
    assert.ok(checked >= 15);
  });
});
