import type { Command } from "commander";
import { readModels } from "../backtest/run.js";
import { ConfigError, ValidationError } from "../core/errors.js";
import { PEAK_LIKE, type Resource } from "../core/types.js";
import { ENSEMBLE_MODEL, ensembleModelConfig } from "../forecast/ensemble-model.js";
import { parseGlobalModels } from "../forecast/global-learners.js";
import { ProfileStore } from "../store/profile-store.js";
import { DEFAULT_CONFIG, fail, loadFromFlags } from "./common.js";

export function registerModels(program: Command): void {
  const models = program.command("models").description("what the live forecast stage's pairs share: global models, overrun calibration");
  models
    .command("load")
    .argument("<file>", "models written by augur backtest --save-models")
    .description(
      "start the pipeline's forecasts from what a backtest's augur policy learned (on augur history export's trace, say): " +
        "its global models and its calibration (overrun rates pooled over all pairs, and the overrun price: where poolAcrossPairs starts), saved in the data directory, " +
        "used from the forecast stage's next start (the models retrained live from there where learnGlobalModel is true); " +
        "load while the pipeline is stopped: a running stage writes its own over it",
    )
    .option("-c, --config <file>", "pipeline config", DEFAULT_CONFIG)
    .option("--data-dir <dir>", "override the config's dataDir")
    .action((file: string, flags) => {
      try {
        const pipeline = loadFromFlags(flags);
        const { forecast } = pipeline.config;
        if (forecast.model !== ENSEMBLE_MODEL) throw new ConfigError(`${pipeline.path}: forecast.model is ${forecast.model}, which has no global model (${ENSEMBLE_MODEL} has)`);
        const loaded = parseGlobalModels(readModels(file).augur ?? undefined);
        const models = Object.keys(loaded?.models ?? {}).sort();
        const calibrated = Object.keys(loaded?.calibration ?? {}).sort();
        if (!loaded || models.length + calibrated.length === 0) throw new ValidationError(`${file} holds nothing augur learned (its backtest ran without the augur policy, or on too few steps)`);
        // A calibration steers overruns to one service level: a pipeline that pools overruns must aim at the same.
        const { memoryMissRate, rateMissRate, poolAcrossPairs } = ensembleModelConfig.parse(forecast.options);
        for (const [resource, calibration] of poolAcrossPairs ? Object.entries(loaded.calibration ?? {}) : []) {
          const [flag, wanted] = PEAK_LIKE.has(resource as Resource) ? ["memory", memoryMissRate] : ["rate", rateMissRate];
          if (calibration!.targetMissRate !== wanted) {
            throw new ConfigError(`${file}: ${resource} was calibrated at a miss rate of ${calibration!.targetMissRate}, ${pipeline.path} aims at ${wanted} (forecast.options.${flag}MissRate): run the backtest with --${flag}-miss-rate ${wanted}`);
          }
        }
        const store = new ProfileStore(pipeline.dataDir);
        try {
          store.putSharedModelState(ENSEMBLE_MODEL, loaded);
        } finally {
          store.close();
        }
        process.stdout.write(JSON.stringify({ models, calibrated, poolAcrossPairs, model: ENSEMBLE_MODEL, dataDir: pipeline.dataDir }) + "\n");
      } catch (error) {
        fail(error);
      }
    });
}
