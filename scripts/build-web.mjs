// Builds the dashboard's front-end into dist/web: web/src/main.ts bundled
// with uPlot by esbuild, uPlot's and the dashboard's styles in one file,
// and the page. `npm run build` type-checks web/ with tsc first.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "dist", "web");
mkdirSync(out, { recursive: true });

await build({
  entryPoints: [join(root, "web", "src", "main.ts")],
  bundle: true,
  format: "esm",
  target: ["chrome110", "firefox110", "safari16"],
  minify: true,
  sourcemap: true,
  outfile: join(out, "app.js"),
  logLevel: "warning",
});

const require = createRequire(import.meta.url);
const uplotCss = readFileSync(require.resolve("uplot/dist/uPlot.min.css"), "utf8");
writeFileSync(join(out, "app.css"), `${uplotCss}\n${readFileSync(join(root, "web", "style.css"), "utf8")}`);
copyFileSync(join(root, "web", "index.html"), join(out, "index.html"));
