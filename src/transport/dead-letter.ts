import { AugurError, errorMessage } from "../core/errors.js";
import type { Metrics } from "../core/metrics.js";
import { DEAD_LETTER_HEADERS, TOPICS, type DeadLetter, type TopicRecord, type Transport } from "./topic.js";

/**
 * Sends a record that a stage cannot process to `augur.dead-letter`, with
 * the reason in the value and in headers, keyed as the original.
 */
export async function sendToDeadLetter(
  transport: Transport,
  stage: string,
  record: Pick<TopicRecord<unknown>, "topic" | "key" | "value" | "timestamp" | "raw">,
  error: unknown,
  metrics?: Metrics,
): Promise<void> {
  const code = error instanceof AugurError ? error.code : "error";
  const message = errorMessage(error);
  const value: DeadLetter = { originalTopic: record.topic, stage, errorCode: code, error: message, payload: record.raw ?? record.value };
  metrics?.deadLetters.inc({ stage, code });
  await transport.topic<DeadLetter>(TOPICS.deadLetter).publish([
    {
      key: record.key,
      value,
      timestamp: record.timestamp,
      headers: {
        [DEAD_LETTER_HEADERS.topic]: record.topic,
        [DEAD_LETTER_HEADERS.stage]: stage,
        [DEAD_LETTER_HEADERS.code]: code,
        [DEAD_LETTER_HEADERS.message]: message,
      },
    },
  ]);
}
