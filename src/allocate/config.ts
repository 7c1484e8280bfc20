import { z } from "zod";
import { USER_FACTOR_BOUNDS } from "../core/user-factor.js";

const MIB = 1024 * 1024;
const cores = z.number().finite().nonnegative().max(1e5);
const bytes = z.number().finite().nonnegative().max(1e15);
const multiplier = z.number().finite().positive().max(100);

const weights = z
  .object({
    /** A priority class defined under `classes`. */
    class: z.string().min(1).optional(),
    cpuMultiplier: multiplier.optional(),
    memoryMultiplier: multiplier.optional(),
  })
  .strict();

export const scalerConfig = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("none") }).strict(),
  z
    .object({
      kind: z.literal("command"),
      /** Program and arguments, run without a shell. The request is JSON on stdin; the answer JSON on stdout. */
      argv: z.array(z.string().min(1)).min(1),
      timeoutSeconds: z.number().positive().max(600).default(30),
    })
    .strict(),
  z
    .object({
      kind: z.literal("webhook"),
      url: z.string().url().refine((url) => /^https?:\/\//.test(url), "http or https"),
      timeoutSeconds: z.number().positive().max(600).default(30),
      /** Sent as a bearer token, if set. */
      token: z.string().optional(),
    })
    .strict(),
]);
export type ScalerConfig = z.infer<typeof scalerConfig>;

export const allocationConfig = z
  .object({
    /** What a pair with no usable profile at any level gets. */
    defaults: z
      .object({
        cpu: z.object({ request: cores, limit: cores }).strict().default({ request: 0.5, limit: 1 }),
        memory: z.object({ request: bytes, limit: bytes }).strict().default({ request: 512 * MIB, limit: 1024 * MIB }),
      })
      .strict()
      .default({}),
    /** Floors for predicted amounts. VPA pod-recommendation-min-cpu-millicores 25 and min-memory-mb 250 (ANCHORS §1.2). */
    minimum: z
      .object({ cpu: cores.default(0.025), memory: bytes.default(250 * MIB) })
      .strict()
      .default({}),
    /** A profile level is used only once it has folded in this many windows. */
    minWindows: z.number().int().min(1).max(1_000_000).default(3),
    /** Bounds of the user factor that scales an (image, *) profile for a user. */
    userFactor: z.object({ min: multiplier.default(USER_FACTOR_BOUNDS.min), max: multiplier.default(USER_FACTOR_BOUNDS.max) }).strict().default({}),
    priorities: z
      .object({
        classes: z.record(z.string().min(1), z.object({ cpuMultiplier: multiplier.default(1), memoryMultiplier: multiplier.default(1) }).strict()).default({}),
        images: z.record(z.string().min(1), weights).default({}),
        users: z.record(z.string().min(1), weights).default({}),
      })
      .strict()
      .default({}),
    /** Node inventory; `auto` reads this host (cores, memory, GPUs via nvidia-smi). */
    inventory: z
      .union([
        z.literal("auto"),
        z.object({ cpu: cores, memory: bytes, gpus: z.number().int().nonnegative().max(1024).default(0) }).strict(),
      ])
      .default("auto"),
    /** Fraction of the node kept free for the system. */
    reserveFraction: z.number().min(0).lt(1).default(0),
    /** How long an allocation holds capacity unless released. */
    leaseSeconds: z.number().int().positive().max(30 * 86400).default(3600),
    scaler: scalerConfig.default({ kind: "none" }),
    /**
     * Feedback from runs: after an OOM kill the pair's memory limit stays at
     * least max(limit + 100 MiB, limit × 1.2) (VPA RecordOOM, ANCHORS §1.6);
     * after heavy throttling its CPU limit at least limit × cpuRaiseFactor.
     * Floors hold for this long after the newest event (VPA's memory
     * aggregation interval is 24 h, ANCHORS §1.1).
     */
    feedback: z
      .object({
        floorHours: z.number().positive().max(24 * 365).default(24),
        oomBumpUpRatio: z.number().min(1).max(10).default(1.2),
        oomMinBumpUpBytes: bytes.default(100 * MIB),
        cpuRaiseFactor: z.number().min(1).max(10).default(1.5),
      })
      .strict()
      .default({}),
  })
  .strict();
export type AllocationConfig = z.infer<typeof allocationConfig>;
