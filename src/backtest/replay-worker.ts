// A worker thread of `replayInParallel`: replays each shard it is sent (one
// policy on one resource) and sends back what it scored.
import { parentPort } from "node:worker_threads";
import { AugurError, errorMessage } from "../core/errors.js";
import { initTensorflow } from "../forecast/global-model.js";
import type { ShardMessage, ShardTask } from "./parallel.js";
import { POLICIES } from "./policies/index.js";
import { replay } from "./replay.js";

const port = parentPort;
if (!port) throw new Error("replay-worker.js runs as a worker thread of a backtest");

port.on("message", async (task: ShardTask) => {
  const send = (message: ShardMessage) => port.postMessage(message);
  try {
    await initTensorflow();
    const { policy: name, resource } = task.shard;
    const policy = POLICIES[name]!({ ...task.context, resources: [resource] });
    const replayed = replay(task.trace, {
      policies: [policy],
      resources: [resource],
      train: task.train,
      sampleWorkloads: task.sampleWorkloads,
      onProgress: (done, total) => send({ kind: "progress", done, total }),
    });
    send({ kind: "done", replayed, ...(task.exportModels && policy.exportModels ? { models: policy.exportModels() } : {}) });
  } catch (error) {
    // Bad input (models, options) stays a usage error when the main thread rethrows it.
    send({ kind: "failed", message: errorMessage(error), invalid: error instanceof AugurError && (error.code === "invalid" || error.code === "config") });
  }
});
