import type { Command } from "commander";
import type { Profile } from "../core/types.js";
import { ProfileStore } from "../store/profile-store.js";
import { DEFAULT_CONFIG, fail, loadFromFlags } from "./common.js";

function formatProfiles(profiles: Profile[]): string {
  if (profiles.length === 0) return "no profiles";
  const rows = [["IMAGE", "USER", "LEVEL", "WINDOWS", "CPU p50", "CPU req", "MEM p50 MiB", "MEM req MiB", "VERSION"]];
  for (const p of profiles) {
    const cpu = p.resources.cpu;
    const mem = p.resources.mem;
    rows.push([
      p.image,
      p.user,
      p.level,
      String(p.windows),
      cpu ? cpu.p50.toFixed(3) : "-",
      cpu ? cpu.request.toFixed(3) : "-",
      mem ? (mem.p50 / 2 ** 20).toFixed(1) : "-",
      mem ? (mem.request / 2 ** 20).toFixed(1) : "-",
      new Date(p.version).toISOString(),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

export function registerProfiles(program: Command): void {
  program
    .command("profiles")
    .description("list learned profiles (all levels), optionally for one image or user")
    .option("--image <image>", "only this image ('*' for user-level profiles)")
    .option("--user <user>", "only this user ('*' for image-level profiles)")
    .option("--json", "print JSON")
    .option("-c, --config <file>", "pipeline config", DEFAULT_CONFIG)
    .option("--data-dir <dir>", "override the config's dataDir")
    .action((flags) => {
      let profiles: Profile[];
      try {
        const store = new ProfileStore(loadFromFlags(flags).dataDir);
        try {
          profiles = store.listProfiles({ image: flags.image, user: flags.user });
        } finally {
          store.close();
        }
      } catch (error) {
        fail(error);
      }
      process.stdout.write((flags.json ? JSON.stringify({ profiles }) : formatProfiles(profiles)) + "\n");
    });
}
