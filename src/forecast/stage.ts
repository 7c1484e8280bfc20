import { pairKey, profileLevels } from "../core/keys.js";
import type { Metrics } from "../core/metrics.js";
import type { Profile, WindowAggregate } from "../core/types.js";
import type { ProfileStore, ProfileUpdate } from "../store/profile-store.js";
import { sendToDeadLetter } from "../transport/dead-letter.js";
import { TOPICS, type Consumer, type TopicRecord, type Transport } from "../transport/topic.js";
import type { ForecastModel, ModelFactory } from "./model.js";
import { validateWindow } from "./validate-window.js";

interface KeyState {
  model: ForecastModel;
  /** Per contributing (image, user): end of the newest window folded in. Makes redelivery harmless. */
  appliedUntil: Record<string, number>;
  firstSeen: number;
  version: number;
  windows: number;
  oomKills: number;
}

interface PersistedKeyState {
  model: unknown;
  appliedUntil: Record<string, number>;
  firstSeen: number;
  version: number;
  windows: number;
  oomKills: number;
}

export interface ForecastStageOptions {
  /** Profile keys whose models stay in memory; the rest are reloaded from the store. */
  cacheKeys: number;
}

const STAGE = "forecast";

/**
 * Folds windows into the models of the four profile levels of their
 * (image, user) and publishes the resulting profiles. Model state and
 * profile are written in one store transaction before the window counts as
 * consumed, so a crash loses nothing and a redelivered window is skipped.
 */
export class ForecastStage {
  private readonly cache = new Map<string, KeyState>();
  private consumer: Consumer | null = null;

  constructor(
    private readonly transport: Transport,
    private readonly store: ProfileStore,
    private readonly factory: ModelFactory,
    private readonly metrics: Metrics,
    private readonly options: ForecastStageOptions = { cacheKeys: 2_000 },
  ) {}

  async start(): Promise<void> {
    this.consumer = await this.transport.consume<WindowAggregate>(TOPICS.windows, { group: "augur-forecast" }, async (batch) => {
      await this.handle(batch);
    });
  }

  async stop(): Promise<void> {
    await this.consumer?.stop();
    this.consumer = null;
  }

  /** Processes one batch; exported for replay and tests. */
  async handle(batch: Array<TopicRecord<WindowAggregate>>): Promise<Profile[]> {
    const updates = new Map<string, ProfileUpdate>();
    const touched = new Set<string>();
    for (const record of batch) {
      this.metrics.recordsIn.inc({ stage: STAGE });
      let window: WindowAggregate;
      try {
        window = validateWindow(record.value);
      } catch (error) {
        await sendToDeadLetter(this.transport, STAGE, record, error, this.metrics);
        continue;
      }
      const source = pairKey(window.image, window.user);
      for (const level of profileLevels(window.image, window.user)) {
        const key = pairKey(level.image, level.user);
        const state = this.load(level.image, level.user, window.windowStart);
        touched.add(key);
        if ((state.appliedUntil[source] ?? -Infinity) >= window.windowEnd) continue; // already folded in
        state.model.observe(window);
        state.appliedUntil[source] = window.windowEnd;
        state.version = Math.max(state.version, window.windowEnd);
        state.windows++;
        state.oomKills += window.oomKills;
        const profile: Profile = {
          image: level.image,
          user: level.user,
          level: level.level,
          version: state.version,
          firstSeen: state.firstSeen,
          windows: state.windows,
          resources: state.model.predict(),
          oomKills: state.oomKills,
        };
        updates.set(key, { profile, modelState: { model: this.factory.name, stateVersion: this.factory.stateVersion, state: this.persisted(state) } });
      }
    }
    if (updates.size === 0) return [];
    try {
      this.store.writeProfiles([...updates.values()]);
    } catch (error) {
      // The in-memory models already moved on; drop them so the retry starts from the store.
      for (const key of touched) this.cache.delete(key);
      throw error;
    }
    const profiles = [...updates.values()].map((update) => update.profile);
    await this.transport.topic<Profile>(TOPICS.profiles).publish(
      profiles.map((profile) => ({ key: pairKey(profile.image, profile.user), value: profile, timestamp: profile.version })),
    );
    this.metrics.recordsOut.inc({ stage: STAGE }, profiles.length);
    this.evict();
    return profiles;
  }

  private persisted(state: KeyState): PersistedKeyState {
    return {
      model: state.model.toState(),
      appliedUntil: state.appliedUntil,
      firstSeen: state.firstSeen,
      version: state.version,
      windows: state.windows,
      oomKills: state.oomKills,
    };
  }

  private load(image: string, user: string, firstSeen: number): KeyState {
    const key = pairKey(image, user);
    const cached = this.cache.get(key);
    if (cached) {
      this.cache.delete(key); // re-insert: most recently used last
      this.cache.set(key, cached);
      return cached;
    }
    const stored = this.store.getModelState(image, user);
    let state: KeyState | null = null;
    if (stored && stored.model === this.factory.name && stored.stateVersion === this.factory.stateVersion) {
      try {
        const persisted = stored.state as PersistedKeyState;
        state = { ...persisted, appliedUntil: { ...persisted.appliedUntil }, model: this.factory.restore(persisted.model) };
      } catch (error) {
        console.error(`augur: model state of ${key} is unreadable, starting afresh: ${String(error)}`);
        this.metrics.stageErrors.inc({ stage: STAGE });
      }
    }
    state ??= { model: this.factory.create(), appliedUntil: {}, firstSeen, version: 0, windows: 0, oomKills: 0 };
    this.cache.set(key, state);
    return state;
  }

  private evict(): void {
    while (this.cache.size > this.options.cacheKeys) this.cache.delete(this.cache.keys().next().value!);
  }
}
