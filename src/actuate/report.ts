import type { Metrics } from "../core/metrics.js";
import type { ActuationResult } from "../core/types.js";
import { TOPICS, type Transport } from "../transport/topic.js";

/** Counts an ActuationResult in `augur_actuations_total` and publishes it to `augur.actuations`, keyed by its node. */
export async function reportActuation(result: ActuationResult, metrics: Metrics | undefined, transport: Transport | undefined): Promise<void> {
  metrics?.actuations.inc({ connector: result.connector, action: result.action, ok: String(result.ok) });
  await transport?.topic<ActuationResult>(TOPICS.actuations).publish([{ key: result.node, value: result, timestamp: result.ts }]);
}
