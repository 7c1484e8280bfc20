/** Stages that `augur stage NAME` runs as their own process. */
export const STAGE_NAMES = ["collect", "aggregate", "forecast", "detect", "history", "allocate", "actuate", "api"] as const;
export type StageName = (typeof STAGE_NAMES)[number];
