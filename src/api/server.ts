import { createHash, timingSafeEqual } from "node:crypto";
import { PassThrough } from "node:stream";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { z } from "zod";
import type { ActuateConfig } from "../actuate/config.js";
import type { Launcher, RunEvent, RunStatus } from "../actuate/launcher.js";
import type { AllocationEngine } from "../allocate/engine.js";
import { registerDashboard, type DashboardDependencies } from "../dashboard/routes.js";
import { admissionConfig, admit, type AdmissionConfig } from "./admission.js";
import { parseAllocationRequest } from "../allocate/engine.js";
import { AugurError } from "../core/errors.js";
import { validateId } from "../core/keys.js";
import type { Metrics } from "../core/metrics.js";
import type { ProfileStore } from "../store/profile-store.js";

export interface ApiDependencies {
  store: ProfileStore;
  engine: AllocationEngine;
  metrics: Metrics;
  node: string;
  token: string;
  bodyLimitBytes: number;
  /** Extra facts for /healthz (transport lag, collectors). */
  health?: () => Record<string, unknown>;
  /** Event time for requests: the API is an edge, so wall time. */
  now?: () => number;
  /** The Kubernetes mutating admission webhook's settings (POST /v1/admission). */
  admission?: AdmissionConfig;
  /** The launcher behind POST /v1/runs, or why there is none on this host. */
  launcher?: { launcher: Launcher | null; reason: string | null; runs: ActuateConfig["runs"] };
  /** The web dashboard at /ui/ and its JSON under /v1/dashboard, when enabled. */
  dashboard?: Omit<DashboardDependencies, "engine" | "store" | "node" | "now">;
}

const runBody = z
  .object({
    image: z.string(),
    user: z.string(),
    request: z.record(z.string(), z.unknown()).optional(),
    priorityClass: z.string().min(1).max(64).optional(),
    requestId: z.string().optional(),
    /** Program (an absolute path the configuration allows) and arguments. */
    command: z.array(z.string().max(64 * 1024)).min(1).max(4096),
    env: z.record(z.string().max(256), z.string().max(64 * 1024)).optional(),
  })
  .strict();

function publicStatus(status: RunStatus): RunStatus {
  return { ...status, events: [...status.events] };
}

/** A run in the list: its status without its events and output (up to `eventsKept` and `outputBytes` each, for a thousand runs). */
function runSummary(status: RunStatus): Omit<RunStatus, "events" | "output"> {
  const { events: _events, output: _output, ...summary } = status;
  return summary;
}

const profileQuery = z
  .object({
    image: z.string().optional(),
    user: z.string().optional(),
    level: z.enum(["exact", "image", "user", "global"]).optional(),
    limit: z.coerce.number().int().min(1).max(10_000).optional(),
  })
  .strict();

const digest = (text: string) => createHash("sha256").update(text).digest();

function problem(reply: FastifyReply, status: number, reason: string, message: string) {
  return reply.code(status).send({ ok: false, reason, message });
}

