import Fastify from "fastify";
import type { Metrics } from "../core/metrics.js";

/** `/metrics` (Prometheus text format) and `/healthz` for a stage without the HTTP API. */
export async function startMetricsServer(metrics: Metrics, listen: string, health: () => Record<string, unknown>): Promise<{ address: string; close(): Promise<void> }> {
  const app = Fastify({ logger: false });
  app.get("/healthz", async () => ({ status: "ok", ...health() }));
  app.get("/metrics", async (_request, reply) => reply.header("content-type", metrics.registry.contentType).send(await metrics.registry.metrics()));
  const at = listen.lastIndexOf(":");
  const address = await app.listen({ host: listen.slice(0, at).replace(/^\[|\]$/g, ""), port: Number(listen.slice(at + 1)) });
  return { address, close: () => app.close() };
}
