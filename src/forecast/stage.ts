import { ANY, pairKey, profileLevels } from "../core/keys.js";
import { errorMessage, ValidationError } from "../core/errors.js";
import type { Metrics } from "../core/metrics.js";
import { PEAK_LIKE, type Profile, type Resource, type ResourceWindowStats, type WindowAggregate } from "../core/types.js";
import type { ProfileStore, ProfileUpdate } from "../store/profile-store.js";
import { sendToDeadLetter } from "../transport/dead-letter.js";
import { TOPICS, type Consumer, type OutgoingRecord, type TopicRecord, type Transport } from "../transport/topic.js";
import { fedByOthers, NO_PAIRS, peerLimit, predicted, userFactorOf, type ForecastModel, type Limits, type ModelFactory, type PeerLevel, type Peers, type PerResource } from "./model.js";
import { validateWindow } from "./validate-window.js";

interface KeyState {
  model: ForecastModel;
  /** Per contributing (image, user): end of the newest window folded in. Makes redelivery harmless. */
  appliedUntil: Record<string, number>;
  /** How many pairs `appliedUntil` holds (in memory only: counted when the state is loaded). */
  contributors: number;
  firstSeen: number;
  version: number;
  windows: number;
  oomKills: number;
  /**
   * Limits of the last prediction (in memory only; a fallback level loaded
   * from the store reads them from its stored profile): an exact pair's next
   * window is scored against them, a fallback level's are its pairs' prior.
   */
  lastLimits?: Limits;
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
  /**
   * inline: one stage folds every level (one process).
   * repartition: fallback levels go through `augur.forecast-levels` (several processes).
   */
  levels?: "inline" | "repartition";
  /** Keep the model-state changelog and restore from it on assignment (distributed; `transport.changelog`, on by default). */
  changelog?: boolean;
  /** Model of the fallback levels ((image,*), (*,user), (*,*)); default: the same as pairs. */
  fallbackFactory?: ModelFactory;
  /**
   * Repartition, where the pairs' model takes the peers' prior: the consumer
   * group (one of its own per process: it reads from the earliest record)
   * that follows the fallback levels' profiles on `augur.profiles`, which
   * other processes may own. None: no prior.
   */
  peersGroup?: string;
}

/** A profile on `augur.profiles` as the pairs' prior reads it (repartition): a fallback level's limits, and its p90s and an exact pair's for the user factor. */
interface RemoteProfile extends PeerLevel {
  readonly image: string;
  readonly user: string;
  readonly exact: boolean;
  readonly version: number;
  readonly windows: number;
  readonly limits: Limits;
  readonly p90: PerResource;
}

/** A record of `augur.profiles` as the pairs' prior reads it; null if it is not a profile under its own key, with a version, a window count and predictions. */
function remoteProfile(record: TopicRecord<Profile>): RemoteProfile | null {
  const profile = record.value as Partial<Profile> | null;
  if (typeof profile !== "object" || profile === null || typeof profile.image !== "string" || typeof profile.user !== "string") return null;
  const { image, user, version, windows } = profile;
  const exact = image !== ANY && user !== ANY;
  if (pairKey(image, user) !== record.key || exact !== (profile.level === "exact")) return null;
  const limits = predicted(profile.resources, "limit");
  if (!(typeof version === "number" && Number.isFinite(version) && typeof windows === "number" && Number.isFinite(windows) && limits)) return null;
  return { image, user, exact, version, windows, limits, p90: predicted(profile.resources!, "p90") };
}

/** Sets `key` to `value` as the most recently used entry of `map` (last in its order); returns the value. */
function touch<K, V>(map: Map<K, V>, key: K, value: V): V {
  map.delete(key);
  map.set(key, value);
  return value;
}

/** Drops the least recently used entries of `map` beyond `size`. */
function bound(map: Map<unknown, unknown>, size: number): void {
  while (map.size > size) map.delete(map.keys().next().value);
}

type ProfileLevel = ReturnType<typeof profileLevels>[number];

