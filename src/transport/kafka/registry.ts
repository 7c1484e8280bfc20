import { ConfigError, DecodeError, TransientError, errorMessage } from "../../core/errors.js";
import type { SchemaRegistry } from "./avro-serde.js";

interface RestLikeError {
  status?: number;
  errorCode?: number;
}

/**
 * A Confluent-compatible Schema Registry (Confluent's own, Apicurio's
 * `/apis/ccompat/v7`, Karapace) through `@confluentinc/schemaregistry`.
 * The library is loaded on first use: only the Kafka transport needs it.
 */
export class ConfluentSchemaRegistry implements SchemaRegistry {
  private client: Promise<import("@confluentinc/schemaregistry").SchemaRegistryClient> | null = null;

  constructor(private readonly url: string) {}

  private get(): Promise<import("@confluentinc/schemaregistry").SchemaRegistryClient> {
    this.client ??= import("@confluentinc/schemaregistry").then(
      ({ SchemaRegistryClient }) => new SchemaRegistryClient({ baseURLs: [this.url], maxRetries: 3, retriesWaitMs: 200, retriesMaxWaitMs: 2000 }),
    );
    return this.client;
  }

  async register(subject: string, schema: string): Promise<number> {
    const client = await this.get();
    try {
      return await client.register(subject, { schemaType: "AVRO", schema }, false);
    } catch (error) {
      const status = (error as RestLikeError).status;
      // 409 (incompatible) and 422 (invalid schema) will not change by retrying; the rest may.
      if (status === 409 || status === 422) throw new ConfigError(`schema registry at ${this.url} refused ${subject}: ${errorMessage(error)}`);
      throw new TransientError(`schema registry at ${this.url} did not register ${subject}: ${errorMessage(error)}`);
    }
  }

  async schemaById(subject: string, id: number): Promise<string> {
    const client = await this.get();
    try {
      return (await client.getBySubjectAndId(subject, id)).schema;
    } catch (error) {
      const rest = error as RestLikeError;
      if (rest.status === 404) throw new DecodeError(`unknown schema id ${id} for ${subject} (registry: ${errorMessage(error)})`);
      throw error;
    }
  }

  async setCompatibility(subject: string, level: "BACKWARD" | "BACKWARD_TRANSITIVE" | "FULL" | "NONE"): Promise<void> {
    const client = await this.get();
    await client.updateConfig(subject, { compatibility: level as never });
  }
}

/** An in-memory registry with the same rules for unit tests: ids per distinct schema, BACKWARD checked by resolving. */
export class MemorySchemaRegistry implements SchemaRegistry {
  private readonly ids = new Map<string, number>();
  private readonly texts = new Map<number, string>();
  private readonly subjects = new Map<string, { level: string; versions: string[] }>();

  constructor(private readonly canRead: (reader: string, writer: string) => boolean) {}

  async register(subject: string, schema: string): Promise<number> {
    const entry = this.subjects.get(subject) ?? { level: "BACKWARD", versions: [] };
    if (!entry.versions.includes(schema)) {
      const latest = entry.versions.at(-1);
      if (entry.level !== "NONE" && latest !== undefined && !this.canRead(schema, latest)) {
        throw new Error(`schema is not backward compatible with the latest version of ${subject}`);
      }
      entry.versions.push(schema);
    }
    this.subjects.set(subject, entry);
    let id = this.ids.get(schema);
    if (id === undefined) {
      id = this.ids.size + 1;
      this.ids.set(schema, id);
      this.texts.set(id, schema);
    }
    return id;
  }

  async schemaById(subject: string, id: number): Promise<string> {
    const text = this.texts.get(id);
    if (text === undefined) throw new DecodeError(`unknown schema id ${id} for ${subject}`);
    return text;
  }

  async setCompatibility(subject: string, level: "BACKWARD" | "BACKWARD_TRANSITIVE" | "FULL" | "NONE"): Promise<void> {
    const entry = this.subjects.get(subject) ?? { level, versions: [] };
    entry.level = level;
    this.subjects.set(subject, entry);
  }
}
