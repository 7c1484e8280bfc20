import { createHash, timingSafeEqual } from "node:crypto";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { z } from "zod";
import type { AllocationEngine } from "../allocate/engine.js";
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
    if (error instanceof AugurError) return problem(reply, error.code === "invalid" ? 400 : 500, error.code, error.message);
    const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
    const reason = status === 413 ? "too-large" : status === 415 ? "unsupported-media-type" : status === 400 ? "invalid" : "error";
    return problem(reply, status, reason, status === 500 ? "internal error" : error.message);
  });
  app.setNotFoundHandler((request, reply) => problem(reply, 404, "not-found", `no route ${request.method} ${request.url.split("?")[0]}`));

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

  app.delete<{ Params: { id: string } }>("/v1/allocations/:id", { preHandler: requireToken }, async (request, reply) => {
    return deps.engine.release(request.params.id) ? reply.code(204).send() : problem(reply, 404, "not-found", "no live allocation with that id");
  });

  return app;
}
