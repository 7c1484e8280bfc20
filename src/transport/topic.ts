// The seam between stages and whatever carries records between them. A
// stage gets a Transport and names topics; it never knows whether they live
// in this process (embedded) or in Kafka.

export interface OutgoingRecord<T> {
  key: string;
  value: T;
  /** Event time of the record, epoch ms. */
  timestamp: number;
  headers?: Record<string, string>;
}

export interface TopicRecord<T> extends Required<OutgoingRecord<T>> {
  topic: string;
  partition: number;
  offset: number;
  /** The bytes as they arrived, where the transport has them (for the dead letter). */
  raw?: Buffer;
}

export interface Topic<T> {
  readonly name: string;
  /**
   * Appends records. Records with the same key keep their order. The promise
   * settles once the transport has taken them; while consumers lag behind by
   * more than the buffer, it waits (backpressure).
   */
  publish(records: Array<OutgoingRecord<T>>): Promise<void>;
}

/**
 * What a handler may say about a batch: `resumeFrom` is the offset of the
 * first record of this partition whose effects are not yet durable (say, a
 * sample in a window still open). A restart re-reads from there; without it
 * the whole batch counts as consumed.
 */
export interface BatchResult {
  resumeFrom?: number;
}

export type BatchHandler<T> = (batch: Array<TopicRecord<T>>) => Promise<void | BatchResult>;

export interface ConsumeOptions {
  /** Consumer group: each group sees every record once; members share partitions. */
  group: string;
  /** Largest batch handed to the handler at once. */
  maxBatch?: number;
  /** Where a group with no committed position starts. */
  from?: "earliest" | "latest";
  /**
   * A group of this consumer alone (a name made for one process, read from
   * `from` each time): the transport deletes it when the consumer stops,
   * rather than leave one more group behind at every start.
   */
  ephemeral?: boolean;
  /**
   * Called with a partition newly assigned to this member, before its first
   * batch is handled: the place to restore that partition's state (rebalances).
   */
  onAssign?: (partition: number) => Promise<void>;
  /**
   * Called with a partition a rebalance took from this member (it is another
   * member's now), before any batch of the new assignment is handled: the
   * place to drop what was kept of that partition. Not called for a
   * partition a rebalance gives back to the same member.
   */
  onRevoke?: (partition: number) => void;
}

/** The partitions of `before` that `after` no longer has: what a rebalance took from a member. */
export function revokedPartitions(before: ReadonlySet<number>, after: ReadonlySet<number>): number[] {
  return [...before].filter((partition) => !after.has(partition)).sort((a, b) => a - b);
}

export interface Consumer {
  /** Stops fetching, waits for the batch in flight, commits what was handled. */
  stop(): Promise<void>;
}

export interface Transport {
  readonly kind: string;
  topic<T>(name: string): Topic<T>;
  /**
   * Calls `handler` with batches of records, one partition at a time and in
   * order within a partition. A batch counts as consumed (its offsets are
   * committed) only after the handler's promise resolves.
   */
  consume<T>(topic: string, options: ConsumeOptions, handler: BatchHandler<T>): Promise<Consumer>;
  /** Every record of one partition, from the oldest kept to the end (reads a changelog on a rebalance). */
  readPartition?<T>(topic: string, partition: number): Promise<Array<TopicRecord<T>>>;
  close(): Promise<void>;
}

/** Topic names, as in the design's "Topics" table. */
export const TOPICS = {
  samples: "augur.samples",
  windows: "augur.windows",
  /** Internal repartition topic: windows re-keyed by fallback level ((image,*), (*,user), (*,*)). */
  forecastLevels: "augur.forecast-levels",
  /** Internal compacted changelog of the forecast stage's per-key model state (JSON), for rebalances. */
  forecastState: "augur.forecast-state",
  profiles: "augur.profiles",
  anomalies: "augur.anomalies",
  allocationRequests: "augur.allocation-requests",
  allocations: "augur.allocations",
  actuations: "augur.actuations",
  deadLetter: "augur.dead-letter",
} as const;

/** What lands on `augur.dead-letter`: the original record and why it was refused. */
export interface DeadLetter {
  originalTopic: string;
  stage: string;
  errorCode: string;
  error: string;
  /** The refused value as it arrived (decoded if it could be, else raw text). */
  payload: unknown;
}

/** Headers that carry the reason on the dead-letter topic (as Kafka Connect does). */
export const DEAD_LETTER_HEADERS = {
  topic: "augur.dlq.topic",
  stage: "augur.dlq.stage",
  code: "augur.dlq.error.code",
  message: "augur.dlq.error.message",
} as const;
