import { randomUUID } from "node:crypto";
import { z } from "zod";
import { ValidationError, errorMessage } from "../core/errors.js";
import { ANY, validateId } from "../core/keys.js";
import type { Metrics } from "../core/metrics.js";
import { userFactor } from "../core/user-factor.js";
import type { AllocatedResource, AllocationDecision, AllocationLevel, AllocationRequest, Profile, ResourcePrediction } from "../core/types.js";
import type { ActiveAllocation, ProfileStore } from "../store/profile-store.js";
import type { AllocationConfig } from "./config.js";
import type { Inventory } from "./inventory.js";
import type { Scaler } from "./scaler.js";

/** The body of POST /v1/allocations, and what `augur allocate` builds. */
export const allocationRequestSchema = z
  .object({
    requestId: z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/, "letters, digits and . _ : -").optional(),
    image: z.string(),
    user: z.string(),
    /** Explicit amounts for this run; they override the prediction. */
    request: z
      .object({
        cpu: z.number().finite().positive().max(1e5).optional(),
        memory: z.number().finite().positive().max(1e15).optional(),
        gpus: z.number().int().nonnegative().max(1024).optional(),
        netEgress: z.number().finite().positive().max(1e13).optional(),
      })
      .strict()
      .default({}),
    priorityClass: z.string().min(1).max(64).optional(),
  })
  .strict();
export type AllocationRequestInput = z.input<typeof allocationRequestSchema>;

export function parseAllocationRequest(input: unknown, nowMs: number): AllocationRequest {
  const parsed = allocationRequestSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ValidationError(`${issue.path.join(".") || "body"}: ${issue.message}`, input);
  }
  const body = parsed.data;
  return {
    requestId: body.requestId ?? randomUUID(),
    image: validateId("image", body.image),
    user: validateId("user", body.user),
    request: body.request,
    priorityClass: body.priorityClass ?? null,
    ts: nowMs,
  };
}

interface Resolved {
  level: AllocationLevel;
  profile: Profile | null;
  /** Applied to predictions from the (image, *) level: how this user compares with others. */
  userFactor: { cpu: number; memory: number };
}

/**
 * `allocate(image, user, request)`: profile (or fallback, or default) →
 * priority weights → capacity check on this node (asking the scaler when
 * short) → a decision with a machine-readable reason and the profile level
 * used. The clock is passed in; I/O is the store and the scaler.
 */
export class AllocationEngine {
  private extraCapacity: Inventory = { cpu: 0, memory: 0, gpus: 0 };
  /** Where decisions go once made (the pipeline publishes them to `augur.allocations`). */
  private listener: ((decision: AllocationDecision) => Promise<void>) | null = null;

  constructor(
    private readonly config: AllocationConfig,
    private readonly store: ProfileStore,
    private readonly inventory: Inventory,
    private readonly node: string,
    private readonly scaler: Scaler,
    private readonly metrics?: Metrics,
  ) {
    for (const [scope, table] of [
      ["images", config.priorities.images],
      ["users", config.priorities.users],
    ] as const) {
      for (const [name, weights] of Object.entries(table)) {
        if (weights.class && !(weights.class in config.priorities.classes)) {
          throw new ValidationError(`priorities.${scope}.${name}.class: unknown priority class '${weights.class}'`);
        }
      }
    }
  }

  capacity(): Inventory {
    return {
      cpu: this.inventory.cpu + this.extraCapacity.cpu,
      memory: this.inventory.memory + this.extraCapacity.memory,
      gpus: this.inventory.gpus + this.extraCapacity.gpus,
    };
  }

  private usable(profile: Profile | null): profile is Profile {
    return profile !== null && profile.windows >= this.config.minWindows;
  }

  /** How this user's runs compare with all users' runs of the same images (geometric mean of p90 ratios). */
  userFactor(user: string): { cpu: number; memory: number } {
    const ratios = { cpu: [] as number[], memory: [] as number[] };
    for (const exact of this.store.profilesOfUser(user)) {
      if (!this.usable(exact)) continue;
      const general = this.store.getProfile(exact.image, ANY);
      if (!this.usable(general)) continue;
      for (const [resource, into] of [
        ["cpu", ratios.cpu],
        ["mem", ratios.memory],
      ] as const) {
        const mine = exact.resources[resource]?.p90;
        const all = general.resources[resource]?.p90;
        if (mine && all && mine > 0 && all > 0) into.push(mine / all);
      }
    }
    return { cpu: userFactor(ratios.cpu, this.config.userFactor), memory: userFactor(ratios.memory, this.config.userFactor) };
  }

