import { isAbsolute } from "node:path";
import { z } from "zod";
import { cgroupConnectorConfig } from "./cgroup.js";
import { gpuConnectorConfig } from "./gpu.js";
import { processConnectorConfig } from "./process.js";
import { safetyConfig } from "./safety.js";
import { tcConnectorConfig } from "./tc.js";

/** One actuator connector file (connectors/*.yaml), chosen by `kind`. */
export const actuatorConfig = z.discriminatedUnion("kind", [cgroupConnectorConfig, tcConnectorConfig, gpuConnectorConfig, processConnectorConfig]);
export type ActuatorConfig = z.infer<typeof actuatorConfig>;

/** The `actuate` section of a pipeline: connectors, guard rails, the launcher's loop. */
export const actuateConfig = z
  .object({
    /** Connector configs (connectors/*.yaml), relative to the pipeline file. */
    connectors: z.array(z.string().min(1)).default([]),
    safety: safetyConfig.default({}),
    /** How often the launcher samples each run it started. */
    sampleSeconds: z.number().min(0.1).max(3600).default(1),
    resize: z
      .object({
        /** Resize predicted runs while they run (explicit amounts stay as asked). */
        enabled: z.boolean().default(true),
        /** Grow the memory limit when the working set passes (1 − headroom) × limit, to (1 + headroom) × the larger of the two (never down). */
        memoryHeadroom: z.number().min(0.01).lt(1).default(0.25),
        /** Share of CFS periods throttled in a sample that counts as heavy throttling. */
        heavyThrottleFraction: z.number().gt(0).max(1).default(0.5),
      })
      .strict()
      .default({}),
    runs: z
      .object({
        /** Accept POST /v1/runs (off: the API never starts processes). */
        api: z.boolean().default(false),
        /** Absolute paths of the programs POST /v1/runs may start; nothing else runs. */
        commands: z.array(z.string().refine((path) => isAbsolute(path) && !path.includes("\0"), "an absolute path")).default([]),
        /** Bytes of each run's output kept for GET /v1/runs/:id. */
        outputBytes: z.number().int().min(0).max(16 << 20).default(64 << 10),
        /**
         * Events kept for each run (GET /v1/runs/:id and its event stream):
         * beyond this the oldest after "allocated" and "started" are dropped.
         */
        eventsKept: z.number().int().min(10).max(100_000).default(500),
        /**
         * A run cgroup below the root that holds no process, is older than
         * this and is not one of this process's runs is what a killed augur
         * left: removed, with its run's network namespace when no process
         * is in it and its allocation, when the node's pipeline starts and
         * every half of this (and as runs start, at most that often). Such a
         * run still going keeps its allocation renewed. 0: neither.
         */
        staleAfterSeconds: z.number().min(0).max(30 * 86_400).default(600),
      })
      .strict()
      .default({}),
  })
  .strict();
export type ActuateConfig = z.infer<typeof actuateConfig>;
