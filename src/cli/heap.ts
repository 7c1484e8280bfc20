// V8 caps its heap at about 4 GB whatever the machine holds. A replay keeps
// the trace and every (image, user) pair's state of every policy in memory
// (about 2 KB a pair for VPA's or Autopilot's; augur's 21 KB, or 1–3 KB once
// put away idle): a trace of a few hundred thousand pairs stops with
// "JavaScript heap out of memory" on a machine with memory to spare. The commands that replay a trace so re-run
// themselves with a heap limit of half the machine's memory, unless the user
// chose one.

import { spawn } from "node:child_process";
import { totalmem } from "node:os";
import { getHeapStatistics } from "node:v8";
import { exitStatus } from "../core/exit-status.js";
import { HeldSignals } from "./signals.js";

/** Commands that hold a whole trace and every key's state. */
const TRACE_COMMANDS = new Set(["backtest", "detect", "inject"]);
/** Share of the machine's memory such a command's heap may take. */
export const HEAP_SHARE = 0.5;
/** Set in the re-run process (and by a user who wants none). */
export const HEAP_ENV = "AUGUR_HEAP_RAISED";
const MIB = 2 ** 20;

export interface HeapContext {
  /** The command line after node's own options (`process.argv.slice(2)`). */
  args: readonly string[];
  execArgv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  totalBytes: number;
  heapLimitBytes: number;
}

/** The node option that gives this command a larger heap, or null where it keeps the one it has. */
export function largerHeapOption(context: HeapContext): string | null {
  if (!TRACE_COMMANDS.has(context.args[0] ?? "")) return null;
  if (context.env[HEAP_ENV] !== undefined) return null;
  const chosen = /--max-old-space-size|--max-heap-size/;
  if (context.execArgv.some((option) => chosen.test(option)) || chosen.test(context.env.NODE_OPTIONS ?? "")) return null;
  const target = Math.floor((context.totalBytes * HEAP_SHARE) / MIB);
  if (!(target * MIB > context.heapLimitBytes * 1.25)) return null;
  return `--max-old-space-size=${target}`;
}

/**
 * Runs this command again with a larger heap where `largerHeapOption` says
 * so, and resolves with its exit code (signals sent to this process are
 * passed on to it); null where the command runs here.
 */
export async function rerunWithLargerHeap(): Promise<number | null> {
  const option = largerHeapOption({ args: process.argv.slice(2), execArgv: process.execArgv, env: process.env, totalBytes: totalmem(), heapLimitBytes: getHeapStatistics().heap_size_limit });
  if (option === null) return null;
  // The signals are caught before the re-run starts: one that came between
  // the spawn and the handlers would kill this process alone and leave the re-run.
  const signals = new HeldSignals(["SIGINT", "SIGTERM", "SIGHUP"]);
  const rerun = spawn(process.execPath, [option, ...process.execArgv, ...process.argv.slice(1)], { stdio: "inherit", env: { ...process.env, [HEAP_ENV]: option } });
  signals.handle((signal) => rerun.kill(signal));
  return await new Promise<number>((resolve) => {
    rerun.on("error", (error) => {
      console.error(`augur: cannot re-run with a larger heap (${error.message})`);
      resolve(1);
    });
    rerun.on("exit", (code, signal) => {
      signals.release();
      // Killed by a signal: exit as the shell expects (128 + its number).
      resolve(exitStatus(code, signal ?? "SIGTERM"));
    });
  });
}