/** The HTTP API. Reads are open; writes need the bearer token. */
export function buildApi(deps: ApiDependencies): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: deps.bodyLimitBytes,
    routerOptions: { maxParamLength: 1024 },
    // Undecodable URLs and the like: same error shape as every other answer.
    frameworkErrors: (error, _request, reply) => problem(reply, 400, "invalid", error.message),
  });
  const now = deps.now ?? Date.now;
  const expected = digest(deps.token);
  app.removeContentTypeParser("text/plain"); // bodies are JSON; anything else is 415

  const requireToken = async (request: FastifyRequest, reply: FastifyReply) => {
    const header = request.headers.authorization ?? "";
    const match = /^Bearer (.+)$/.exec(header);
    if (!match || !timingSafeEqual(digest(match[1]!), expected)) {
      return problem(reply, 401, "unauthorized", "writes need 'Authorization: Bearer <token>'");
    }
  };

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, _request, reply) => {
    if (error instanceof AugurError && error.code === "transient") return problem(reply.header("retry-after", "5"), 503, "unavailable", error.message);
    if (error instanceof AugurError) return problem(reply, error.code === "invalid" ? 400 : 500, error.code, error.message);
    const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
    const reason = status === 413 ? "too-large" : status === 415 ? "unsupported-media-type" : status === 400 ? "invalid" : "error";
    return problem(reply, status, reason, status === 500 ? "internal error" : error.message);
  });
  app.setNotFoundHandler((request, reply) => problem(reply, 404, "not-found", `no route ${request.method} ${request.url.split("?")[0]}`));

  if (deps.dashboard) registerDashboard(app, { ...deps.dashboard, engine: deps.engine, store: deps.store, node: deps.node, now });

  app.get("/healthz", async () => ({ status: "ok", node: deps.node, ...(deps.health?.() ?? {}) }));

  app.get("/metrics", async (_request, reply) => {
    deps.metrics.profiles.set(deps.store.countProfiles());
    return reply.header("content-type", deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });

  app.get("/v1/profiles", async (request, reply) => {
    const parsed = profileQuery.safeParse(request.query);
    if (!parsed.success) return problem(reply, 400, "invalid", parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "));
    return { profiles: deps.store.listProfiles(parsed.data) };
  });

  app.get<{ Params: { image: string; user: string } }>("/v1/profiles/:image/:user", async (request, reply) => {
    const image = validateId("image", request.params.image, { allowWildcard: true });
    const user = validateId("user", request.params.user, { allowWildcard: true });
    const profile = deps.store.getProfile(image, user);
    if (!profile) return problem(reply, 404, "not-found", `no profile for (${image}, ${user}) yet`);
    return profile;
  });

  app.post("/v1/allocations", { preHandler: requireToken }, async (request, reply) => {
    const allocationRequest = parseAllocationRequest(request.body, now());
    const decision = await deps.engine.allocate(allocationRequest);
    return reply.code(decision.ok ? 201 : 409).send(decision);
  });

  app.get<{ Params: { id: string } }>("/v1/allocations/:id", async (request, reply) => {
    const decision = deps.store.getAllocation(request.params.id);
    return decision ? decision : problem(reply, 404, "not-found", "no live allocation with that id");
  });

  app.post<{ Params: { id: string } }>("/v1/allocations/:id/renew", { preHandler: requireToken }, async (request, reply) => {
    const expiresAt = deps.engine.extend(request.params.id, now());
    return expiresAt === null ? problem(reply, 404, "not-found", "no live allocation with that id (released or lapsed: allocate again)") : { requestId: request.params.id, expiresAt };
  });

  app.delete<{ Params: { id: string } }>("/v1/allocations/:id", { preHandler: requireToken }, async (request, reply) => {
    return deps.engine.release(request.params.id) ? reply.code(204).send() : problem(reply, 404, "not-found", "no live allocation with that id");
  });

  /**
   * Kubernetes mutating admission webhook (AdmissionReview v1). No bearer
   * token: the API server authenticates by TLS in front of it. Always 200
   * and allowed: true; a patch only when a profile has something to say.
   */
  const admission = deps.admission ?? admissionConfig.parse({});
  app.post("/v1/admission", async (request, reply) => {
    const outcome = admit(request.body, deps.engine, admission, now());
    deps.metrics.allocations.inc({ reason: outcome.patched ? "admission-patched" : "admission-unchanged", level: "admission" });
    return reply.code(200).send(outcome.review);
  });

  const runs = deps.launcher;
  const launcherOr503 = (reply: FastifyReply): Launcher | null => {
    if (!runs?.launcher) {
      void problem(reply, 503, "unavailable", `this node cannot launch runs: ${runs?.reason ?? "no launcher configured"}`);
      return null;
    }
    return runs.launcher;
  };

  app.post("/v1/runs", { preHandler: requireToken }, async (request, reply) => {
    if (!runs?.runs.api) return problem(reply, 403, "forbidden", "starting runs over the API is disabled (actuate.runs.api: false)");
    const launcher = launcherOr503(reply);
    if (!launcher) return reply;
    const parsed = runBody.safeParse(request.body);
    if (!parsed.success) return problem(reply, 400, "invalid", parsed.error.issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`).join("; "));
    const body = parsed.data;
    if (!runs.runs.commands.includes(body.command[0]!)) {
      return problem(reply, 403, "forbidden", `command ${JSON.stringify(body.command[0])} is not in actuate.runs.commands`);
    }
    try {
      const run = await launcher.start({
        image: body.image,
        user: body.user,
        request: body.request as never,
        priorityClass: body.priorityClass,
        requestId: body.requestId,
        argv: body.command,
        env: body.env,
        stdio: "capture",
      });
      return reply.code(201).send(publicStatus(run.status));
    } catch (error) {
      if (error instanceof AugurError && error.code === "capacity") return reply.code(409).send({ ok: false, reason: "capacity", message: error.message, decision: error.input });
      throw error;
    }
  });

  app.get("/v1/runs", async () => ({ runs: [...(runs?.launcher?.runs.values() ?? [])].map((run) => runSummary(run.status)) }));

  app.get<{ Params: { id: string } }>("/v1/runs/:id", async (request, reply) => {
    const run = runs?.launcher?.get(request.params.id);
    return run ? publicStatus(run.status) : problem(reply, 404, "not-found", "no run with that id on this node");
  });

  /** The run's events as newline-delimited JSON, live until it exits. */
  app.get<{ Params: { id: string } }>("/v1/runs/:id/events", async (request, reply) => {
    const run = runs?.launcher?.get(request.params.id);
    if (!run) return problem(reply, 404, "not-found", "no run with that id on this node");
    const stream = new PassThrough();
    const write = (event: RunEvent) => stream.write(JSON.stringify(event) + "\n");
    for (const event of run.status.events) write(event);
    if (run.status.state === "exited" || run.status.state === "failed") stream.end();
    else {
      const onEvent = (event: RunEvent) => {
        write(event);
        if (event.type === "exited" || event.type === "failed") {
          run.off("event", onEvent);
          stream.end();
        }
      };
      run.on("event", onEvent);
      request.raw.on("close", () => run.off("event", onEvent));
    }
    return reply.type("application/x-ndjson").send(stream);
  });

  app.delete<{ Params: { id: string } }>("/v1/runs/:id", { preHandler: requireToken }, async (request, reply) => {
    const launcher = launcherOr503(reply);
    if (!launcher) return reply;
    const run = launcher.get(request.params.id);
    if (!run) return problem(reply, 404, "not-found", "no run with that id on this node");
    void launcher.stop(run.id);
    return reply.code(202).send({ ok: true, runId: run.id, state: run.status.state });
  });

  return app;
}