  resolve(image: string, user: string): Resolved {
    const neutral = { cpu: 1, memory: 1 };
    const exact = this.store.getProfile(image, user);
    if (this.usable(exact)) return { level: "exact", profile: exact, userFactor: neutral };
    const byImage = this.store.getProfile(image, ANY);
    if (this.usable(byImage)) return { level: "image", profile: byImage, userFactor: this.userFactor(user) };
    const byUser = this.store.getProfile(ANY, user);
    if (this.usable(byUser)) return { level: "user", profile: byUser, userFactor: neutral };
    const global = this.store.getProfile(ANY, ANY);
    if (this.usable(global)) return { level: "global", profile: global, userFactor: neutral };
    return { level: "default", profile: null, userFactor: neutral };
  }

  /** Product of class, image and user multipliers for CPU and memory. */
  multipliers(image: string, user: string, requestedClass: string | null): { cpu: number; memory: number } {
    const { classes, images, users } = this.config.priorities;
    if (requestedClass !== null && !(requestedClass in classes)) throw new ValidationError(`unknown priority class '${requestedClass}'`, requestedClass);
    let cpu = 1;
    let memory = 1;
    const applied = new Set<string>();
    for (const weights of [images[image], users[user]]) {
      if (!weights) continue;
      cpu *= weights.cpuMultiplier ?? 1;
      memory *= weights.memoryMultiplier ?? 1;
      if (weights.class) applied.add(weights.class);
    }
    if (requestedClass !== null) applied.add(requestedClass);
    for (const name of applied) {
      cpu *= classes[name]!.cpuMultiplier;
      memory *= classes[name]!.memoryMultiplier;
    }
    return { cpu, memory };
  }

  private amount(
    prediction: ResourcePrediction | undefined,
    explicit: number | undefined,
    fallback: AllocatedResource,
    factor: number,
    multiplier: number,
    minimum: number,
  ): { amount: AllocatedResource; predicted: boolean } {
    if (explicit !== undefined) return { amount: { request: explicit, limit: explicit }, predicted: false };
    if (!prediction) return { amount: { request: fallback.request * multiplier, limit: fallback.limit * multiplier }, predicted: false };
    const request = Math.max(minimum, prediction.request * factor) * multiplier;
    const limit = Math.max(request, Math.max(minimum, prediction.limit * factor) * multiplier);
    return { amount: { request, limit }, predicted: true };
  }

  async allocate(request: AllocationRequest): Promise<AllocationDecision> {
    const started = performance.now();
    const decision = await this.decide(request);
    this.metrics?.decisionSeconds.observe((performance.now() - started) / 1000);
    this.metrics?.allocations.inc({ reason: decision.reason, level: decision.level });
    if (this.listener) {
      // The decision stands (it is in the store); a lost notification only leaves a gap in the dashboard.
      await this.listener(decision).catch((error: unknown) => console.error(`augur: publishing allocation ${decision.requestId}: ${errorMessage(error)}`));
    }
    return decision;
  }

  /** Calls `listener` with every decision after it is made. */
  onDecision(listener: (decision: AllocationDecision) => Promise<void>): void {
    this.listener = listener;
  }

