import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import type { FastifyInstance } from "fastify";
import { allocationConfig } from "../../src/allocate/config.js";
import { AllocationEngine } from "../../src/allocate/engine.js";
import { createScaler } from "../../src/allocate/scaler.js";
import { admissionConfig, admit } from "../../src/api/admission.js";
import { buildApi } from "../../src/api/server.js";
import { Metrics } from "../../src/core/metrics.js";
import type { Profile, ResourcePrediction } from "../../src/core/types.js";
import { ProfileStore } from "../../src/store/profile-store.js";
import { T0, tempDir } from "../helpers.js";
import { parseAllDocuments } from "yaml";
import { pipelineConfig } from "../../src/config/pipeline.js";
import { STAGE_NAMES } from "../../src/pipeline/stage-names.js";

const fixtures = fileURLToPath(new URL("../../../test/fixtures/k8s/", import.meta.url));
const MIB = 2 ** 20;
const prediction = (request: number, limit: number): ResourcePrediction => ({ p50: request, p90: request, p95: request, p99: limit, max: limit, request, limit, model: "m", sampleCount: 50 });

function decodePatch(review: Record<string, unknown>): Array<{ op: string; path: string; value: unknown }> | null {
  const response = review.response as { patch?: string; patchType?: string };
  if (!response.patch) return null;
  assert.equal(response.patchType, "JSONPatch");
  return JSON.parse(Buffer.from(response.patch, "base64").toString("utf8"));
}

describe("Kubernetes mutating admission webhook", () => {
  let store: ProfileStore;
  let engine: AllocationEngine;
  let app: FastifyInstance;
  let cleanup: () => void;
  const config = admissionConfig.parse({});
  const podCreate = () => JSON.parse(readFileSync(fixtures + "pod-create.json", "utf8"));

  before(async () => {
    const temp = tempDir();
    cleanup = temp.cleanup;
    store = new ProfileStore(temp.dir);
    const allocation = allocationConfig.parse({ inventory: { cpu: 4, memory: 8 * 2 ** 30, gpus: 0 }, minimum: { cpu: 0.01, memory: 1 } });
    const metrics = new Metrics();
    engine = new AllocationEngine(allocation, store, { cpu: 4, memory: 8 * 2 ** 30, gpus: 0 }, "node-a", createScaler(allocation.scaler), metrics);
    const profile = (image: string, user: string): Profile => ({
      image, user, level: "exact", version: T0, firstSeen: T0, windows: 10, oomKills: 0,
      resources: { cpu: prediction(0.25, 0.5), mem: prediction(100 * MIB, 150 * MIB) },
    });
    store.writeProfiles([profile("nginx", "default/default"), profile("nginx", "web-team")].map((p) => ({ profile: p, modelState: { model: "m", stateVersion: 1, state: {} } })));
    app = buildApi({ store, engine, metrics, node: "node-a", token: "test-token-0123456789abcdef", bodyLimitBytes: 1 << 20, now: () => T0 });
    await app.ready();
  });
  after(async () => {
    await app.close();
    store.close();
    cleanup();
  });

  it("patches a real pod's requests and limits from its (image, service account) profile", async () => {
    const response = await app.inject({ method: "POST", url: "/v1/admission", payload: podCreate() });
    assert.equal(response.statusCode, 200);
    const review = response.json();
    assert.equal(review.apiVersion, "admission.k8s.io/v1");
    assert.equal(review.kind, "AdmissionReview");
    assert.equal(review.response.uid, "4378f340-83a6-4c8c-88bc-9b8788db02d2");
    assert.equal(review.response.allowed, true);
    assert.deepEqual(decodePatch(review), [
      { op: "add", path: "/spec/containers/0/resources/requests", value: { cpu: "250m", memory: String(100 * MIB) } },
      { op: "add", path: "/spec/containers/0/resources/limits", value: { cpu: "500m", memory: String(150 * MIB) } },
      { op: "add", path: "/metadata/annotations", value: {} },
      { op: "add", path: "/metadata/annotations/augur.io~1profile-levels", value: "nginx=exact" },
    ]);
  });

  it("takes the user from the pod's label, and leaves containers that set requests alone", () => {
    const body = podCreate();
    body.request.object.metadata.labels["augur.io/user"] = "web-team";
    body.request.object.spec.containers.push({ name: "sidecar", image: "nginx", resources: { requests: { cpu: "1" } } });
    const patch = decodePatch(admit(body, engine, config, T0).review)!;
    assert.ok(patch.every((op) => !op.path.startsWith("/spec/containers/1")));
    assert.equal(patch.find((op) => op.path.endsWith("profile-levels"))!.value, "nginx=exact");
  });

  it("answers allowed with no patch when it has nothing to say, and for anything but a pod's creation", () => {
    const unknown = podCreate();
    unknown.request.object.spec.containers[0].image = "never-seen:1";
    for (const body of [unknown, { ...podCreate(), request: { ...podCreate().request, operation: "DELETE" } }, { ...podCreate(), request: { ...podCreate().request, kind: { kind: "Service" } } }]) {
      const { review } = admit(body, engine, config, T0);
      assert.deepEqual(review.response, { uid: body.request.uid, allowed: true });
    }
    const { review } = admit(podCreate(), null, config, T0);
    assert.equal((review.response as { allowed: boolean }).allowed, true);
    assert.match((review.response as { warnings: string[] }).warnings[0]!, /no allocation engine/);
  });

  it("never fails a pod, whatever the body", async () => {
    const hostile: unknown[] = [null, "pod", 42, [], {}, { request: null }, { request: { operation: "CREATE", kind: { kind: "Pod" }, object: { spec: { containers: "nginx" } } } }, { request: { uid: 7, operation: "CREATE", kind: { kind: "Pod" }, object: { metadata: { labels: { "augur.io/user": "a\u0000b" } }, spec: { containers: [{ image: "nginx" }] } } } }];
    for (const body of hostile) {
      const { review, patched } = admit(body, engine, config, T0);
      assert.equal((review.response as { allowed: boolean }).allowed, true, JSON.stringify(body));
      assert.equal(patched, false);
    }
    const response = await app.inject({ method: "POST", url: "/v1/admission", payload: { request: { uid: "u", operation: "CREATE", kind: { kind: "Pod" }, object: { spec: { containers: [{ image: "x".repeat(600) }] } } } } });
    assert.equal(response.statusCode, 200);
    assert.equal(response.json().response.allowed, true);
  });
});