/** What one batch changed. */
class Pass {
  /** Per key, its newest profile and its state, saved once at the end of the pass (not at every window folded). */
  readonly updates = new Map<string, { profile: Profile; state: KeyState }>();
  readonly touched = new Set<string>();
  readonly republish = new Map<string, ProfileLevel>();
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
  private levelConsumer: Consumer | null = null;
  private peersConsumer: Consumer | null = null;
  /**
   * Repartition: the fallback levels' newest profiles seen on
   * `augur.profiles`, by key; and per user, its pairs' newest p90s by image
   * (each the `cacheKeys` last seen).
   */
  private readonly remote = { levels: new Map<string, RemoteProfile>(), users: new Map<string, Map<string, PerResource>>() };
  /**
   * Inline, what the user factor of the peers' prior reads, kept as windows
   * fold: per user, its pairs' newest p90s by image, and per image, its
   * level's newest p90s. An entry is loaded from the store when first asked
   * (the store holds every key's newest profile as of the last pass, and the
   * pass in progress is merged in) and dropped, least recently used, beyond
   * `cacheKeys`: it reads the same whenever it is loaded.
   */
  private readonly factorInputs = { users: new Map<string, Map<string, PerResource>>(), images: new Map<string, PerResource>() };
  /** Whether the user factor is read here (inline, pairs that take the prior): else nothing keeps its inputs. */
  private readonly keepsFactorInputs: boolean;
  /** Per factory with shared state: the generation the store holds (null: none yet); absent until restored. */
  private readonly sharedSaved = new Map<ModelFactory, number | null>();
  /** Factories whose shared state moved on in a pass whose write failed: reset before they are restored again. */
  private readonly sharedStale = new Set<ModelFactory>();

  constructor(
    private readonly transport: Transport,
    private readonly store: ProfileStore,
    private readonly factory: ModelFactory,
    private readonly metrics: Metrics,
    private readonly options: ForecastStageOptions = { cacheKeys: 2_000, levels: "inline" },
  ) {
    this.keepsFactorInputs = options.levels !== "repartition" && factory.readsPeers === true;
  }

  async start(): Promise<void> {
    for (const factory of this.factories()) await factory.shared?.prepare?.();
    const distributed = this.options.levels === "repartition";
    // Distributed, a partition that moves here brings its keys' state from the changelog.
    const onAssign = distributed && this.options.changelog ? async (partition: number) => void (await this.restore(partition)) : undefined;
    this.consumer = await this.transport.consume<WindowAggregate>(TOPICS.windows, { group: "augur-forecast", onAssign }, async (batch) => {
      await this.handle(batch);
    });
    if (distributed) {
      this.levelConsumer = await this.transport.consume<WindowAggregate>(TOPICS.forecastLevels, { group: "augur-forecast-levels", onAssign }, async (batch) => {
        await this.handleLevels(batch);
      });
      const group = this.options.peersGroup;
      if (group && this.factory.readsPeers) {
        this.peersConsumer = await this.transport.consume<Profile>(TOPICS.profiles, { group, from: "earliest", ephemeral: true }, async (batch) => this.followProfiles(batch));
      }
    }
  }

  /**
   * Keeps the newest profile of each fallback level and, for the user
   * factor, the p90s of each user's pairs: of the `cacheKeys` levels and
   * users last seen (one dropped comes back as soon as it publishes again:
   * a level at each window it folds). A record that is not a profile under its own key, or
   * whose version, window count or predictions are missing, is reported and
   * skipped: it only ever feeds a prior.
   */
  followProfiles(batch: Array<TopicRecord<Profile>>): void {
    const { levels, users } = this.remote;
    for (const record of batch) {
      const profile = remoteProfile(record);
      if (!profile) {
        console.error(`augur: forecast: the record at ${record.topic}[${record.partition}]@${record.offset} (key ${record.key}) is not a profile; no prior from it`);
        this.metrics.stageErrors.inc({ stage: STAGE });
        continue;
      }
      if (profile.exact) {
        const pairs = users.get(profile.user) ?? new Map<string, PerResource>();
        touch(users, profile.user, pairs.set(profile.image, profile.p90));
        bound(users, this.options.cacheKeys);
        continue;
      }
      const known = levels.get(record.key);
      if (known && (known.version > profile.version || (known.version === profile.version && known.windows > profile.windows))) continue;
      touch(levels, record.key, profile);
      bound(levels, this.options.cacheKeys);
    }
  }