  private async decide(request: AllocationRequest): Promise<AllocationDecision> {
    const { image, user } = request;
    const earlier = this.store.getAllocation(request.requestId);
    if (earlier) return earlier; // the same request again: same answer, capacity taken once
    const firstSight = this.store.markSeen(image, user, request.ts);
    const resolved = this.resolve(image, user);
    const multipliers = this.multipliers(image, user, request.priorityClass);
    const cpu = this.amount(
      resolved.profile?.resources.cpu,
      request.request.cpu,
      this.config.defaults.cpu,
      resolved.userFactor.cpu,
      multipliers.cpu,
      this.config.minimum.cpu,
    );
    const memory = this.amount(
      resolved.profile?.resources.mem,
      request.request.memory,
      this.config.defaults.memory,
      resolved.userFactor.memory,
      multipliers.memory,
      this.config.minimum.memory,
    );
    // Feedback floors (an OOM kill, heavy throttling) hold even against explicit amounts: a limit known to fail is not granted again.
    const floorNotes = this.applyFloors(image, user, request.ts, cpu.amount, memory.amount, { raiseMemoryRequest: true });
    const explicitOnly = request.request.cpu !== undefined && request.request.memory !== undefined;
    const level: AllocationLevel = explicitOnly ? "explicit" : resolved.level;
    const gpus = request.request.gpus ?? Math.ceil(resolved.profile?.resources.gpu_util?.request ?? 0);
    const base: AllocationDecision = {
      requestId: request.requestId,
      image,
      user,
      ok: true,
      reason: "ok",
      message: "",
      node: this.node,
      level,
      profileVersion: resolved.profile?.version ?? null,
      cpu: cpu.amount,
      memory: memory.amount,
      gpus,
      netEgressBytesPerSecond: request.request.netEgress ?? null,
      priorityMultiplier: multipliers.cpu,
      scaled: false,
      ts: request.ts,
    };
    const describe = () => {
      const parts = [
        level === "default"
          ? `no profile for (${image}, ${user}) or its fallbacks yet: default amounts`
          : level === "explicit"
            ? "explicit amounts from the request"
            : `profile level ${level} (${resolved.profile!.image}, ${resolved.profile!.user}), version ${resolved.profile!.version}`,
      ];
      if (firstSight) parts.push(`first request for (${image}, ${user}): profiling starts with this run`);
      if (resolved.level === "image") parts.push(`user factor cpu ${resolved.userFactor.cpu.toFixed(3)}, memory ${resolved.userFactor.memory.toFixed(3)}`);
      if (multipliers.cpu !== 1 || multipliers.memory !== 1) parts.push(`priority multipliers cpu ×${multipliers.cpu}, memory ×${multipliers.memory}`);
      parts.push(...floorNotes);
      return parts.join("; ");
    };

    base.message = describe();
    const attempt = () => this.tryReserve(base, request.ts);
    let outcome = attempt();
    if (outcome.ok) return base;
    let scalerError: string | null = null;
    try {
      const added = await this.scaler({ node: this.node, shortfall: outcome.shortfall, image, user, requestId: request.requestId });
      base.scaled = true;
      if (added.cpu > 0 || added.memory > 0 || added.gpus > 0) {
        this.extraCapacity = {
          cpu: this.extraCapacity.cpu + added.cpu,
          memory: this.extraCapacity.memory + added.memory,
          gpus: this.extraCapacity.gpus + added.gpus,
        };
        base.message = `${describe()}; scaler added ${added.cpu} cores, ${added.memory} bytes, ${added.gpus} GPUs`;
        outcome = attempt();
        if (outcome.ok) return base;
      }
    } catch (error) {
      base.scaled = true;
      scalerError = errorMessage(error);
    }
    const short = outcome.shortfall;
    const missing = [
      short.cpu > 0 ? `${short.cpu.toFixed(3)} cores` : null,
      short.memory > 0 ? `${Math.ceil(short.memory)} bytes of memory` : null,
      short.gpus > 0 ? `${short.gpus} GPUs` : null,
    ].filter(Boolean);
    return {
      ...base,
      ok: false,
      reason: "capacity",
      message: `node ${this.node} lacks ${missing.join(", ")}${scalerError ? `; scaler failed: ${scalerError}` : ""}; ${describe()}`,
    };
  }

  /** What the decision reserves on this node, held until `leaseSeconds` after `nowMs`. */
  private reservation(decision: AllocationDecision, nowMs: number): ActiveAllocation & { decision: AllocationDecision } {
    return {
      requestId: decision.requestId,
      node: this.node,
      cpuCores: decision.cpu!.request,
      memoryBytes: decision.memory!.request,
      gpus: decision.gpus,
      expiresAt: nowMs + this.leaseMs,
      decision,
    };
  }

  /** Reserves the decision's requests if they fit; otherwise says what is missing. */
  private tryReserve(decision: AllocationDecision, nowMs: number): { ok: boolean; shortfall: Inventory } {
    const record = this.reservation(decision, nowMs);
    const capacity = this.capacity();
    return this.store.allocateAtomically<{ ok: boolean; shortfall: Inventory }>(this.node, nowMs, (active: ActiveAllocation[]) => {
      const used = active.reduce(
        (sum, a) => ({ cpu: sum.cpu + a.cpuCores, memory: sum.memory + a.memoryBytes, gpus: sum.gpus + a.gpus }),
        { cpu: 0, memory: 0, gpus: 0 },
      );
      const shortfall = {
        cpu: Math.max(0, used.cpu + record.cpuCores - capacity.cpu),
        memory: Math.max(0, used.memory + record.memoryBytes - capacity.memory),
        gpus: Math.max(0, used.gpus + record.gpus - capacity.gpus),
      };
      if (shortfall.cpu > 1e-9 || shortfall.memory > 0 || shortfall.gpus > 0) return { result: { ok: false, shortfall }, record: null };
      return { result: { ok: true, shortfall }, record };
    });
  }

