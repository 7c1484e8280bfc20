import Database from "better-sqlite3";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { AllocationDecision, Profile, ProfileLevel } from "../core/types.js";

/**
 * Layout version of the database; bump with a migration when tables change.
 * A table added (`CREATE TABLE IF NOT EXISTS`) is not a change: a file of an
 * older augur gains it on open, an older augur never reads it.
 */
const SCHEMA_VERSION = 1;

export interface StoredModelState {
  model: string;
  stateVersion: number;
  state: unknown;
}

export interface ProfileUpdate {
  profile: Profile;
  modelState: StoredModelState;
}

export interface FeedbackFloor {
  resource: "cpu" | "mem";
  floor: number;
  reason: string;
  ts: number;
}

export interface ActiveAllocation {
  requestId: string;
  node: string;
  cpuCores: number;
  memoryBytes: number;
  gpus: number;
  expiresAt: number;
}

/**
 * The embedded, durable store of a pipeline: profiles with the model state
 * that produced them, what a model's keys share (global models, pooled overruns), pairs
 * seen by the allocator, live allocations and feedback floors.
 * SQLite in WAL mode with synchronous=FULL: a transaction that returned is
 * on disk, so a SIGKILL (or a power cut) loses no committed update. It lives
 * in one file under the data directory; no id ever becomes a path.
 */
export class ProfileStore {
  private readonly db: Database.Database;
  private readonly statements;

  constructor(readonly dataDir: string) {
    const dir = resolve(dataDir);
    mkdirSync(dir, { recursive: true });
    this.db = new Database(join(dir, "augur.db"));
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = FULL");
    this.db.pragma("busy_timeout = 5000");
    this.migrate();
    this.statements = {
      upsertProfile: this.db.prepare(
        `INSERT INTO profiles (image, user, level, version, profile, model, model_version, model_state)
         VALUES (@image, @user, @level, @version, @profile, @model, @modelVersion, @modelState)
         ON CONFLICT (image, user) DO UPDATE SET level = excluded.level, version = excluded.version,
           profile = excluded.profile, model = excluded.model, model_version = excluded.model_version,
           model_state = excluded.model_state
         WHERE excluded.version >= profiles.version`,
      ),
      getProfile: this.db.prepare(`SELECT profile FROM profiles WHERE image = ? AND user = ?`),
      countProfiles: this.db.prepare(`SELECT COUNT(*) AS n FROM profiles`),
      getModelState: this.db.prepare(`SELECT model, model_version, model_state FROM profiles WHERE image = ? AND user = ?`),
      listProfiles: this.db.prepare(
        `SELECT profile FROM profiles WHERE (@image IS NULL OR image = @image) AND (@user IS NULL OR user = @user) AND (@level IS NULL OR level = @level) ORDER BY image, user LIMIT @limit`,
      ),
      userProfiles: this.db.prepare(`SELECT profile FROM profiles WHERE user = ? AND image <> '*'`),
      markSeen: this.db.prepare(`INSERT OR IGNORE INTO pairs (image, user, first_requested) VALUES (?, ?, ?)`),
      isSeen: this.db.prepare(`SELECT first_requested FROM pairs WHERE image = ? AND user = ?`),
      insertAllocation: this.db.prepare(
        `INSERT INTO allocations (request_id, node, cpu_cores, memory_bytes, gpus, expires_at, decision)
         VALUES (@requestId, @node, @cpuCores, @memoryBytes, @gpus, @expiresAt, @decision)`,
      ),
      renewAllocation: this.db.prepare(
        `INSERT INTO allocations (request_id, node, cpu_cores, memory_bytes, gpus, expires_at, decision)
         VALUES (@requestId, @node, @cpuCores, @memoryBytes, @gpus, @expiresAt, @decision)
         ON CONFLICT (request_id) DO UPDATE SET expires_at = MAX(allocations.expires_at, excluded.expires_at)`,
      ),
      extendAllocation: this.db.prepare(`UPDATE allocations SET expires_at = MAX(expires_at, @expiresAt) WHERE request_id = @requestId AND expires_at > @nowMs RETURNING expires_at`),
      deleteAllocation: this.db.prepare(`DELETE FROM allocations WHERE request_id = ?`),
      expireAllocations: this.db.prepare(`DELETE FROM allocations WHERE expires_at <= ?`),
      activeAllocations: this.db.prepare(`SELECT request_id, node, cpu_cores, memory_bytes, gpus, expires_at FROM allocations WHERE node = ?`),
      getAllocation: this.db.prepare(`SELECT decision FROM allocations WHERE request_id = ?`),
      getFloor: this.db.prepare(`SELECT floor, reason, ts FROM feedback WHERE image = ? AND user = ? AND resource = ?`),
      putFloor: this.db.prepare(
        `INSERT INTO feedback (image, user, resource, floor, reason, ts) VALUES (@image, @user, @resource, @floor, @reason, @ts)
         ON CONFLICT (image, user, resource) DO UPDATE SET floor = excluded.floor, reason = excluded.reason, ts = excluded.ts`,
      ),
      floorsOf: this.db.prepare(`SELECT resource, floor, reason, ts FROM feedback WHERE image = ? AND user = ? AND ts > ?`),
      getShared: this.db.prepare(`SELECT state FROM shared_models WHERE model = ?`),
      putShared: this.db.prepare(`INSERT INTO shared_models (model, state) VALUES (?, ?) ON CONFLICT (model) DO UPDATE SET state = excluded.state`),
    };
  }