  /**
   * Brings the store up to the changelog for the keys of one partition (the
   * changelog is keyed and partitioned like the inputs): entries newer than
   * the local copy replace it and drop the cached model.
   */
  async restore(partition: number): Promise<number> {
    if (!this.transport.readPartition) return 0;
    const started = Date.now();
    const records = await this.transport.readPartition<ProfileUpdate>(TOPICS.forecastState, partition);
    const newest = new Map<string, ProfileUpdate>();
    for (const record of records) newest.set(record.key, record.value);
    const updates: ProfileUpdate[] = [];
    for (const [key, entry] of newest) {
      const profile = entry?.profile;
      if (!profile || typeof profile.image !== "string" || typeof profile.user !== "string" || pairKey(profile.image, profile.user) !== key || !entry.modelState) {
        console.error(`augur: changelog entry for ${key} is malformed; skipped`);
        this.metrics.stageErrors.inc({ stage: STAGE });
        continue;
      }
      const local = this.store.getProfile(profile.image, profile.user);
      const newer = !local || profile.version > local.version || (profile.version === local.version && profile.windows > local.windows);
      if (!newer) continue;
      updates.push(entry);
      this.cache.delete(key);
    }
    if (updates.length > 0) this.store.writeProfiles(updates);
    if (records.length > 0) console.error(`augur: forecast restored ${updates.length} of ${newest.size} keys of partition ${partition} from the changelog in ${Date.now() - started} ms`);
    return updates.length;
  }

  async stop(): Promise<void> {
    await this.consumer?.stop();
    this.consumer = null;
    await this.levelConsumer?.stop();
    this.levelConsumer = null;
    await this.peersConsumer?.stop();
    this.peersConsumer = null;
  }

  /**
   * Processes one batch of `augur.windows`; exported for replay and tests.
   * Inline: folds each window into all four levels. Repartition: folds the
   * exact level and forwards the window, keyed by each fallback level, to
   * `augur.forecast-levels`, so that one consumer owns each level's model
   * however many processes share the work.
   */
  async handle(batch: Array<TopicRecord<WindowAggregate>>): Promise<Profile[]> {
    this.restoreShared();
    const started = performance.now();
    const pass = new Pass();
    const forward: Array<OutgoingRecord<WindowAggregate>> = [];
    for (const record of batch) {
      const window = await this.accept(record);
      if (!window) continue;
      const levels = profileLevels(window.image, window.user);
      if (this.options.levels !== "repartition") {
        for (const level of levels) this.fold(level, window, pass);
      } else {
        this.fold(levels[0]!, window, pass);
        for (const level of levels.slice(1)) forward.push({ key: pairKey(level.image, level.user), value: window, timestamp: window.windowEnd });
      }
    }
    this.metrics.forecastModelSeconds.observe((performance.now() - started) / 1000);
    return this.finish(pass, forward);
  }

  /** Processes one batch of `augur.forecast-levels`: windows keyed by the fallback level they feed. */
  async handleLevels(batch: Array<TopicRecord<WindowAggregate>>): Promise<Profile[]> {
    this.restoreShared();
    const pass = new Pass();
    for (const record of batch) {
      const window = await this.accept(record);
      if (!window) continue;
      const level = profileLevels(window.image, window.user)
        .slice(1)
        .find((candidate) => pairKey(candidate.image, candidate.user) === record.key);
      if (!level) {
        await sendToDeadLetter(this.transport, STAGE, record, new ValidationError(`key ${record.key} is not a fallback level of ${pairKey(window.image, window.user)}`), this.metrics);
        continue;
      }
      this.fold(level, window, pass);
    }
    return this.finish(pass, []);
  }