  /**
   * What a new run of (image, user) would get, without reserving anything
   * or marking the pair seen: the admission webhook's question (the
   * scheduler, not this node, decides where the pod runs). Null when augur
   * knows nothing better than the defaults.
   */
  recommend(image: string, user: string, nowMs: number): { level: AllocationLevel; profileVersion: number; cpu: AllocatedResource; memory: AllocatedResource } | null {
    const resolved = this.resolve(image, user);
    if (resolved.level === "default") return null;
    const multipliers = this.multipliers(image, user, null);
    const cpu = this.amount(resolved.profile!.resources.cpu, undefined, this.config.defaults.cpu, resolved.userFactor.cpu, multipliers.cpu, this.config.minimum.cpu).amount;
    const memory = this.amount(resolved.profile!.resources.mem, undefined, this.config.defaults.memory, resolved.userFactor.memory, multipliers.memory, this.config.minimum.memory).amount;
    this.applyFloors(image, user, nowMs, cpu, memory, { raiseMemoryRequest: false });
    return { level: resolved.level, profileVersion: resolved.profile!.version, cpu, memory };
  }

  /**
   * Raises limits to the pair's feedback floors still in force; says what it
   * raised. With `raiseMemoryRequest`, a raised memory limit raises the
   * reservation too (memory at an OOM kill was the whole limit).
   */
  private applyFloors(image: string, user: string, nowMs: number, cpu: AllocatedResource, memory: AllocatedResource, options: { raiseMemoryRequest: boolean }): string[] {
    const notes: string[] = [];
    for (const floor of this.store.floors(image, user, nowMs, this.config.feedback.floorHours * 3_600_000)) {
      const target = floor.resource === "mem" ? memory : cpu;
      if (target.limit >= floor.floor) continue;
      notes.push(`${floor.resource === "mem" ? "memory" : "cpu"} limit raised to ${floor.resource === "mem" ? Math.ceil(floor.floor) : floor.floor.toFixed(3)} after ${floor.reason}`);
      target.limit = floor.floor;
      if (floor.resource === "mem" && options.raiseMemoryRequest) target.request = Math.max(target.request, floor.floor);
    }
    return notes;
  }

  release(requestId: string): boolean {
    return this.store.releaseAllocation(requestId);
  }

  /** How long an allocation holds capacity unless renewed or released (ms). */
  get leaseMs(): number {
    return this.config.leaseSeconds * 1000;
  }

  /**
   * A caller still holds what an allocation reserved: its lease runs on to
   * `leaseSeconds` from `nowMs`. Returns the new expiry, or null when no
   * allocation with that id is live (released, or lapsed: capacity it held
   * may have gone to others since, so it must be asked for again).
   */
  extend(requestId: string, nowMs: number): number | null {
    return this.store.extendAllocation(requestId, nowMs, nowMs + this.leaseMs);
  }

  /**
   * A run still holds what its allocation reserved: the lease runs on to
   * `leaseSeconds` from `nowMs`, and an allocation whose lease lapsed (a
   * process paused longer than the lease) is recorded again, since the run
   * uses those resources whether or not it was counted.
   */
  renew(decision: AllocationDecision, nowMs: number): void {
    this.store.renewAllocation(this.reservation(decision, nowMs));
  }

  /**
   * A run of (image, user) was OOM-killed at `limitBytes`: its next runs get
   * at least max(limit + 100 MiB, limit × 1.2) (VPA RecordOOM, ANCHORS §1.6).
   */
  recordOom(image: string, user: string, limitBytes: number, nowMs: number): number {
    const { oomBumpUpRatio, oomMinBumpUpBytes, floorHours } = this.config.feedback;
    const needed = Math.max(limitBytes + oomMinBumpUpBytes, limitBytes * oomBumpUpRatio);
    return this.store.raiseFloor(image, user, "mem", needed, `an OOM kill at ${Math.round(limitBytes)} bytes`, nowMs, floorHours * 3_600_000).floor;
  }

  /** A run of (image, user) was throttled most of the time at `limitCores`: raise its CPU limit. */
  recordThrottling(image: string, user: string, limitCores: number, nowMs: number): number {
    const { cpuRaiseFactor, floorHours } = this.config.feedback;
    return this.store.raiseFloor(image, user, "cpu", limitCores * cpuRaiseFactor, `heavy throttling at ${limitCores.toFixed(3)} cores`, nowMs, floorHours * 3_600_000).floor;
  }
}