  private migrate(): void {
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS profiles (
        image TEXT NOT NULL, user TEXT NOT NULL, level TEXT NOT NULL, version INTEGER NOT NULL,
        profile TEXT NOT NULL, model TEXT NOT NULL, model_version INTEGER NOT NULL, model_state TEXT NOT NULL,
        PRIMARY KEY (image, user));
      CREATE INDEX IF NOT EXISTS profiles_by_user ON profiles (user);
      CREATE TABLE IF NOT EXISTS pairs (image TEXT NOT NULL, user TEXT NOT NULL, first_requested INTEGER NOT NULL, PRIMARY KEY (image, user));
      CREATE TABLE IF NOT EXISTS allocations (
        request_id TEXT PRIMARY KEY, node TEXT NOT NULL, cpu_cores REAL NOT NULL, memory_bytes REAL NOT NULL,
        gpus INTEGER NOT NULL, expires_at INTEGER NOT NULL, decision TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS feedback (
        image TEXT NOT NULL, user TEXT NOT NULL, resource TEXT NOT NULL, floor REAL NOT NULL, reason TEXT NOT NULL, ts INTEGER NOT NULL,
        PRIMARY KEY (image, user, resource));
      CREATE TABLE IF NOT EXISTS shared_models (model TEXT PRIMARY KEY, state TEXT NOT NULL);
    `);
    const row = this.db.prepare(`SELECT value FROM meta WHERE key = 'schema_version'`).get() as { value: string } | undefined;
    if (!row) this.db.prepare(`INSERT INTO meta (key, value) VALUES ('schema_version', ?)`).run(String(SCHEMA_VERSION));
    else if (Number(row.value) > SCHEMA_VERSION) {
      throw new Error(`data directory ${this.dataDir} was written by a newer augur (schema ${row.value} > ${SCHEMA_VERSION})`);
    }
  }

  /** Writes all updates, and what models' keys share (by model name), in one transaction: all or none survive a crash. */
  writeProfiles(updates: ProfileUpdate[], shared: ReadonlyMap<string, unknown> = new Map()): void {
    this.db.transaction(() => {
      for (const [model, state] of shared) this.statements.putShared.run(model, JSON.stringify(state));
      for (const { profile, modelState } of updates) {
        this.statements.upsertProfile.run({
          image: profile.image,
          user: profile.user,
          level: profile.level,
          version: profile.version,
          profile: JSON.stringify(profile),
          model: modelState.model,
          modelVersion: modelState.stateVersion,
          modelState: JSON.stringify(modelState.state),
        });
      }
    })();
  }

  getProfile(image: string, user: string): Profile | null {
    const row = this.statements.getProfile.get(image, user) as { profile: string } | undefined;
    return row ? (JSON.parse(row.profile) as Profile) : null;
  }

  /** What every key of a model shares (global models, pooled overruns), as last saved; null if never. */
  getSharedModelState(model: string): unknown {
    const row = this.statements.getShared.get(model) as { state: string } | undefined;
    return row ? JSON.parse(row.state) : null;
  }

  putSharedModelState(model: string, state: unknown): void {
    this.statements.putShared.run(model, JSON.stringify(state));
  }

  countProfiles(): number {
    return (this.statements.countProfiles.get() as { n: number }).n;
  }

  getModelState(image: string, user: string): StoredModelState | null {
    const row = this.statements.getModelState.get(image, user) as { model: string; model_version: number; model_state: string } | undefined;
    return row ? { model: row.model, stateVersion: row.model_version, state: JSON.parse(row.model_state) } : null;
  }

  listProfiles(filter: { image?: string; user?: string; level?: ProfileLevel; limit?: number } = {}): Profile[] {
    const rows = this.statements.listProfiles.all({
      image: filter.image ?? null,
      user: filter.user ?? null,
      level: filter.level ?? null,
      limit: filter.limit ?? 10_000,
    }) as Array<{ profile: string }>;
    return rows.map((row) => JSON.parse(row.profile) as Profile);
  }

  /** Exact profiles of one user over all images (to compute the user's factor). */
  profilesOfUser(user: string): Profile[] {
    return (this.statements.userProfiles.all(user) as Array<{ profile: string }>).map((row) => JSON.parse(row.profile) as Profile);
  }

  /** Records the first request for a pair; returns true if it had never been seen. */
  markSeen(image: string, user: string, ts: number): boolean {
    return this.statements.markSeen.run(image, user, ts).changes > 0;
  }

  firstSeen(image: string, user: string): number | null {
    const row = this.statements.isSeen.get(image, user) as { first_requested: number } | undefined;
    return row ? row.first_requested : null;
  }

  /**
   * Runs `decide` with the node's live allocations inside one write
   * transaction, so that two processes allocating at once cannot both take
   * the last free core. `decide` returns what to record (or null).
   */
  allocateAtomically<T>(node: string, nowMs: number, decide: (active: ActiveAllocation[]) => { result: T; record: ActiveAllocation & { decision: AllocationDecision } | null }): T {
    const run = this.db.transaction(() => {
      this.statements.expireAllocations.run(nowMs);
      const { result, record } = decide(this.activeRows(node));
      if (record) this.statements.insertAllocation.run({ ...record, decision: JSON.stringify(record.decision) });
      return result;
    });
    return run.immediate();
  }

  private activeRows(node: string): ActiveAllocation[] {
    return (this.statements.activeAllocations.all(node) as Array<Record<string, number | string>>).map((row) => ({
      requestId: String(row.request_id),
      node: String(row.node),
      cpuCores: Number(row.cpu_cores),
      memoryBytes: Number(row.memory_bytes),
      gpus: Number(row.gpus),
      expiresAt: Number(row.expires_at),
    }));
  }

  /** The node's allocations not yet expired at `nowMs` (read only). */
  liveAllocations(node: string, nowMs: number): ActiveAllocation[] {
    return this.activeRows(node).filter((row) => row.expiresAt > nowMs);
  }

  getAllocation(requestId: string): AllocationDecision | null {
    const row = this.statements.getAllocation.get(requestId) as { decision: string } | undefined;
    return row ? (JSON.parse(row.decision) as AllocationDecision) : null;
  }

  /** Holds a live allocation until `record.expiresAt` (never shortening it), recording it again if it had expired. */
  renewAllocation(record: ActiveAllocation & { decision: AllocationDecision }): void {
    this.statements.renewAllocation.run({ ...record, decision: JSON.stringify(record.decision) });
  }

  /** Extends an allocation still live at `nowMs` to `expiresAt` (never shortening it); its expiry, or null when none is live. */
  extendAllocation(requestId: string, nowMs: number, expiresAt: number): number | null {
    const row = this.statements.extendAllocation.get({ requestId, nowMs, expiresAt }) as { expires_at: number } | undefined;
    return row ? Number(row.expires_at) : null;
  }

  releaseAllocation(requestId: string): boolean {
    return this.statements.deleteAllocation.run(requestId).changes > 0;
  }

  /**
   * Feedback from a run (an OOM kill, heavy throttling): the pair's limit of
   * `resource` stays at least `floor` until `maxAgeMs` after the newest such
   * event. A higher floor replaces a lower one; an expired one is replaced.
   */
  raiseFloor(image: string, user: string, resource: "cpu" | "mem", floor: number, reason: string, ts: number, maxAgeMs: number): FeedbackFloor {
    return this.db.transaction(() => {
      const row = this.statements.getFloor.get(image, user, resource) as { floor: number; reason: string; ts: number } | undefined;
      const live = row && row.ts > ts - maxAgeMs ? row : undefined;
      const next = live && live.floor >= floor ? { floor: live.floor, reason: live.reason, ts } : { floor, reason, ts };
      this.statements.putFloor.run({ image, user, resource, ...next });
      return { resource, ...next };
    }).immediate();
  }

  /** Floors of a pair that are still in force at `nowMs`. */
  floors(image: string, user: string, nowMs: number, maxAgeMs: number): FeedbackFloor[] {
    return (this.statements.floorsOf.all(image, user, nowMs - maxAgeMs) as Array<{ resource: "cpu" | "mem"; floor: number; reason: string; ts: number }>).map((row) => ({ ...row }));
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

