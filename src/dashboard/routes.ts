import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply } from "fastify";
import { z } from "zod";
import type { AllocationEngine } from "../allocate/engine.js";
import { validateId } from "../core/keys.js";
import type { ProfileStore } from "../store/profile-store.js";
import type { DashboardFeed, FeedChange } from "./feed.js";
import { ReportDirectory } from "./reports.js";
import type { NodeView, PairDetail } from "./types.js";

export interface DashboardDependencies {
  feed: DashboardFeed;
  engine: AllocationEngine;
  store: ProfileStore;
  node: string;
  /** Backtest results to list, if configured. */
  reports: ReportDirectory | null;
  now: () => number;
  /** The built front-end (dist/web); found next to this module when not given. */
  assetsDir?: string;
  /** Milliseconds between live-update messages (changes in between are merged). */
  pushEveryMs?: number;
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json",
  ".svg": "image/svg+xml",
};

/** The dashboard's own pages may load only what they ship and talk only to this origin. */
const UI_POLICY = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'";
/** Backtest reports are inline SVG and styles, no scripts: sandboxed all the same. */
const REPORT_POLICY = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const filterQuery = z
  .object({
    image: z.string().max(512).optional(),
    user: z.string().max(512).optional(),
    limit: z.coerce.number().int().min(1).max(5_000).optional(),
  })
  .strict();

function problem(reply: FastifyReply, status: number, reason: string, message: string) {
  return reply.code(status).send({ ok: false, reason, message });
}

/** The built assets, read once: requests pick from this table and never name a path. */
function loadAssets(dir: string): Map<string, { body: Buffer; type: string }> {
  const assets = new Map<string, { body: Buffer; type: string }>();
  if (!existsSync(dir)) return assets;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const type = TYPES[extname(name)];
    if (type && statSync(path).isFile()) assets.set(name, { body: readFileSync(path), type });
  }
  return assets;
}

export function defaultAssetsDir(): string {
  // dist/src/dashboard/routes.js → dist/web
  return fileURLToPath(new URL("../../web/", import.meta.url));
}

/**
 * The web dashboard: the built front-end at /ui/, its JSON under
 * /v1/dashboard, and live updates as server-sent events. Read only: nothing
 * here changes state, so no token is asked for.
 */
