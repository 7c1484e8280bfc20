import { z } from "zod";
import type { CgroupConnector } from "../actuate/cgroup.js";
import type { Launcher } from "../actuate/launcher.js";
import type { ProcessConnector } from "../actuate/process.js";
import { reportActuation } from "../actuate/report.js";
import { ChangeLimiter } from "../actuate/safety.js";
import type { TcConnector } from "../actuate/tc.js";
import { regexSchema } from "../config/load.js";
import { ActuationError, errorMessage } from "../core/errors.js";
import type { Metrics } from "../core/metrics.js";
import type { ActuationResult } from "../core/types.js";
import type { ProfileStore } from "../store/profile-store.js";
import { TOPICS, type Consumer, type Transport } from "../transport/topic.js";
import { ANOMALY_TYPES, type Severity } from "./detector.js";
import type { AnomalyEvent } from "./monitor.js";

export const ACTIONS = ["alert", "throttle", "freeze", "kill", "isolate-network"] as const;
export type RemediationAction = (typeof ACTIONS)[number];
const SEVERITIES = ["info", "warning", "critical"] as const;

const regex = regexSchema;
const matchList = z.object({ images: z.array(regex).default([]), users: z.array(regex).default([]) }).strict().default({});

export const remediationConfig = z
  .object({
    /** Everything is only reported (ActuationResults with dryRun: true). */
    dryRun: z.boolean().default(false),
    /** What happens when no rule matches. */
    defaultAction: z.enum(ACTIONS).default("alert"),
    rules: z
      .array(
        z
          .object({
            type: z.enum([...ANOMALY_TYPES, "any"]).default("any"),
            /** The least severity the rule applies to. */
            minSeverity: z.enum(SEVERITIES).default("info"),
            action: z.enum(ACTIONS),
            /** Escalation: if the workload is still there after `afterSeconds`, do this too. */
            then: z.object({ action: z.enum(ACTIONS), afterSeconds: z.number().min(0).max(86_400) }).strict().optional(),
            dryRun: z.boolean().optional(),
          })
          .strict(),
      )
      .default([]),
    /** Never acted on (alerts still go out). */
    exempt: matchList,
    /** If given, only these are acted on. */
    only: z.object({ images: z.array(regex).optional(), users: z.array(regex).optional() }).strict().default({}),
    /** Actions (other than alert) per sliding hour: in all, and per workload. */
    maxActionsPerHour: z.number().int().min(0).max(100_000).default(20),
    maxActionsPerWorkloadPerHour: z.number().int().min(0).max(1000).default(3),
    /** An anomaly detected longer ago than this (a backlog read after a restart) is only reported. */
    maxAgeSeconds: z.number().positive().max(7 * 86_400).default(600),
  })
  .strict();
export type RemediationConfig = z.infer<typeof remediationConfig>;

export interface RemediationTargets {
  cgroups: CgroupConnector | null;
  processes: ProcessConnector | null;
  tc: TcConnector | null;
  launcher: Launcher | null;
  store: ProfileStore | null;
}

const rank = (severity: Severity) => SEVERITIES.indexOf(severity);

/**
 * Acts on anomalies as far as policy allows: picks the rule for the
 * anomaly's type and severity (default: alert), checks the exempt and only
 * lists and the rate limits, finds what the workload is (a run of the
 * launcher, a cgroup or a process) and applies the action through the
 * connectors, which refuse anything outside augur's cgroup root. Every
 * action, done, refused or dry, becomes an ActuationResult with the reason.
 */
