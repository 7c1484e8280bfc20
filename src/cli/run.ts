import type { Command } from "commander";
import { startEmbeddedPipeline } from "../pipeline/embedded.js";
import { DEFAULT_CONFIG, fail, loadFromFlags } from "./common.js";

export function registerRun(program: Command): void {
  program
    .command("run")
    .description("run the whole embedded pipeline on this host and serve the HTTP API")
    .option("-c, --config <file>", "pipeline config", DEFAULT_CONFIG)
    .option("--data-dir <dir>", "override the config's dataDir")
    .option("--listen <host:port>", "override the config's api.listen")
    .action(async (flags: { config: string; dataDir?: string; listen?: string }) => {
      let running;
      let node: string;
      try {
        const pipeline = loadFromFlags(flags);
        node = pipeline.node;
        running = await startEmbeddedPipeline(pipeline);
      } catch (error) {
        fail(error);
      }
      const versions = running.collectors.map((c) => c.cgroupVersion ?? "none").join(",");
      process.stderr.write(
        `augur: serving http://${running.address.replace(/^http:\/\//, "")} (node ${node}); ` +
          `data in ${running.store.dataDir}; write token from ${running.tokenSource}; cgroups ${versions || "off"}\n`,
      );
      const shutdown = (signal: string) => {
        process.stderr.write(`augur: ${signal}, stopping\n`);
        running.stop().then(
          () => process.exit(0),
          (error: unknown) => fail(error),
        );
      };
      process.once("SIGINT", () => shutdown("SIGINT"));
      process.once("SIGTERM", () => shutdown("SIGTERM"));
    });
}
