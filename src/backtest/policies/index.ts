import type { Resource } from "../../core/types.js";
import { staticPolicy, type BacktestPolicy } from "../policy.js";
import { augurPolicy } from "./augur.js";
import { autopilotPolicy } from "./autopilot.js";
import { vpaPolicy } from "./vpa.js";

/** Policy names as the CLI spells them → factories. Adding a policy: one file, one line. */
export const POLICIES: Record<string, (resources: readonly Resource[]) => BacktestPolicy> = {
  static: () => staticPolicy(),
  vpa: () => vpaPolicy(),
  autopilot: () => autopilotPolicy(),
  augur: () => augurPolicy(),
};

export const POLICY_NAMES = Object.keys(POLICIES);