export class Remediator {
  private readonly recent: number[] = [];
  private readonly perWorkload: ChangeLimiter;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly config: RemediationConfig,
    private readonly targets: RemediationTargets,
    private readonly node: string,
    private readonly report: (result: ActuationResult) => Promise<void>,
    private readonly now: () => number = Date.now,
  ) {
    this.perWorkload = new ChangeLimiter(config.maxActionsPerWorkloadPerHour);
  }

  /** The action policy picks for an anomaly, and whether it is a dry run. */
  decide(event: AnomalyEvent): { action: RemediationAction; dryRun: boolean; then?: { action: RemediationAction; afterSeconds: number }; reason: string } {
    const rule = this.config.rules.find((r) => (r.type === "any" || r.type === event.type) && rank(event.severity) >= rank(r.minSeverity));
    const action = rule?.action ?? this.config.defaultAction;
    const dryRun = this.config.dryRun || (rule?.dryRun ?? false);
    const { exempt, only } = this.config;
    if (action !== "alert") {
      const age = (this.now() - event.detectedTs) / 1000;
      if (age > this.config.maxAgeSeconds) {
        return { action: "alert", dryRun, reason: `detected ${Math.round(age)} s ago, more than remediation.maxAgeSeconds (${this.config.maxAgeSeconds}): too old to act on` };
      }
      if (exempt.images.some((r) => r.test(event.image)) || exempt.users.some((r) => r.test(event.user))) {
        return { action: "alert", dryRun, reason: `(${event.image}, ${event.user}) is exempt from remediation` };
      }
      if ((only.images && !only.images.some((r) => r.test(event.image))) || (only.users && !only.users.some((r) => r.test(event.user)))) {
        return { action: "alert", dryRun, reason: `(${event.image}, ${event.user}) is not in remediation.only` };
      }
    }
    return { action, dryRun, then: rule?.then, reason: rule ? `rule ${event.type}/${rule.minSeverity}+ → ${action}` : `no rule for ${event.type}: ${action}` };
  }

  private allowed(workload: string, nowMs: number): string | null {
    const hourAgo = nowMs - 3_600_000;
    while (this.recent.length > 0 && this.recent[0]! <= hourAgo) this.recent.shift();
    if (this.recent.length >= this.config.maxActionsPerHour) return `rate limit: ${this.config.maxActionsPerHour} actions in the last hour`;
    if (!this.perWorkload.allows(workload, nowMs)) return `rate limit: ${this.config.maxActionsPerWorkloadPerHour} actions on this workload in the last hour`;
    this.recent.push(nowMs);
    this.perWorkload.record(workload, nowMs);
    return null;
  }

  /**
   * Acts on an anomaly of a workload of this node's; another node's is left to that
   * node's remediator (a pid or a cgroup path here would name something else).
   */
  async handle(event: AnomalyEvent): Promise<void> {
    if (event.host !== this.node) return;
    const decision = this.decide(event);
    await this.act(event, decision.action, decision.dryRun, decision.reason);
    if (decision.then && decision.action !== "alert") {
      const { action, afterSeconds } = decision.then;
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        const why = `${decision.reason}, then ${action} after ${afterSeconds} s`;
        // Only if the workload is still there: one that ended meanwhile is not acted on again.
        if (this.present(event.workload)) void this.act(event, action, decision.dryRun, why);
        else void this.act(event, "alert", decision.dryRun, `${why}: not done, the workload has ended`);
      }, afterSeconds * 1000);
      this.timers.add(timer);
    }
  }

  /**
   * Whether a workload is still on this node: a run still running, a cgroup still
   * there, the same process. Where that cannot be told, the action is tried and says why.
   */
  private present(workload: string): boolean {
    if (workload.startsWith("run:")) return this.targets.launcher?.get(workload.slice(4))?.status.state === "running";
    try {
      const target = this.resolve(workload);
      if (target.kind === "pid") return this.targets.processes?.isSame(target.pid, target.startTicks) ?? true;
      return target.kind !== "cgroup" || (this.targets.cgroups?.exists(target.path) ?? true);
    } catch {
      return true;
    }
  }

  private async act(event: AnomalyEvent, action: RemediationAction, dryRun: boolean, why: string): Promise<void> {
    const reason = `${event.type} (${event.severity}) on ${event.workload}: ${event.message}; ${why}`;
    const result = (ok: boolean, detail: string, details: Record<string, unknown> = {}) =>
      this.report({ node: this.node, workload: event.workload, connector: connectorOf(action), action, ok, dryRun, reason: detail ? `${reason}; ${detail}` : reason, details: JSON.stringify(details), ts: this.now() });
    if (action === "alert") return result(true, "");
    const limited = this.allowed(event.workload, this.now());
    if (limited) return result(false, limited);
    try {
      const target = this.resolve(event.workload);
      if (dryRun) return result(true, "dry run: nothing changed", { target });
      // What is done to a run of augur's launcher is one of the run's events too (its owner sees it there).
      const onRun = () => {
        const run = target.kind === "run" ? this.targets.launcher?.get(target.runId) : undefined;
        run?.record({ type: "remediated", ts: this.now(), action, reason, ...(action === "throttle" ? { limits: run.status.limits } : {}) });
      };
      switch (action) {
        case "freeze":
          this.need(this.targets.cgroups, "cgroup").setFrozen(this.cgroupOf(target), true);
          onRun();
          return result(true, "", { target });
        case "kill": {
          const processes = this.need(this.targets.processes, "process");
          if (target.kind !== "pid") {
            const killed = processes.killCgroup(target.path);
            onRun();
            return result(true, "", { target, killed });
          }
          // The pid is the process detected only while it has that start time: a pid reused since is another's.
          const signalled = processes.signal(target.pid, "SIGKILL", target.startTicks);
          return result(true, signalled ? "" : "the process had already ended", { target, killed: signalled ? [target.pid] : [] });
        }
        case "throttle": {
          const profile = this.targets.store?.getProfile(event.image, event.user);
          const cores = profile?.resources.cpu?.limit ?? null;
          if (cores === null) throw new ActuationError(`no CPU profile for (${event.image}, ${event.user}) to throttle to`, event);
          // A run's through its launcher, whose feedback loop would otherwise give the CPU back.
          const limit = Math.max(0.01, cores);
          const changes = target.kind === "run" ? this.targets.launcher!.restrict(target.runId, limit, reason) : this.need(this.targets.cgroups, "cgroup").apply(this.cgroupOf(target), { cpuLimitCores: limit });
          onRun();
          return result(true, "", { target, changes });
        }
        case "isolate-network": {
          const run = target.kind === "run" ? this.targets.launcher?.get(target.runId) : undefined;
          const network = run?.status.network;
          if (!network) throw new ActuationError(`${event.workload} has no network namespace of augur's to isolate`, event);
          await this.need(this.targets.tc, "tc").setIsolated(network, true);
          onRun();
          return result(true, "", { target, namespace: network.namespace });
        }
      }
    } catch (error) {
      return result(false, errorMessage(error));
    }
  }

  private need<T>(connector: T | null, name: string): T {
    if (!connector) throw new ActuationError(`no ${name} connector is configured on this node`);
    return connector;
  }

  /** What a workload id names: a launcher run, a cgroup, or a process. */
  private resolve(workload: string): { kind: "run"; runId: string; path: string } | { kind: "cgroup"; path: string } | { kind: "pid"; pid: number; startTicks: number } {
    if (workload.startsWith("run:")) {
      const runId = workload.slice(4);
      const run = this.targets.launcher?.get(runId);
      if (!run || run.status.state !== "running") throw new ActuationError(`run ${runId} is not running on this node`, workload);
      return { kind: "run", runId, path: run.status.cgroup };
    }
    if (workload.startsWith("cgroup:")) return { kind: "cgroup", path: workload.slice(7) };
    // As the host collector names a process: pid:<pid>@<start time in clock ticks since boot>.
    const pid = /^pid:(\d{1,10})@(\d{1,20})$/.exec(workload);
    if (pid) return { kind: "pid", pid: Number(pid[1]), startTicks: Number(pid[2]) };
    throw new ActuationError(`workload ${JSON.stringify(workload.slice(0, 80))} is not one this node can act on`, workload);
  }

  private cgroupOf(target: ReturnType<Remediator["resolve"]>): string {
    if (target.kind === "pid") throw new ActuationError(`process ${target.pid} is not in a cgroup of augur's: only alert, kill (refused outside augur's root) apply`, target);
    return target.path;
  }

  stop(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }
}