export function registerDashboard(app: FastifyInstance, deps: DashboardDependencies): void {
  const assetsDir = deps.assetsDir ?? defaultAssetsDir();
  const assets = loadAssets(assetsDir);
  const streams = new Set<FastifyReply["raw"]>();

  app.get("/", async (_request, reply) => reply.redirect("/ui/"));
  app.get("/ui", async (_request, reply) => reply.redirect("/ui/"));
  const serveAsset = async (name: string, reply: FastifyReply) => {
    const asset = assets.get(name);
    if (!asset) {
      if (assets.size === 0) return problem(reply, 503, "unavailable", `the dashboard is not built (no assets in ${assetsDir}): run npm run build`);
      return problem(reply, 404, "not-found", `no dashboard file ${JSON.stringify(name.slice(0, 80))}`);
    }
    return reply.header("content-type", asset.type).header("content-security-policy", UI_POLICY).header("x-content-type-options", "nosniff").header("cache-control", "no-cache").send(asset.body);
  };
  app.get("/ui/", async (_request, reply) => serveAsset("index.html", reply));
  app.get<{ Params: { file: string } }>("/ui/:file", async (request, reply) => serveAsset(request.params.file, reply));

  const query = (raw: unknown, reply: FastifyReply) => {
    const parsed = filterQuery.safeParse(raw);
    if (!parsed.success) {
      void problem(reply, 400, "invalid", parsed.error.issues.map((i) => `${i.path.join(".") || "query"}: ${i.message}`).join("; "));
      return null;
    }
    return parsed.data;
  };

  app.get("/v1/dashboard/summary", async () => ({ node: deps.node, now: deps.now(), profiles: deps.store.countProfiles(), ...deps.feed.stats(), reports: deps.reports !== null }));

  app.get("/v1/dashboard/pairs", async (request, reply) => {
    const filter = query(request.query, reply);
    return filter ? deps.feed.listPairs(filter) : reply;
  });

  app.get<{ Params: { image: string; user: string } }>("/v1/dashboard/pairs/:image/:user", async (request, reply) => {
    const image = validateId("image", request.params.image);
    const user = validateId("user", request.params.user);
    const series = deps.feed.pair(image, user);
    // What the next allocation of this pair would be based on, and that level's forecast when it is not the pair's own.
    const resolved = deps.engine.resolve(image, user);
    const fallback = resolved.profile && resolved.level !== "exact" ? { image: resolved.profile.image, user: resolved.profile.user, forecast: deps.feed.pair(resolved.profile.image, resolved.profile.user)?.forecast ?? [] } : null;
    if (!series && !resolved.profile) return problem(reply, 404, "not-found", `nothing known about (${image}, ${user}) yet`);
    const detail: PairDetail = {
      image,
      user,
      nextLevel: resolved.level,
      userFactor: resolved.userFactor,
      profile: deps.store.getProfile(image, user),
      usage: series?.usage ?? [],
      forecast: series?.forecast ?? [],
      allocations: series?.allocations ?? [],
      fallback,
    };
    return detail;
  });

  app.get("/v1/dashboard/anomalies", async (request, reply) => {
    const filter = query(request.query, reply);
    return filter ? { anomalies: deps.feed.listAnomalies(filter) } : reply;
  });

  app.get("/v1/dashboard/nodes", async () => {
    const capacity = deps.engine.capacity();
    const live = deps.store.liveAllocations(deps.node, deps.now());
    const allocated = { cpu: 0, memory: 0, gpus: 0 };
    for (const allocation of live) {
      allocated.cpu += allocation.cpuCores;
      allocated.memory += allocation.memoryBytes;
      allocated.gpus += allocation.gpus;
    }
    const seen = deps.feed.nodesSeen();
    // Capacity is known for this node; other nodes show the decisions they published.
    const nodes: NodeView[] = [{ node: deps.node, local: true, capacity, allocated, live: live.length, ...(seen.get(deps.node) ?? { decisions: 0, refused: 0, last: 0 }) }];
    for (const [node, decisions] of seen) if (node !== deps.node) nodes.push({ node, local: false, capacity: null, allocated: null, live: null, ...decisions });
    return { nodes };
  });

  app.get("/v1/dashboard/reports", async () => (deps.reports ? { ...deps.reports.list(), configured: true } : { reports: [], refused: [], configured: false }));

  app.get<{ Params: { name: string } }>("/v1/dashboard/reports/:name", async (request, reply) => {
    if (!deps.reports) return problem(reply, 404, "not-found", "no reports directory configured (dashboard.reports)");
    const result = deps.reports.result(request.params.name);
    return result ?? problem(reply, 404, "not-found", `no report ${JSON.stringify(request.params.name)}`);
  });

  app.get<{ Params: { name: string } }>("/v1/dashboard/reports/:name/html", async (request, reply) => {
    if (!deps.reports) return problem(reply, 404, "not-found", "no reports directory configured (dashboard.reports)");
    const html = deps.reports.html(request.params.name);
    if (html === null) return problem(reply, 404, "not-found", `no HTML report for ${JSON.stringify(request.params.name)}`);
    return reply.header("content-type", "text/html; charset=utf-8").header("content-security-policy", REPORT_POLICY).header("x-content-type-options", "nosniff").send(html);
  });

  /**
   * Live updates: one server-sent event per interval naming the pairs that
   * changed and whether anomalies or allocations did; the page fetches what
   * it shows again. A comment line keeps idle connections open. What a slow
   * client has not read bounds what is queued for it: one event at most.
   */
  app.get("/v1/dashboard/stream", (request, reply) => {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
    raw.write("retry: 2000\n\n");
    const pairs = new Set<string>();
    let anomalies = false;
    let allocations = false;
    let dirty = false;
    const onChange = (change: FeedChange) => {
      dirty = true;
      if (change.kind === "anomaly" || change.kind === "actuation") anomalies = true;
      if (change.kind === "allocation") allocations = true;
      if (change.kind !== "actuation" && pairs.size < 100) pairs.add(`${change.image}|${change.user}`);
    };
    deps.feed.on("change", onChange);
    let beats = 0;
    const timer = setInterval(() => {
      beats++;
      // A client that does not read gets nothing more until it has: what changed meanwhile
      // is merged into the next event (it says what to fetch again, not what it is).
      if (raw.writableNeedDrain) return;
      if (dirty) {
        raw.write(`event: update\ndata: ${JSON.stringify({ pairs: [...pairs], anomalies, allocations })}\n\n`);
        pairs.clear();
        anomalies = allocations = dirty = false;
      } else if (beats % 30 === 0) raw.write(": keep-alive\n\n");
    }, deps.pushEveryMs ?? 500);
    streams.add(raw);
    const close = () => {
      clearInterval(timer);
      deps.feed.off("change", onChange);
      streams.delete(raw);
    };
    request.raw.on("close", close);
  });

  // Open event streams would keep the server from closing.
  app.addHook("preClose", async () => {
    for (const raw of streams) raw.end();
  });
}
