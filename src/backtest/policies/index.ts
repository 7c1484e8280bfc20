import type { Resource } from "../../core/types.js";
import { joinSavedGlobalModels, type SavedGlobalModels } from "../../forecast/global-learners.js";
import { staticPolicy, type BacktestPolicy } from "../policy.js";
import { augurModels, augurPolicy } from "./augur.js";
import { augurLivePolicy } from "./augur-live.js";
import { autopilotPolicy } from "./autopilot.js";
import { vpaPolicy } from "./vpa.js";

/** Policy names as the CLI spells them → factories. Adding a policy: one file, one line. */
export interface PolicyContext {
  resources: readonly Resource[];
  /** Models saved by an earlier run (`--load-models`), keyed by policy name. */
  models?: Record<string, unknown>;
  /** augur: event time a limit decision holds (`--decision-seconds`), default every step. */
  decisionMs?: number;
  /** augur: fractions of steps allowed above the memory and rate limits (`--memory-miss-rate`, `--rate-miss-rate`). */
  serviceLevel?: { memory: number; rate: number };
}

export const POLICIES: Record<string, (context: PolicyContext) => BacktestPolicy> = {
  static: () => staticPolicy(),
  vpa: () => vpaPolicy(),
  autopilot: () => autopilotPolicy(),
  augur: (context) => augurPolicy({ models: augurModels(context.models?.augur), decisionMs: context.decisionMs, serviceLevel: context.serviceLevel }),
  /** The live forecast stage's model with the live defaults (opt-in: `--policies …,augur-live`). */
  "augur-live": (context) => augurLivePolicy({ decisionMs: context.decisionMs, serviceLevel: context.serviceLevel, saved: context.models?.augur }),
};

export const POLICY_NAMES = Object.keys(POLICIES);

/**
 * For each policy that exports models: its exports from shards that each
 * ran one resource (a parallel backtest), joined as one run's export.
 */
export const JOIN_MODELS: Record<string, (byResource: Partial<Record<Resource, unknown>>) => unknown> = {
  augur: (byResource) => joinSavedGlobalModels(byResource as Partial<Record<Resource, SavedGlobalModels>>),
};
/** What a backtest runs when `--policies` is not given. */
export const DEFAULT_POLICIES = POLICY_NAMES.filter((name) => name !== "augur-live");
