import type { Detector } from "./detector.js";
import { LeakDetector } from "./leak.js";
import { MinerDetector } from "./miner.js";
import { NetworkBurstDetector } from "./network-burst.js";
import { NeverSeenDetector } from "./never-seen.js";
import { RunawayDetector } from "./runaway.js";
import { SpikeDetector } from "./spike.js";

/** Every detector, in the order they are asked (the first finding of a resource at a step wins). */
export function createDetectors(): Detector[] {
  return [new NeverSeenDetector(), new MinerDetector(), new RunawayDetector(), new LeakDetector(), new NetworkBurstDetector(), new SpikeDetector()];
}
