// The command line: every command and how an error ends the process.
import { Command, CommanderError } from "commander";
import { registerAllocate } from "./allocate.js";
import { registerBacktest } from "./backtest.js";
import { EXIT, fail } from "./common.js";
import { registerDetect } from "./detect.js";
import { registerExec } from "./exec.js";
import { registerHistory } from "./history.js";
import { registerModels } from "./models.js";
import { registerReplay, registerStage, registerTopics } from "./distributed.js";
import { registerProfiles } from "./profiles.js";
import { registerRun } from "./run.js";

/** Parses `argv` and runs the command it names. */
export async function runCli(argv: readonly string[]): Promise<void> {
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
    await program.parseAsync([...argv]);
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version exit 0; unknown options, missing values and the like exit 2.
      process.exit(error.exitCode === 0 ? EXIT.ok : EXIT.usage);
    }
    fail(error);
  }
}