/**
 * Remediation on one node: every anomaly of `augur.anomalies` (a group of this
 * node's own, so each node sees all of them, from the newest on its first start)
 * goes to the node's remediator, which acts on its own workloads only; what it
 * does goes to `augur.actuations`. Detection scales by partitions across nodes;
 * acting is done where the workload runs.
 */
export class RemediateStage {
  private consumer: Consumer | null = null;
  private readonly remediator: Remediator;

  constructor(
    private readonly transport: Transport,
    config: RemediationConfig,
    private readonly node: string,
    metrics: Metrics,
    targets: RemediationTargets,
  ) {
    this.remediator = new Remediator(config, targets, node, (result) => reportActuation(result, metrics, transport));
  }

  async start(): Promise<void> {
    this.consumer = await this.transport.consume<AnomalyEvent>(TOPICS.anomalies, { group: `augur-remediate-${this.node}`, from: "latest" }, async (batch) => {
      for (const record of batch) {
        await this.remediator.handle(record.value).catch((error) => console.error(`augur: remediation of ${record.value.workload}: ${errorMessage(error)}`));
      }
    });
  }

  async stop(): Promise<void> {
    await this.consumer?.stop();
    this.consumer = null;
    this.remediator.stop();
  }
}

function connectorOf(action: RemediationAction): string {
  return action === "kill" ? "process" : action === "isolate-network" ? "tc" : action === "alert" ? "alert" : "cgroup";
}