describe("Kubernetes manifests", () => {
  const deploy = fileURLToPath(new URL("../../../deploy/kubernetes/", import.meta.url));
  const docs = (file: string) => parseAllDocuments(readFileSync(deploy + file, "utf8")).map((doc) => doc.toJS() as Record<string, any>);

  it("registers the webhook on pod creation, v1 reviews, path /v1/admission, failing open", () => {
    const [config] = docs("webhook.yaml");
    assert.equal(config!.kind, "MutatingWebhookConfiguration");
    const webhook = config!.webhooks[0];
    assert.deepEqual(webhook.admissionReviewVersions, ["v1"]);
    assert.equal(webhook.failurePolicy, "Ignore");
    assert.equal(webhook.sideEffects, "None");
    assert.equal(webhook.clientConfig.service.path, "/v1/admission");
    assert.deepEqual(webhook.rules[0].operations, ["CREATE"]);
    assert.deepEqual(webhook.rules[0].resources, ["pods"]);
  });

  it("runs only stages that exist, with a pipeline file augur accepts", () => {
    const all = docs("stages.yaml");
    const stages = all.filter((d) => d.kind === "Deployment" || d.kind === "DaemonSet").flatMap((d) => d.spec.template.spec.containers.filter((c: any) => c.args?.[0] === "stage").map((c: any) => c.args[1]));
    assert.ok(stages.length >= 6);
    for (const stage of stages) assert.ok((STAGE_NAMES as readonly string[]).includes(stage), stage);
    const map = all.find((d) => d.kind === "ConfigMap")!;
    const parsed = pipelineConfig.safeParse(parseAllDocuments(map.data["kafka.yaml"])[0]!.toJS());
    assert.ok(parsed.success, JSON.stringify(parsed.error?.issues));
    // Forecast processes share partitions only through the model-state changelog.
    const forecast = all.find((d) => d.kind === "Deployment" && d.spec.template.spec.containers.some((c: any) => c.args?.[0] === "stage" && c.args[1] === "forecast"));
    assert.ok(forecast, "a forecast Deployment");
    if ((forecast.spec.replicas ?? 1) > 1) assert.equal(parsed.data!.transport.kind === "kafka" && parsed.data!.transport.changelog, true, "more than one forecast replica needs transport.changelog");
    // Remediation acts where the workload runs: the stage that does it (actuate) is on every node.
    const onEveryNode = all.filter((d) => d.kind === "DaemonSet").flatMap((d) => d.spec.template.spec.containers.map((c: any) => c.args?.[1]));
    assert.ok(onEveryNode.includes("actuate") && onEveryNode.includes("collect"), JSON.stringify(onEveryNode));
    assert.ok(!onEveryNode.includes("detect"), "detection scales by partitions, not by node");
  });
});