  private async accept(record: TopicRecord<WindowAggregate>): Promise<WindowAggregate | null> {
    this.metrics.recordsIn.inc({ stage: STAGE });
    try {
      return validateWindow(record.value);
    } catch (error) {
      await sendToDeadLetter(this.transport, STAGE, record, error, this.metrics);
      return null;
    }
  }

  private fold(level: ProfileLevel, window: WindowAggregate, pass: Pass): void {
    const source = pairKey(window.image, window.user);
    const key = pairKey(level.image, level.user);
    const state = this.load(level.image, level.user, window.windowStart);
    pass.touched.add(key);
    if ((state.appliedUntil[source] ?? -Infinity) >= window.windowEnd) {
      // Already folded in (a redelivery): publish the profile again in case the
      // crash came between the store and the topic; versions make that harmless.
      if (!pass.updates.has(key)) pass.republish.set(key, level);
      return;
    }
    let peers: Peers | undefined;
    if (level.level === "exact") {
      if (state.lastLimits) this.score(state.lastLimits, window);
      // Inline, this stage holds the pair's fallback levels as they were before this window;
      // repartition, they are as their profiles last came in on augur.profiles.
      peers = this.options.levels !== "repartition" ? this.peersOf(window, pass) : this.remotePeersOf(window, state.windows + 1);
    }
    state.model.observe(window, peers);
    if (!Object.hasOwn(state.appliedUntil, source)) state.contributors++;
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
    state.lastLimits = predicted(profile.resources, "limit");
    if (this.keepsFactorInputs) {
      if (level.level === "exact") this.factorInputs.users.get(level.user)?.set(level.image, predicted(profile.resources, "p90"));
      else if (level.level === "image") this.factorInputs.images.set(level.image, predicted(profile.resources, "p90"));
    }
    pass.republish.delete(key);
    pass.updates.set(key, { profile, state });
  }

  /**
   * What the window's pair's fallback levels (image, user, everyone) set
   * before it: the pair's peers, looked up when asked. The image's level is
   * scaled by the user's factor (how the user's other pairs compare with
   * their images), as the allocation hierarchy scales it.
   */
  private peersOf(window: WindowAggregate, pass: Pass): Peers {
    const source = pairKey(window.image, window.user);
    let levels: PeerLevel[] | null = null;
    const userFactor = (resource: Resource) => userFactorOf(this.pairsOfUser(window.user, pass), (image) => this.imageLevel(image), window.image, resource);
    return (resource) => {
      levels ??= profileLevels(window.image, window.user)
        .slice(1)
        .map((level) => {
          const state = this.load(level.image, level.user, window.windowStart);
          state.lastLimits ??= this.stored(level.image, level.user, "limit");
          return { fedByOthers: fedByOthers(state.contributors, Object.hasOwn(state.appliedUntil, source)), limits: state.lastLimits, userFactor: level.level === "image" ? userFactor : undefined };
        })
        .filter((level) => level.fedByOthers);
      return peerLimit(levels, resource);
    };
  }

  /** A user's pairs' newest p90s by image (see `factorInputs`). */
  private pairsOfUser(user: string, pass: Pass): Map<string, PerResource> {
    let pairs = this.factorInputs.users.get(user);
    if (!pairs) {
      pairs = new Map();
      try {
        for (const profile of this.store.profilesOfUser(user)) pairs.set(profile.image, predicted(profile.resources, "p90"));
      } catch (error) {
        console.error(`augur: the profiles of user ${user} are unreadable, the user's factor reads only the pairs folded from now on: ${errorMessage(error)}`);
        this.metrics.stageErrors.inc({ stage: STAGE });
      }
      for (const { profile } of pass.updates.values()) if (profile.level === "exact" && profile.user === user) pairs.set(profile.image, predicted(profile.resources, "p90"));
    }
    return touch(this.factorInputs.users, user, pairs);
  }

  /** An image level's newest p90s (see `factorInputs`). */
  private imageLevel(image: string): PerResource {
    return touch(this.factorInputs.images, image, this.factorInputs.images.get(image) ?? this.stored(image, ANY, "p90") ?? {});
  }

