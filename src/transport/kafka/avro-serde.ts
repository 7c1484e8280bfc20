import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import avro from "avsc";
import { ConfigError, DecodeError, TransientError, ValidationError, errorMessage } from "../../core/errors.js";
import { TOPICS, type DeadLetter } from "../topic.js";

/** Which schema (schemas/NAME.avsc) each topic's values follow. The dead letter carries raw bytes. */
export const TOPIC_SCHEMAS: Record<string, string> = {
  [TOPICS.samples]: "Sample",
  [TOPICS.windows]: "WindowAggregate",
  [TOPICS.forecastLevels]: "WindowAggregate",
  [TOPICS.profiles]: "Profile",
  [TOPICS.anomalies]: "Anomaly",
  [TOPICS.allocationRequests]: "AllocationRequest",
  [TOPICS.allocations]: "AllocationDecision",
  [TOPICS.actuations]: "ActuationResult",
};

export const SCHEMA_DIR = fileURLToPath(new URL("../../../../schemas/", import.meta.url));

/** Confluent wire format: magic byte 0, schema id (4 bytes, big-endian), Avro binary body. */
export const MAGIC_BYTE = 0;
const HEADER_BYTES = 5;

export function frame(schemaId: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES + body.length);
  out[0] = MAGIC_BYTE;
  out.writeUInt32BE(schemaId, 1);
  body.copy(out, HEADER_BYTES);
  return out;
}

export function unframe(bytes: Buffer): { schemaId: number; body: Buffer } {
  if (bytes.length < HEADER_BYTES) throw new DecodeError(`record of ${bytes.length} bytes is shorter than the 5-byte Confluent header`);
  if (bytes[0] !== MAGIC_BYTE) throw new DecodeError(`unknown magic byte ${bytes[0]} (the Confluent wire format starts with 0)`);
  return { schemaId: bytes.readUInt32BE(1), body: bytes.subarray(HEADER_BYTES) };
}

/**
 * The part of a Confluent-compatible Schema Registry augur needs. The real
 * one wraps `@confluentinc/schemaregistry`; unit tests use an in-memory one.
 */
export interface SchemaRegistry {
  /** Registers (or finds) `schema` under `subject`; refuses one the subject's compatibility rule forbids. */
  register(subject: string, schema: string): Promise<number>;
  /** The schema text of `id`; throws when the registry does not know it. */
  schemaById(subject: string, id: number): Promise<string>;
  setCompatibility(subject: string, level: "BACKWARD" | "BACKWARD_TRANSITIVE" | "FULL" | "NONE"): Promise<void>;
}

export function subjectOf(topic: string): string {
  return `${topic}-value`;
}

/** Reads schemas/NAME.avsc. Timestamps stay numbers (no Date objects). */
export function readSchema(name: string, dir = SCHEMA_DIR): { text: string; type: avro.Type } {
  const text = readFileSync(`${dir}${name}.avsc`, "utf8");
  return { text, type: avro.Type.forSchema(JSON.parse(text) as avro.Schema, { logicalTypes: {} }) };
}

interface ReaderSchema {
  type: avro.Type;
  text: string;
  /** This process's own schema id, once registered. */
  id: number | null;
}

/**
 * Avro values in the Confluent wire format. Writers register their schema
 * (subject `<topic>-value`, compatibility BACKWARD) and put its id in front
 * of every record; readers fetch the writer's schema by id and resolve it
 * against their own, so old readers read new records and new readers old ones.
 */
export class AvroSerde {
  private readonly readers = new Map<string, ReaderSchema>();
  /** subject/writer id → resolver into this process's reader schema. */
  private readonly resolvers = new Map<string, Promise<{ resolver: avro.Resolver; type: avro.Type }>>();

  constructor(
    private readonly registry: SchemaRegistry,
    /** Prepended to topic names in subjects, as the transport's namespace is to topics. */
    private readonly namespace = "",
    private readonly schemas: Record<string, string> = TOPIC_SCHEMAS,
    private readonly schemaDir = SCHEMA_DIR,
  ) {}

  /** The registry subject of a (logical) topic's values: `<namespace><topic>-value`. */
  subject(topic: string): string {
    return subjectOf(this.namespace + topic);
  }

  private reader(topic: string): ReaderSchema {
    let reader = this.readers.get(topic);
    if (!reader) {
      const name = this.schemas[topic];
      if (!name) throw new ConfigError(`topic ${topic} has no Avro schema`);
      reader = { ...readSchema(name, this.schemaDir), id: null };
      this.readers.set(topic, reader);
    }
    return reader;
  }

