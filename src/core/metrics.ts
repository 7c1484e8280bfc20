import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Prometheus metrics of one augur process; every stage labels its own. */
export class Metrics {
  readonly registry = new Registry();
  readonly recordsIn: Counter<"stage">;
  readonly recordsOut: Counter<"stage">;
  readonly deadLetters: Counter<"stage" | "code">;
  readonly rejectedSamples: Counter<"reason">;
  readonly stageErrors: Counter<"stage">;
  readonly workloads: Gauge<"source">;
  readonly profiles: Gauge;
  readonly allocations: Counter<"reason" | "level">;
  readonly decisionSeconds: Histogram;
  readonly watermarkLagSeconds: Gauge<"stage">;
  readonly windowState: Gauge<"kind">;
  readonly actuations: Counter<"connector" | "action" | "ok">;
  readonly runs: Gauge;
  readonly consumerLag: Gauge<"topic" | "group" | "partition">;
  readonly forecastEvaluations: Counter<"resource" | "outcome">;
  readonly forecastSlackRatio: Histogram<"resource">;
  readonly forecastModelSeconds: Histogram;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: "augur_process_" });
    this.recordsIn = new Counter({ name: "augur_stage_records_in_total", help: "Records a stage consumed", labelNames: ["stage"], registers });
    this.recordsOut = new Counter({ name: "augur_stage_records_out_total", help: "Records a stage produced", labelNames: ["stage"], registers });
    this.deadLetters = new Counter({
      name: "augur_dead_letters_total",
      help: "Records sent to the dead-letter topic, by stage and error code",
      labelNames: ["stage", "code"],
      registers,
    });
    this.rejectedSamples = new Counter({
      name: "augur_samples_rejected_total",
      help: "Samples not counted by the windowing: late, duplicate, or redelivered (already taken in by this process)",
      labelNames: ["reason"],
      registers,
    });
    this.stageErrors = new Counter({ name: "augur_stage_errors_total", help: "Errors a stage recovered from", labelNames: ["stage"], registers });
    this.workloads = new Gauge({ name: "augur_collect_workloads", help: "Workloads the collectors see now", labelNames: ["source"], registers });
    this.profiles = new Gauge({ name: "augur_profiles", help: "Profiles in the store", registers });
    this.allocations = new Counter({
      name: "augur_allocations_total",
      help: "Allocation decisions by reason and profile level",
      labelNames: ["reason", "level"],
      registers,
    });
    this.decisionSeconds = new Histogram({
      name: "augur_allocation_decision_seconds",
      help: "Time to decide one allocation",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5],
      registers,
    });
    this.watermarkLagSeconds = new Gauge({
      name: "augur_stage_watermark_lag_seconds",
      help: "Wall time minus the stage's event-time watermark",
      labelNames: ["stage"],
      registers,
    });
    this.windowState = new Gauge({
      name: "augur_aggregate_state",
      help: "What the aggregate stage's windowing holds: open windows, (image, user) pairs it keeps windows or a watermark for, workloads whose recent timestamps it keeps",
      labelNames: ["kind"],
      registers,
    });
    this.actuations = new Counter({
      name: "augur_actuations_total",
      help: "Actions of the actuator connectors, by connector, action and outcome",
      labelNames: ["connector", "action", "ok"],
      registers,
    });
    this.runs = new Gauge({ name: "augur_runs", help: "Runs the launcher is running now", registers });
    this.consumerLag = new Gauge({
      name: "augur_consumer_lag_records",
      help: "Records a consumer group has yet to handle, per topic and partition",
      labelNames: ["topic", "group", "partition"],
      registers,
    });
    this.forecastEvaluations = new Counter({
      name: "augur_forecast_evaluations_total",
      help: "Windows of exact pairs scored against the limit predicted before them, by resource and outcome (within or overrun)",
      labelNames: ["resource", "outcome"],
      registers,
    });
    this.forecastSlackRatio = new Histogram({
      name: "augur_forecast_slack_ratio",
      help: "Unused share of the predicted limit at a window's mean usage (the model's waste)",
      labelNames: ["resource"],
      buckets: [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1],
      registers,
    });
    this.forecastModelSeconds = new Histogram({
      name: "augur_forecast_model_seconds",
      help: "Time the forecast models took per batch of windows (the models' compute cost)",
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    });
  }
}
