import type { Command } from "commander";
import { readModels } from "../backtest/run.js";
import { ConfigError, ValidationError } from "../core/errors.js";
import { ENSEMBLE_MODEL } from "../forecast/ensemble-model.js";
import { parseGlobalModels, savedGlobalModels } from "../forecast/global-learners.js";
import { ProfileStore } from "../store/profile-store.js";
import { DEFAULT_CONFIG, fail, loadFromFlags } from "./common.js";

export function registerModels(program: Command): void {
  const models = program.command("models").description("the global models the live forecast stage learns");
  models
    .command("load")
    .argument("<file>", "models written by augur backtest --save-models")
    .description(
      "start the pipeline's global models from those a backtest learned (on augur history export's trace, say): " +
        "saved in the data directory, used from the forecast stage's next start (and retrained live from there where learnGlobalModel is true)",
    )
    .option("-c, --config <file>", "pipeline config", DEFAULT_CONFIG)
    .option("--data-dir <dir>", "override the config's dataDir")
    .action((file: string, flags) => {
      try {
        const pipeline = loadFromFlags(flags);
        const { forecast } = pipeline.config;
        if (forecast.model !== ENSEMBLE_MODEL) throw new ConfigError(`${pipeline.path}: forecast.model is ${forecast.model}, which has no global model (${ENSEMBLE_MODEL} has)`);
        const loaded = parseGlobalModels(readModels(file).augur ?? undefined);
        const resources = Object.keys(loaded ?? {});
        if (!loaded || resources.length === 0) throw new ValidationError(`${file} holds no trained augur global model (its backtest ran augur on too few steps, or without it)`);
        const store = new ProfileStore(pipeline.dataDir);
        try {
          store.putSharedModelState(ENSEMBLE_MODEL, savedGlobalModels(loaded));
        } finally {
          store.close();
        }
        process.stdout.write(JSON.stringify({ loaded: resources.sort(), model: ENSEMBLE_MODEL, dataDir: pipeline.dataDir }) + "\n");
      } catch (error) {
        fail(error);
      }
    });
}