  /** Sets BACKWARD compatibility and registers this version's schema of each topic. */
  async registerAll(topics: string[] = Object.keys(this.schemas)): Promise<Record<string, number>> {
    const ids: Record<string, number> = {};
    for (const topic of topics) {
      await this.registry.setCompatibility(this.subject(topic), "BACKWARD");
      ids[topic] = await this.schemaId(topic);
    }
    return ids;
  }

  async schemaId(topic: string): Promise<number> {
    const reader = this.reader(topic);
    reader.id ??= await this.registry.register(this.subject(topic), reader.text);
    return reader.id;
  }

  /** Encodes `value` with this process's schema for `topic`; missing optional fields take their defaults. */
  async encode(topic: string, value: unknown): Promise<Buffer> {
    const id = await this.schemaId(topic);
    return frame(id, this.encodeBody(this.reader(topic).type, value, topic));
  }

  private encodeBody(type: avro.Type, value: unknown, topic: string): Buffer {
    try {
      return type.toBuffer(value);
    } catch {
      try {
        return type.toBuffer(type.clone(value));
      } catch (error) {
        const paths: string[] = [];
        type.isValid(value, { errorHook: (path) => paths.push(path.join(".") || "(record)") });
        throw new ValidationError(`value does not fit ${type.name ?? topic}${paths.length ? ` at ${paths.join(", ")}` : ""}: ${errorMessage(error)}`, value);
      }
    }
  }

  /** Decodes a record of `topic`; every failure is a DecodeError saying what was wrong. */
  async decode(topic: string, bytes: Buffer | null): Promise<unknown> {
    if (!bytes) throw new DecodeError("record has no value (tombstone)");
    const { schemaId, body } = unframe(bytes);
    const reader = this.reader(topic);
    let value: unknown;
    if (schemaId === reader.id) {
      value = this.decodeWith(reader.type, body, schemaId);
    } else {
      const { resolver, type } = await this.resolver(topic, schemaId);
      value = this.decodeWith(type, body, schemaId, resolver);
    }
    return value;
  }

  private decodeWith(type: avro.Type, body: Buffer, schemaId: number, resolver?: avro.Resolver): unknown {
    try {
      const { value, offset } = type.decode(body, 0, resolver);
      if (offset < 0 || value === undefined) throw new Error("truncated record");
      if (offset !== body.length) throw new Error(`${body.length - offset} trailing bytes`);
      return value;
    } catch (error) {
      throw new DecodeError(`bytes do not decode with schema id ${schemaId}: ${errorMessage(error)}`);
    }
  }

  private resolver(topic: string, schemaId: number): Promise<{ resolver: avro.Resolver; type: avro.Type }> {
    const subject = this.subject(topic);
    const cacheKey = `${subject}/${schemaId}`;
    let pending = this.resolvers.get(cacheKey);
    if (!pending) {
      pending = (async () => {
        let text: string;
        try {
          text = await this.registry.schemaById(subject, schemaId);
        } catch (error) {
          if (error instanceof DecodeError) throw error;
          throw new TransientError(`schema registry did not answer for schema id ${schemaId} of ${subject}: ${errorMessage(error)}`);
        }
        const reader = this.reader(topic).type;
        try {
          const writer = avro.Type.forSchema(JSON.parse(text) as avro.Schema, { logicalTypes: {} });
          return { resolver: reader.createResolver(writer), type: reader };
        } catch (error) {
          throw new DecodeError(`schema id ${schemaId} cannot be read as ${reader.name}: ${errorMessage(error)}`);
        }
      })();
      // A failed lookup (registry down) is not remembered: the next record asks again.
      pending.catch(() => this.resolvers.delete(cacheKey));
      this.resolvers.set(cacheKey, pending);
    }
    return pending;
  }
}

/**
 * The dead letter's value: the original bytes where the transport had them
 * (as Kafka Connect does), else the refused value as JSON. The reason is in
 * the headers either way.
 */
export function encodeDeadLetter(letter: DeadLetter): Buffer {
  if (Buffer.isBuffer(letter.payload)) return letter.payload;
  return Buffer.from(JSON.stringify(letter, (_key, value: unknown) => (typeof value === "number" && !Number.isFinite(value) ? String(value) : value)));
}
