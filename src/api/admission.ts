import { z } from "zod";
import type { AllocationEngine } from "../allocate/engine.js";
import { errorMessage } from "../core/errors.js";
import { validateId } from "../core/keys.js";

export const admissionConfig = z
  .object({
    /** Pod label that names the user; without it, the pod's service account (namespace/name). */
    userLabel: z.string().min(1).max(317).default("augur.io/user"),
    /** Pod label or annotation that names the image for all containers; default: each container's image. */
    imageLabel: z.string().min(1).max(317).default("augur.io/image"),
    /** Leave containers that already set requests alone. */
    respectExisting: z.boolean().default(true),
  })
  .strict();
export type AdmissionConfig = z.infer<typeof admissionConfig>;

interface Container {
  name?: string;
  image?: string;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}

interface JsonPatchOperation {
  op: "add" | "replace";
  path: string;
  value: unknown;
}

/** JSON Pointer escaping (RFC 6901): `~` → `~0`, `/` → `~1`. */
const pointer = (segment: string) => segment.replace(/~/g, "~0").replace(/\//g, "~1");

/** Kubernetes quantities: CPU in whole millicores (rounded up), memory in whole bytes. */
export function cpuQuantity(cores: number): string {
  return `${Math.max(1, Math.ceil(cores * 1000))}m`;
}
export function memoryQuantity(bytes: number): string {
  return String(Math.max(1, Math.ceil(bytes)));
}

export interface AdmissionOutcome {
  review: Record<string, unknown>;
  patched: boolean;
}

/**
 * The mutating admission webhook: for a pod being created, each container's
 * requests and limits from its `(image, user)` profile (user from a label or
 * the service account). It never fails a pod: a request it cannot read, a
 * pair it knows nothing about, or any error of its own is `allowed: true`
 * without a patch (with a warning saying why).
 */
export function admit(body: unknown, engine: AllocationEngine | null, config: AdmissionConfig, nowMs: number): AdmissionOutcome {
  const review = (body ?? {}) as { apiVersion?: string; request?: Record<string, unknown> };
  const request = (review.request ?? {}) as {
    uid?: unknown;
    operation?: string;
    namespace?: string;
    kind?: { kind?: string };
    object?: { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: { serviceAccountName?: string; containers?: Container[] } };
  };
  const uid = typeof request.uid === "string" ? request.uid : "";
  const answer = (patch: JsonPatchOperation[] | null, warning?: string): AdmissionOutcome => ({
    review: {
      apiVersion: "admission.k8s.io/v1",
      kind: "AdmissionReview",
      response: {
        uid,
        allowed: true,
        ...(patch && patch.length > 0 ? { patchType: "JSONPatch", patch: Buffer.from(JSON.stringify(patch)).toString("base64") } : {}),
        ...(warning ? { warnings: [`augur: ${warning}`.slice(0, 512)] } : {}),
      },
    },
    patched: patch !== null && patch.length > 0,
  });
  try {
    if (request.operation !== "CREATE" || request.kind?.kind !== "Pod") return answer(null);
    if (!engine) return answer(null, "no allocation engine on this node: pod left as it is");
    const pod = request.object ?? {};
    const labels = pod.metadata?.labels ?? {};
    const annotations = pod.metadata?.annotations ?? {};
    const serviceAccount = pod.spec?.serviceAccountName ?? "default";
    const user = validateId("user", labels[config.userLabel] ?? `${request.namespace ?? "default"}/${serviceAccount}`);
    const containers = Array.isArray(pod.spec?.containers) ? pod.spec!.containers! : [];
    const patch: JsonPatchOperation[] = [];
    const levels: string[] = [];
    containers.forEach((container, index) => {
      const image = labels[config.imageLabel] ?? annotations[config.imageLabel] ?? container.image;
      if (typeof image !== "string") return;
      const existing = container.resources ?? {};
      if (config.respectExisting && existing.requests && Object.keys(existing.requests).length > 0) return;
      const recommended = engine.recommend(validateId("image", image), user, nowMs);
      if (!recommended) return;
      levels.push(`${container.name ?? index}=${recommended.level}`);
      const base = `/spec/containers/${index}/resources`;
      if (container.resources === undefined) patch.push({ op: "add", path: base, value: {} });
      for (const [kind, amounts] of [
        ["requests", { cpu: cpuQuantity(recommended.cpu.request), memory: memoryQuantity(recommended.memory.request) }],
        ["limits", { cpu: cpuQuantity(recommended.cpu.limit), memory: memoryQuantity(recommended.memory.limit) }],
      ] as const) {
        if (existing[kind] === undefined) patch.push({ op: "add", path: `${base}/${kind}`, value: amounts });
        else for (const [name, value] of Object.entries(amounts)) patch.push({ op: "add", path: `${base}/${kind}/${pointer(name)}`, value });
      }
    });
    if (patch.length === 0) return answer(null);
    if (pod.metadata?.annotations === undefined) patch.push({ op: "add", path: "/metadata/annotations", value: {} });
    patch.push({ op: "add", path: `/metadata/annotations/${pointer("augur.io/profile-levels")}`, value: levels.join(",") });
    return answer(patch);
  } catch (error) {
    return answer(null, `no recommendation: ${errorMessage(error)}`);
  }
}
