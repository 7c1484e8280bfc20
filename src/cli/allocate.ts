import type { Command } from "commander";
import { parseAllocationRequest } from "../allocate/engine.js";
import { ValidationError } from "../core/errors.js";
import type { AllocationDecision } from "../core/types.js";
import { DEFAULT_CONFIG, EXIT, fail, loadFromFlags } from "./common.js";

function positiveNumber(name: string) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!Number.isFinite(parsed) || parsed <= 0) throw new ValidationError(`--${name} must be a positive number, got '${value}'`);
    return parsed;
  };
}

export function formatDecision(decision: AllocationDecision): string {
  const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(3)} GiB`;
  const lines = [
    `${decision.ok ? "allocated" : "refused"}: ${decision.reason} (level ${decision.level})`,
    `  image ${decision.image}  user ${decision.user}  node ${decision.node}  request ${decision.requestId}`,
  ];
  if (decision.cpu) lines.push(`  cpu     request ${decision.cpu.request.toFixed(3)} cores  limit ${decision.cpu.limit.toFixed(3)} cores`);
  if (decision.memory) lines.push(`  memory  request ${gib(decision.memory.request)}  limit ${gib(decision.memory.limit)}`);
  if (decision.gpus) lines.push(`  gpus    ${decision.gpus}`);
  lines.push(`  ${decision.message}`);
  return lines.join("\n");
}

export function registerAllocate(program: Command): void {
  program
    .command("allocate")
    .description("decide what a run of IMAGE by USER gets on this node (profile, fallback or default)")
    .requiredOption("--image <image>", "software image id")
    .requiredOption("--user <user>", "user id")
    .option("--cpu <cores>", "explicit CPU cores (overrides the prediction)", positiveNumber("cpu"))
    .option("--memory <bytes>", "explicit memory in bytes (overrides the prediction)", positiveNumber("memory"))
    .option("--gpus <n>", "GPUs", (v) => {
      if (!/^\d+$/.test(v)) throw new ValidationError(`--gpus must be a whole number, got '${v}'`);
      return Number(v);
    })
    .option("--priority-class <name>", "priority class from the config")
    .option("--request-id <id>", "idempotency id")
    .option("--json", "print the decision as JSON")
    .option("-c, --config <file>", "pipeline config", DEFAULT_CONFIG)
    .option("--data-dir <dir>", "override the config's dataDir")
    .action(async (flags) => {
      let decision: AllocationDecision;
      try {
        const pipeline = loadFromFlags(flags);
        const { openEngine } = await import("../pipeline/embedded.js");
        const { store, engine } = openEngine(pipeline);
        try {
          const request: Record<string, number> = {};
          if (flags.cpu !== undefined) request.cpu = flags.cpu;
          if (flags.memory !== undefined) request.memory = flags.memory;
          if (flags.gpus !== undefined) request.gpus = flags.gpus;
          decision = await engine.allocate(
            parseAllocationRequest(
              { image: flags.image, user: flags.user, request, priorityClass: flags.priorityClass, requestId: flags.requestId },
              Date.now(),
            ),
          );
        } finally {
          store.close();
        }
      } catch (error) {
        fail(error);
      }
      process.stdout.write((flags.json ? JSON.stringify(decision) : formatDecision(decision)) + "\n");
      process.exitCode = decision.ok ? EXIT.ok : EXIT.failed;
    });
}
