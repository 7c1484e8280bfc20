#!/usr/bin/env node
import { rerunWithLargerHeap } from "./heap.js";

// A trace command re-runs itself with room for the trace's pairs
// (src/cli/heap.ts), before the commands' modules load: the process that
// only waits for the re-run does not load them at all.
const rerun = await rerunWithLargerHeap();
if (rerun !== null) process.exit(rerun);

const { runCli } = await import("./program.js");
await runCli(process.argv);
