#!/usr/bin/env node
import { Command, CommanderError } from "commander";
import { registerAllocate } from "./allocate.js";
import { registerBacktest } from "./backtest.js";
import { EXIT, fail } from "./common.js";
import { registerDetect } from "./detect.js";
import { registerExec } from "./exec.js";
import { rerunWithLargerHeap } from "./heap.js";
import { registerHistory } from "./history.js";
import { registerModels } from "./models.js";
import { registerReplay, registerStage, registerTopics } from "./distributed.js";
import { registerProfiles } from "./profiles.js";
import { registerRun } from "./run.js";

// A trace command re-runs itself with room for the trace's pairs (src/cli/heap.ts).
const rerun = await rerunWithLargerHeap();
if (rerun !== null) process.exit(rerun);

const program = new Command()
  .name("augur")
  .description("learns what each (image, user) needs, predicts it, allocates it")
  .version("0.1.0")
  .showHelpAfterError("(run with --help for usage)")
  .exitOverride();

registerRun(program);
registerAllocate(program);
registerExec(program);
registerProfiles(program);
registerBacktest(program);
registerDetect(program);
registerStage(program);
registerTopics(program);
registerReplay(program);
registerHistory(program);
registerModels(program);
for (const command of program.commands) command.exitOverride();

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // --help and --version exit 0; unknown options, missing values and the like exit 2.
    process.exit(error.exitCode === 0 ? EXIT.ok : EXIT.usage);
  }
  fail(error);
}