  /**
   * Repartition: the window's pair's fallback levels as their newest profiles
   * on `augur.profiles` have them. Which pairs a level folded is not in its
   * profile, but its window count is: a level that counts more windows than
   * the pair has folded (`windows`, this one included) folded some of
   * another pair's. Before a level's profile comes in, no prior from it.
   * The image's level is scaled by the user's factor, from the user's pairs'
   * and their images' profiles as they came in.
   */
  private remotePeersOf(window: WindowAggregate, windows: number): Peers {
    const { levels: known, users } = this.remote;
    let levels: PeerLevel[] | null = null;
    const userFactor = (resource: Resource) => userFactorOf(users.get(window.user) ?? NO_PAIRS, (image) => known.get(pairKey(image, ANY))?.p90, window.image, resource);
    return (resource) => {
      levels ??= profileLevels(window.image, window.user)
        .slice(1)
        .flatMap((level): PeerLevel[] => {
          const profile = known.get(pairKey(level.image, level.user));
          if (!profile || !(profile.windows > windows)) return [];
          return [level.level === "image" ? { limits: profile.limits, userFactor } : profile];
        });
      return peerLimit(levels, resource);
    };
  }

  /** A key's limits (or p90s) as its stored profile has them; none (reported) where that profile cannot be read. */
  private stored(image: string, user: string, field: "limit" | "p90"): PerResource | undefined {
    try {
      return predicted(this.store.getProfile(image, user)?.resources, field);
    } catch (error) {
      console.error(`augur: the profile of ${pairKey(image, user)} is unreadable, no prior from it until it is folded again: ${errorMessage(error)}`);
      this.metrics.stageErrors.inc({ stage: STAGE });
      return {};
    }
  }

  /**
   * The model's cost as users feel it, live: each window of an exact pair
   * against the limit predicted before it. An overrun is a window whose peak
   * (memory-like) or 95th percentile (rates) passed the limit; slack is the
   * unused share of the limit at the window's mean.
   */
  private score(limits: Partial<Record<Resource, number>>, window: WindowAggregate): void {
    for (const [resource, stats] of Object.entries(window.resources) as Array<[Resource, ResourceWindowStats]>) {
      const limit = limits[resource];
      if (limit === undefined || !(limit > 0)) continue;
      const overrun = (PEAK_LIKE.has(resource) ? stats.max : stats.p95) > limit;
      this.metrics.forecastEvaluations.inc({ resource, outcome: overrun ? "overrun" : "within" });
      this.metrics.forecastSlackRatio.observe({ resource }, Math.max(0, limit - stats.mean) / limit);
    }
  }

  /** Store first (one transaction), then the topics: a crash in between re-delivers, never loses. */
  private async finish(pass: Pass, forward: Array<OutgoingRecord<WindowAggregate>>): Promise<Profile[]> {
    const shared = this.sharedToSave();
    const updates = new Map<string, ProfileUpdate>();
    for (const [key, { profile, state }] of pass.updates) {
      const factory = this.factoryFor(profile.image, profile.user);
      updates.set(key, { profile, modelState: { model: factory.name, stateVersion: factory.stateVersion, state: this.persisted(state) } });
    }
    if (updates.size > 0 || shared.size > 0) {
      try {
        this.store.writeProfiles([...updates.values()], new Map([...shared].map(([factory, { state }]) => [factory.name, state])));
      } catch (error) {
        // The in-memory models, what they share and what the user factor read already moved on: the retry
        // starts over from the store, as a restarted process would.
        this.cache.clear();
        this.factorInputs.users.clear();
        this.factorInputs.images.clear();
        for (const factory of this.sharedSaved.keys()) this.sharedStale.add(factory);
        this.sharedSaved.clear();
        throw error;
      }
      for (const [factory, { generation }] of shared) this.sharedSaved.set(factory, generation);
    }
    if (this.options.levels === "repartition" && this.options.changelog && updates.size > 0) {
      await this.transport.topic<ProfileUpdate>(TOPICS.forecastState).publish(
        [...updates.entries()].map(([key, update]) => ({ key, value: update, timestamp: update.profile.version })),
      );
    }
    if (forward.length > 0) await this.transport.topic<WindowAggregate>(TOPICS.forecastLevels).publish(forward);
    const profiles = [...pass.updates.values()].map((update) => update.profile);
    const again: Profile[] = [];
    for (const level of pass.republish.values()) {
      const stored = this.store.getProfile(level.image, level.user);
      if (stored) again.push(stored);
    }
    const out = [...profiles, ...again];
    if (out.length > 0) {
      await this.transport.topic<Profile>(TOPICS.profiles).publish(
        out.map((profile) => ({ key: pairKey(profile.image, profile.user), value: profile, timestamp: profile.version })),
      );
      this.metrics.recordsOut.inc({ stage: STAGE }, out.length);
    }
    this.evict();
    return profiles;
  }

  /**
   * Exact pairs get the configured model. Fallback levels fold windows of many
   * pairs, which arrive interleaved in an order that depends on partition
   * timing; they get `fallbackFactory` when one is given (an order-insensitive
   * decaying histogram), so their profiles do not depend on that timing.
   */
  private factoryFor(image: string, user: string): ModelFactory {
    return image !== ANY && user !== ANY ? this.factory : (this.options.fallbackFactory ?? this.factory);
  }

  private factories(): ModelFactory[] {
    return [...new Set([this.factory, this.options.fallbackFactory ?? this.factory])];
  }

  /**
   * Before the first window, and again after a pass whose write failed (its
   * shared state reset first): what the factories' keys share (global
   * models, pooled overruns) as last saved. One that cannot be read is
   * reported and learned afresh; the keys' own states stand.
   */
  private restoreShared(): void {
    for (const factory of this.factories()) {
      const shared = factory.shared;
      if (!shared || this.sharedSaved.has(factory)) continue;
      if (this.sharedStale.delete(factory)) shared.reset?.();
      let saved: number | null = null;
      try {
        const state = this.store.getSharedModelState(factory.name);
        if (state !== null) {
          shared.restore(state);
          saved = shared.generation;
        }
      } catch (error) {
        console.error(`augur: the shared state of model ${factory.name} is unreadable, learning it afresh: ${errorMessage(error)}`);
        this.metrics.stageErrors.inc({ stage: STAGE });
      }
      this.sharedSaved.set(factory, saved);
    }
  }

  /** What the factories' keys share, where it changed since it was saved: written with the keys' states. */
  private sharedToSave(): Map<ModelFactory, { state: unknown; generation: number }> {
    const out = new Map<ModelFactory, { state: unknown; generation: number }>();
    for (const [factory, saved] of this.sharedSaved) {
      const shared = factory.shared!;
      if (saved === null ? shared.generation === 0 : shared.generation === saved) continue; // nothing new
      out.set(factory, { state: shared.toState(), generation: shared.generation });
    }
    return out;
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
    if (cached) return touch(this.cache, key, cached);
    const stored = this.store.getModelState(image, user);
    let state: KeyState | null = null;
    const factory = this.factoryFor(image, user);
    if (stored && stored.model === factory.name && stored.stateVersion === factory.stateVersion) {
      try {
        const persisted = stored.state as PersistedKeyState;
        const appliedUntil = { ...persisted.appliedUntil };
        state = { ...persisted, appliedUntil, contributors: Object.keys(appliedUntil).length, model: factory.restore(persisted.model) };
      } catch (error) {
        console.error(`augur: model state of ${key} is unreadable, starting afresh: ${String(error)}`);
        this.metrics.stageErrors.inc({ stage: STAGE });
      }
    }
    state ??= { model: factory.create(), appliedUntil: {}, contributors: 0, firstSeen, version: 0, windows: 0, oomKills: 0 };
    this.cache.set(key, state);
    return state;
  }

  private evict(): void {
    for (const map of [this.cache, this.factorInputs.users, this.factorInputs.images]) bound(map, this.options.cacheKeys);
  }
}
