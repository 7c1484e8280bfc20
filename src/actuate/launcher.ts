import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import type { AllocationEngine } from "../allocate/engine.js";
import { parseAllocationRequest } from "../allocate/engine.js";
import type { Inventory } from "../allocate/inventory.js";
import type { CgroupReading } from "../collect/cgroup.js";
import { usageOf } from "../collect/gpu.js";
import { countersOf, delta, fillRates, type Counters } from "../collect/host-collector.js";
import { readOwnNetns } from "../collect/proc.js";
import { ActuationError, CapacityError, TransientError, ValidationError, errorMessage } from "../core/errors.js";
import { exitStatus } from "../core/exit-status.js";
import { pairKey } from "../core/keys.js";
import type { Metrics } from "../core/metrics.js";
import { emptySample, validateSample } from "../core/sample.js";
import type { ActuationResult, AllocationDecision, Sample } from "../core/types.js";
import type { ProfileStore } from "../store/profile-store.js";
import { TOPICS, type Transport } from "../transport/topic.js";
import { CgroupConnector, runCgroupName, type CgroupLimits, type Changes } from "./cgroup.js";
import type { ActuateConfig } from "./config.js";
import type { GpuConnector } from "./gpu.js";
import { ProcessConnector } from "./process.js";
import { reportActuation } from "./report.js";
import { ChangeLimiter, checkProposal } from "./safety.js";
import { namespaceOfRunCgroup, type RunNetwork, type TcConnector } from "./tc.js";

/**
 * The only shell augur runs, and it is fixed: the new process writes its own
 * pid into the run's cgroup.procs files (so it is confined before the
 * command's first instruction), then execs the command, which arrives as
 * positional parameters ("$@") and is never parsed by the shell.
 */
const JOIN_AND_EXEC = 'for f in $AUGUR_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done; unset AUGUR_CGROUP_PROCS; exec "$@"';
/** Exit status of the join script when the cgroup could not be joined. */
const JOIN_FAILED = 125;

export interface RunSpec {
  image: string;
  user: string;
  /** Explicit amounts that override the prediction: cores, bytes, GPUs, egress bytes/s. */
  request?: { cpu?: number; memory?: number; gpus?: number; netEgress?: number };
  priorityClass?: string;
  requestId?: string;
  /** Program and arguments. */
  argv: string[];
  env?: Record<string, string>;
  /** inherit: the run shares augur's terminal; capture: its output is kept (the last outputBytes). */
  stdio: "inherit" | "capture";
}

export interface RunExit {
  code: number | null;
  signal: string | null;
  oomKilled: boolean;
  /** Exit status as a shell reports it: the code, or 128 + the signal number. */
  status: number;
}

export interface RunEvent {
  type: "allocated" | "started" | "resized" | "oom" | "throttled" | "remediated" | "exited" | "failed" | "refused";
  ts: number;
  [field: string]: unknown;
}

export interface RunStatus {
  runId: string;
  image: string;
  user: string;
  pid: number | null;
  cgroup: string;
  network: RunNetwork | null;
  decision: AllocationDecision;
  limits: { cpuLimitCores: number | null; memoryLimitBytes: number | null };
  state: "starting" | "running" | "exited" | "failed";
  exit: RunExit | null;
  startedAt: number;
  endedAt: number | null;
  /** The CPU remediation holds the run at (`throttle`), and why; the feedback loop leaves its CPU alone from then on. */
  restricted: { cpuLimitCores: number; reason: string; ts: number } | null;
  /** Oldest first; beyond `actuate.runs.eventsKept` the oldest after "allocated" and "started" are dropped. */
  events: RunEvent[];
  /** Events dropped to keep the list bounded. */
  eventsDropped: number;
  output?: string;
}

export interface LauncherDependencies {
  engine: AllocationEngine;
  store: ProfileStore;
  cgroups: CgroupConnector;
  tc?: TcConnector;
  gpu?: GpuConnector;
  config: ActuateConfig;
  node: string;
  capacity: () => Inventory;
  transport?: Transport;
  metrics?: Metrics;
  now?: () => number;
}

/** How often a spell of heavy throttling renews the CPU floor it raised (it lasts `allocate.feedback.floorHours` from then). */
const FLOOR_RENEW_MS = 60_000;

/** The end of `text` that fits in `bytes` bytes of UTF-8, starting at a whole character. */
export function lastBytes(text: string, bytes: number): string {
  if (text.length * 3 <= bytes) return text; // no UTF-16 unit takes more than 3 bytes (a pair takes 4)
  const encoded = Buffer.from(text, "utf8");
  if (encoded.length <= bytes) return text;
  let start = encoded.length - bytes;
  while (start < encoded.length && (encoded[start]! & 0xc0) === 0x80) start++; // not inside a character
  return encoded.subarray(start).toString("utf8");
}

/** One run the launcher started: its status, its events as they happen, and its end. */
export class Run extends EventEmitter {
  readonly done: Promise<RunExit>;
  private settle!: (exit: RunExit) => void;
  private fail!: (error: Error) => void;
  /** The process augur spawned (the command once it has joined its cgroup and exec'd). */
  private leader: ChildProcess | null = null;

  constructor(
    readonly status: RunStatus,
    private readonly eventsKept = Number.POSITIVE_INFINITY,
  ) {
    super();
    this.done = new Promise<RunExit>((resolve, reject) => {
      this.settle = resolve;
      this.fail = reject;
    });
    this.done.catch(() => undefined); // a caller that never awaits must not crash the process
  }

  get id(): string {
    return this.status.runId;
  }

  /** Keeps the event (a bounded list: the run's first two, allocated and started, stay) and tells listeners. */
  record(event: RunEvent): void {
    const events = this.status.events;
    events.push(event);
    if (events.length > this.eventsKept) {
      events.splice(Math.min(2, this.eventsKept - 1), 1);
      this.status.eventsDropped++;
    }
    this.emit("event", event);
  }

  finish(exit: RunExit): void {
    this.settle(exit);
  }

  attach(child: ChildProcess): void {
    this.leader = child;
  }

  /**
   * Signals the process augur spawned, while it lives. Augur's own child,
   * so safe to signal before it is in the run's cgroup: the join is the
   * shell's first step, and a stop that comes sooner finds the cgroup empty.
   */
  signalLeader(signal: NodeJS.Signals): void {
    const leader = this.leader;
    if (leader && leader.exitCode === null && leader.signalCode === null) leader.kill(signal);
  }

  abort(error: Error): void {
    this.fail(error);
  }
}


/** What sampling a run keeps from one sample to the next. */
interface SampleState {
  /** The last reading's counters. */
  value: Counters | null;
  /** OOM kills seen so far. */
  oomKills: number;
  /** When the run's allocation lease was last renewed (or made). */
  renewedAt: number;
  /** The "throttled" event of the heavy throttling going on at the run's present CPU limit, if any. */
  throttling: RunEvent | null;
  /** When that spell last raised (or renewed) the pair's CPU floor in the store. */
  floorAt: number;
  /** Why the last sample's resize was refused or failed, while that goes on (reported once). */
  refused: string | null;
}

/**
 * The launcher: asks the allocation engine what a run gets, creates its
 * cgroup (and network namespace when shaping is asked), applies the
 * decision through the safety rules, starts the command inside, samples it
 * into `augur.samples` (its telemetry feeds the profile), resizes it while
 * it runs, records OOM kills and heavy throttling as feedback that raises
 * the pair's next allocation, and cleans up when it exits.
 */
export class Launcher {
  readonly runs = new Map<string, Run>();
  private readonly limiter: ChangeLimiter;
  private readonly processes: ProcessConnector;
  private readonly now: () => number;
  /** Set by stopAll: no run starts after it. */
  private stopping = false;
  /** Starts in progress. */
  private readonly starting = new Set<Promise<Run>>();
  /** The last sweep for what killed runs left (wall time), and the one under way. */
  private sweptAt = -Infinity;
  private sweeping: Promise<void> | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  /** Other processes' runs going on whose allocations the sweeps renew. */
  private readonly kept = new Set<string>();

  constructor(private readonly deps: LauncherDependencies) {
    this.limiter = new ChangeLimiter(deps.config.safety.maxChangesPerHour);
    this.processes = new ProcessConnector({ kind: "process", graceSeconds: 5 }, deps.cgroups);
    this.now = deps.now ?? Date.now;
  }

  private async publishResult(result: Omit<ActuationResult, "node" | "ts" | "dryRun"> & { dryRun?: boolean }): Promise<void> {
    const value: ActuationResult = { node: this.deps.node, dryRun: this.deps.config.safety.dryRun, ts: this.now(), ...result };
    try {
      await reportActuation(value, this.deps.metrics, this.deps.transport);
    } catch (error) {
      console.error(`augur: could not publish an actuation result: ${errorMessage(error)}`);
    }
  }

  /**
   * Starts a run. Throws CapacityError when the node cannot take it,
   * ValidationError for a bad spec, TransientError once the launcher is stopping.
   */
  async start(spec: RunSpec): Promise<Run> {
    if (this.stopping) throw new TransientError("this node's launcher is stopping: no new runs");
    const staleAfterMs = this.deps.config.runs.staleAfterSeconds * 1000;
    if (staleAfterMs > 0 && Date.now() - this.sweptAt >= staleAfterMs / 2) {
      // A sweep that fails is reported; the run starts all the same.
      await this.removeStaleRuns().catch((error) => console.error(`augur: looking for stale run cgroups: ${errorMessage(error)}`));
    }
    const starting = this.startRun(spec);
    this.starting.add(starting);
    try {
      return await starting;
    } finally {
      this.starting.delete(starting);
    }
  }

  /**
   * Removes what runs left when their augur was killed before cleaning up
   * (a SIGKILL, a crash): run cgroups below the root that hold no process,
   * are older than `runs.staleAfterSeconds` (no start takes that long) and
   * are not this launcher's, each one's network namespace when no process
   * is in it, and the allocation it is named after. Each removal is an
   * ActuationResult (`reap`); in dry-run they are reported and kept. Runs of
   * other processes that still have processes keep their allocations
   * reserved (`keepReserved`).
   */
  removeStaleRuns(): Promise<void> {
    this.sweeping ??= this.sweep().finally(() => (this.sweeping = null));
    return this.sweeping;
  }

  /**
   * Sweeps now and every half of `runs.staleAfterSeconds` (a quarter of the
   * allocation lease when that is shorter) until `stopAll`, for a node's
   * long-lived launcher: one that starts no run for a while (or none at
   * all) still removes what a killed augur left, and keeps reserved what
   * the runs of a killed augur that go on use.
   */
  sweepPeriodically(): void {
    const staleAfterMs = this.deps.config.runs.staleAfterSeconds * 1000;
    if (staleAfterMs <= 0 || this.sweepTimer || this.stopping) return;
    const sweep = () => void this.removeStaleRuns().catch((error) => console.error(`augur: looking for stale run cgroups: ${errorMessage(error)}`));
    this.sweepTimer = setInterval(sweep, Math.max(1_000, Math.min(staleAfterMs / 2, this.deps.engine.leaseMs / 4)));
    this.sweepTimer.unref();
    sweep();
  }

  private async sweep(): Promise<void> {
    const { cgroups, tc, config } = this.deps;
    const staleAfterSeconds = config.runs.staleAfterSeconds;
    // Directory times are wall-clock: so is the cut-off, whatever clock the launcher's events use.
    this.sweptAt = Date.now();
    const ours = new Set([...this.runs.values()].map((run) => run.status.cgroup));
    // A run's cgroup is named after its allocation's id: what another process's run reserves is found by it.
    const allocations = new Map(this.deps.store.liveAllocations(this.deps.node, this.sweptAt).map((allocation) => [runCgroupName(allocation.requestId), allocation.requestId]));
    const allocationOf = (path: string) => allocations.get(path.slice(path.lastIndexOf("/") + 1)) ?? null;
    const { empty, busy } = cgroups.runsNow(this.sweptAt - staleAfterSeconds * 1000);
    this.keepReserved(new Set(busy.filter((path) => !ours.has(path))), allocationOf);
    for (const path of empty) {
      if (ours.has(path)) continue;
      const namespace = tc ? namespaceOfRunCgroup(path) : null;
      const allocation = allocationOf(path);
      let reason = `made over ${staleAfterSeconds} s ago, no process in it, not a run of this process: left by an augur killed before it cleaned up`;
      let ok = true;
      if (!config.safety.dryRun) {
        try {
          cgroups.remove(path);
          if (namespace && (await tc!.removeIdleNetwork(namespace))) reason += `; its network namespace ${namespace} removed`;
          if (allocation && this.deps.engine.release(allocation)) reason += `; its allocation ${allocation} released`;
        } catch (error) {
          ok = false;
          reason = errorMessage(error);
        }
      } else if (allocation) reason += `; its allocation ${allocation} still reserves capacity`;
      console.error(`augur: ${ok ? (config.safety.dryRun ? "would remove" : "removed") : "could not remove"} stale run cgroup ${path}: ${reason}`);
      await this.publishResult({ workload: `cgroup:${path}`, connector: "cgroup", action: "reap", ok, reason, details: JSON.stringify({ cgroup: path, namespace, allocation }) });
    }
  }

  /**
   * Runs of another process that go on (their augur was killed, or another
   * augur on this host runs them): their allocations' leases are renewed,
   * since no one else renews them and their commands still use what they
   * reserved. Said once per run.
   */
  private keepReserved(busy: Set<string>, allocationOf: (path: string) => string | null): void {
    const nowMs = Date.now();
    for (const path of busy) {
      const allocation = allocationOf(path);
      if (allocation === null || this.deps.engine.extend(allocation, nowMs) === null || this.kept.has(path)) continue;
      console.error(`augur: run cgroup ${path} is not a run of this process and has processes in it: its allocation ${allocation} stays reserved while they run`);
      this.kept.add(path);
    }
    for (const path of this.kept) if (!busy.has(path)) this.kept.delete(path);
  }

  private async startRun(spec: RunSpec): Promise<Run> {
    if (!Array.isArray(spec.argv) || spec.argv.length === 0 || spec.argv.some((arg) => typeof arg !== "string" || arg.includes("\0"))) {
      throw new ValidationError("the command must be a non-empty list of strings without NUL bytes", spec.argv);
    }
    for (const name of Object.keys(spec.env ?? {})) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || name.startsWith("AUGUR_CGROUP")) throw new ValidationError(`environment variable name ${JSON.stringify(name)} is not allowed`, name);
    }
    const request = parseAllocationRequest(
      { image: spec.image, user: spec.user, request: spec.request ?? {}, ...(spec.priorityClass ? { priorityClass: spec.priorityClass } : {}), ...(spec.requestId ? { requestId: spec.requestId } : {}) },
      this.now(),
    );
    const decision = await this.deps.engine.allocate(request);
    if (!decision.ok) throw new CapacityError(decision.message, decision);
    if (this.runs.has(decision.requestId)) throw new ValidationError(`run ${decision.requestId} exists already`, decision.requestId);

    const { cgroups, config } = this.deps;
    const runId = decision.requestId;
    const path = cgroups.runPath(decision.image, decision.user, runId);
    const explicit = { cpu: spec.request?.cpu !== undefined, memory: spec.request?.memory !== undefined };
    const run = new Run({
      runId,
      image: decision.image,
      user: decision.user,
      pid: null,
      cgroup: path,
      network: null,
      decision,
      limits: { cpuLimitCores: decision.cpu?.limit ?? null, memoryLimitBytes: decision.memory?.limit ?? null },
      state: "starting",
      exit: null,
      startedAt: this.now(),
      endedAt: null,
      restricted: null,
      events: [],
      eventsDropped: 0,
    }, config.runs.eventsKept);
    run.record({ type: "allocated", ts: this.now(), decision });
    this.runs.set(runId, run);

    const cleanup = async () => {
      let exists = false;
      try {
        exists = cgroups.exists(path);
        if (exists) {
          this.processes.killCgroup(path);
          for (let attempt = 0; attempt < 50 && cgroups.read(path).pids.length > 0; attempt++) await new Promise((r) => setTimeout(r, 20));
        }
      } catch (error) {
        console.error(`augur: run ${runId}: stopping what is left in cgroup ${path}: ${errorMessage(error)}`);
      }
      // The namespace goes before the cgroup: an augur killed in between
      // leaves the cgroup, by which a later start finds both (removeStaleRuns).
      if (run.status.network) await this.deps.tc!.removeNetwork(run.status.network.namespace).catch((error) => console.error(`augur: run ${runId}: ${errorMessage(error)}`));
      try {
        if (exists) cgroups.remove(path);
      } catch (error) {
        console.error(`augur: run ${runId}: removing cgroup ${path}: ${errorMessage(error)}`);
      }
      this.deps.gpu?.release(runId);
      this.deps.engine.release(runId);
      this.limiter.forget(runId);
    };

    let env: Record<string, string>;
    try {
      // The cgroup and its limits.
      cgroups.create(path);
      const verdict = checkProposal(
        config.safety,
        { cpuLimitCores: decision.cpu?.limit ?? null, memoryLimitBytes: decision.memory?.limit ?? null },
        { memoryUsageBytes: 0, capacity: this.deps.capacity(), initial: true, rateAllows: true },
      );
      run.status.limits = verdict.limits;
      const limits: CgroupLimits = {
        cpuLimitCores: verdict.limits.cpuLimitCores,
        cpuWeight: Math.min(10_000, Math.max(1, Math.round((decision.cpu?.request ?? 1) * 100))),
        memoryLimitBytes: verdict.limits.memoryLimitBytes,
        memorySoftLimitBytes:
          verdict.limits.memoryLimitBytes !== null && cgroups.config.memorySoftFraction > 0 ? verdict.limits.memoryLimitBytes * cgroups.config.memorySoftFraction : null,
      };
      const changes = cgroups.apply(path, limits, { dryRun: config.safety.dryRun });
      await this.publishResult({
        workload: `run:${runId}`,
        connector: "cgroup",
        action: "limits",
        ok: true,
        reason: [`allocation ${runId} (${decision.level})`, ...verdict.notes].join("; "),
        details: JSON.stringify({ cgroup: path, version: cgroups.version, changes }),
      });

      // The network, when egress shaping is asked.
      if (decision.netEgressBytesPerSecond !== null) {
        if (!this.deps.tc) throw new ActuationError("network shaping was asked (netEgress) but no tc connector is configured", decision);
        const network = await this.deps.tc.createNetwork(runId);
        run.status.network = network;
        const shaped = await this.deps.tc.shape(network, { egressBytesPerSecond: decision.netEgressBytesPerSecond }, { dryRun: config.safety.dryRun });
        await this.publishResult({
          workload: `run:${runId}`,
          connector: "tc",
          action: "shape",
          ok: true,
          reason: `allocation ${runId}: egress ${decision.netEgressBytesPerSecond} bytes/s`,
          details: JSON.stringify({ ...network, ...shaped }),
        });
      }

      // GPUs: device choice and share in the environment.
      env = { ...process.env, ...(spec.env ?? {}) } as Record<string, string>;
      if (decision.gpus > 0) {
        if (!this.deps.gpu) throw new ActuationError(`${decision.gpus} GPU(s) were granted but no gpu connector is configured`, decision);
        const profile = this.deps.store.getProfile(decision.image, decision.user);
        const assignment = await this.deps.gpu.assign(runId, decision.gpus, {
          utilization: profile?.resources.gpu_util?.limit,
          memoryBytes: profile?.resources.gpu_mem?.limit,
        });
        Object.assign(env, assignment.env);
        await this.publishResult({ workload: `run:${runId}`, connector: "gpu", action: "assign", ok: true, reason: `allocation ${runId}`, details: JSON.stringify(assignment.env) });
      }
    } catch (error) {
      run.status.state = "failed";
      run.status.endedAt = this.now();
      run.record({ type: "failed", ts: this.now(), error: errorMessage(error) });
      await this.publishResult({ workload: `run:${runId}`, connector: "cgroup", action: "limits", ok: false, reason: errorMessage(error), details: "" });
      await cleanup();
      this.runs.delete(runId);
      throw error;
    }

    const procs = cgroups.procsFiles(path);
    if (procs.some((file) => /\s/.test(file))) throw new ActuationError(`a cgroup path holds whitespace: ${procs.join(" ")}`, procs);
    env.AUGUR_CGROUP_PROCS = procs.join(" ");
    env.AUGUR_RUN_ID = runId;
    env.AUGUR_IMAGE = decision.image;
    env.AUGUR_USER = decision.user;
    if (run.status.network) {
      // The run's side of its link, and the host's side it reaches the world through.
      env.AUGUR_NET_ADDRESS = run.status.network.workloadAddress;
      env.AUGUR_NET_HOST_ADDRESS = run.status.network.hostAddress;
    }
    // Join the cgroup first, then enter the namespace: `ip netns exec` mounts a fresh /sys, without the cgroup tree.
    const command = run.status.network ? this.deps.tc!.wrap(run.status.network.namespace, spec.argv) : spec.argv;
    const argv = ["/bin/sh", "-c", JOIN_AND_EXEC, "augur-exec", ...command];

    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { env, stdio: spec.stdio === "inherit" ? "inherit" : ["ignore", "pipe", "pipe"] });
    } catch (error) {
      await cleanup();
      this.runs.delete(runId);
      throw new ActuationError(`could not start ${spec.argv[0]}: ${errorMessage(error)}`, spec.argv);
    }
    if (spec.stdio === "capture") {
      run.status.output = "";
      const keep = (chunk: string) => {
        run.status.output = lastBytes(run.status.output + chunk, config.runs.outputBytes);
      };
      // Decoded per stream, so a character split between two reads arrives whole.
      child.stdout?.setEncoding("utf8").on("data", keep);
      child.stderr?.setEncoding("utf8").on("data", keep);
    }
    run.attach(child);
    run.status.pid = child.pid ?? null;
    run.status.state = "running";
    run.record({ type: "started", ts: this.now(), pid: child.pid, cgroup: path, limits: run.status.limits, network: run.status.network });

    const previous: SampleState = { value: null, oomKills: 0, renewedAt: this.now(), throttling: null, floorAt: 0, refused: null };
    let sampling = Promise.resolve();
    const tick = () => {
      sampling = sampling.then(() => this.sample(run, previous, explicit)).catch((error) => console.error(`augur: run ${runId}: sampling: ${errorMessage(error)}`));
    };
    const timer = setInterval(tick, config.sampleSeconds * 1000);

    child.once("error", (error) => {
      clearInterval(timer);
      run.status.state = "failed";
      run.record({ type: "failed", ts: this.now(), error: errorMessage(error) });
      void cleanup().then(() => run.abort(new ActuationError(`could not start ${spec.argv[0]}: ${errorMessage(error)}`, spec.argv)));
    });
    child.once("exit", (code, signal) => {
      clearInterval(timer);
      void (async () => {
        await sampling;
        // The last reading: an OOM kill shows in the counters before the cgroup goes.
        await this.sample(run, previous, explicit).catch(() => undefined);
        const oomKilled = previous.oomKills > 0 && signal === "SIGKILL";
        const status = exitStatus(code, signal);
        const exit: RunExit = { code, signal, oomKilled, status };
        if (code === JOIN_FAILED) run.record({ type: "failed", ts: this.now(), error: "the command could not join its cgroup" });
        run.status.exit = exit;
        run.status.state = "exited";
        run.status.endedAt = this.now();
        run.record({ type: "exited", ts: this.now(), ...exit });
        await cleanup();
        this.forgetOldRuns();
        run.finish(exit);
      })();
    });
    return run;
  }

  /** One sample of a run: publish it, and act on OOM kills, heavy throttling and a working set near the limit. */
  private async sample(run: Run, previous: SampleState, explicit: { cpu: boolean; memory: boolean }): Promise<void> {
    const { cgroups, config } = this.deps;
    const path = run.status.cgroup;
    if (!cgroups.exists(path)) return;
    const reading: CgroupReading = cgroups.read(path);
    const nowMs = this.now();
    const atSeconds = performance.now() / 1000;
    const net = reading.pids[0] !== undefined ? readOwnNetns(reading.pids[0]) : null;
    const current = countersOf(reading, net, atSeconds);
    const before = previous.value;
    previous.value = current;
    const sample: Sample = emptySample({ ts: nowMs, workload: `run:${run.id}`, image: run.status.image, user: run.status.user, host: this.deps.node, source: "launcher" });
    sample.memoryWorkingSetBytes = reading.memoryWorkingSetBytes;
    sample.memoryRssBytes = reading.memoryRssBytes;
    sample.memoryLimitBytes = reading.memoryLimitBytes;
    sample.cpuLimitCores = reading.cpuLimitCores;
    const oomNow = before ? delta(current.oomKills, before.oomKills) : (current.oomKills ?? 0);
    sample.oomKills = oomNow;
    let throttledShare = 0;
    if (before) {
      const seconds = fillRates(sample, current, before);
      const periods = seconds / (cgroups.config.cpuPeriodMicros / 1e6);
      // Periods are counted as they end: a reading can see one more than its seconds hold.
      throttledShare = periods > 0 ? Math.min(1, sample.cpuThrottledPeriods / periods) : 0;
    }
    if (this.deps.gpu && reading.pids.length > 0) {
      const usage = usageOf(await this.deps.gpu.collector.snapshot().catch(() => ({ devices: [], processes: [] })), new Set(reading.pids));
      sample.gpuUtilization = usage.gpuUtilization;
      sample.gpuMemoryBytes = usage.gpuMemoryBytes;
    }
    if (this.deps.transport) {
      try {
        await this.deps.transport.topic<Sample>(TOPICS.samples).publish([{ key: pairKey(sample.image, sample.user), value: validateSample(sample), timestamp: sample.ts }]);
      } catch (error) {
        console.error(`augur: run ${run.id}: publishing a sample: ${errorMessage(error)}`);
      }
    }

    if (oomNow > 0) {
      previous.oomKills += oomNow;
      const limit = run.status.limits.memoryLimitBytes ?? reading.memoryLimitBytes ?? reading.memoryUsageBytes ?? 0;
      const floor = this.deps.engine.recordOom(run.status.image, run.status.user, limit, nowMs);
      run.record({ type: "oom", ts: nowMs, kills: oomNow, limitBytes: limit, nextFloorBytes: floor });
      await this.publishResult({ workload: `run:${run.id}`, connector: "cgroup", action: "oom-feedback", ok: true, reason: `OOM kill at ${limit} bytes: next runs get at least ${Math.ceil(floor)}`, details: "" });
    }
    if (run.status.state !== "running") return;

    // The run holds its reservation while it lives: the allocation's lease is renewed
    // well before it lapses (a run that outlived it stopped counting against capacity).
    if (nowMs - previous.renewedAt >= this.deps.engine.leaseMs / 4) {
      this.deps.engine.renew(run.status.decision, nowMs);
      previous.renewedAt = nowMs;
    }

    // Feedback loop while it runs, within the safety rules. Explicit amounts stay as asked.
    const proposal = { ...run.status.limits };
    const reasons: string[] = [];
    const cpuLimit = run.status.limits.cpuLimitCores;
    // A run remediation holds back is throttled as asked: no sign that the pair needs more.
    if (cpuLimit !== null && throttledShare >= config.resize.heavyThrottleFraction && !run.status.restricted) {
      // One event per spell of heavy throttling at one limit (a CPU-bound run held at an
      // explicit limit is throttled every sample): later samples of it update that event.
      // The floor it raises is one fsynced write: at the spell's start, then once a minute.
      const spell = previous.throttling?.limitCores === cpuLimit ? previous.throttling : null;
      let floor = Number(spell?.nextFloorCores);
      if (!spell || nowMs - previous.floorAt >= FLOOR_RENEW_MS) {
        floor = this.deps.engine.recordThrottling(run.status.image, run.status.user, cpuLimit, nowMs);
        previous.floorAt = nowMs;
      }
      if (spell) Object.assign(spell, { lastTs: nowMs, samples: Number(spell.samples) + 1, share: throttledShare, nextFloorCores: floor });
      else {
        previous.throttling = { type: "throttled", ts: nowMs, lastTs: nowMs, samples: 1, share: throttledShare, limitCores: cpuLimit, nextFloorCores: floor };
        run.record(previous.throttling);
      }
      if (!explicit.cpu && config.resize.enabled) {
        proposal.cpuLimitCores = floor;
        reasons.push(`throttled in ${(throttledShare * 100).toFixed(0)}% of periods`);
      }
    } else previous.throttling = null;
    const memoryLimit = run.status.limits.memoryLimitBytes;
    const workingSet = reading.memoryWorkingSetBytes ?? 0;
    if (!explicit.memory && config.resize.enabled && memoryLimit !== null && workingSet > memoryLimit * (1 - config.resize.memoryHeadroom)) {
      // Grown from the larger of the two: from the working set alone, 0.75 × 1.25 of a limit would shrink it.
      proposal.memoryLimitBytes = Math.ceil(Math.max(workingSet, memoryLimit) * (1 + config.resize.memoryHeadroom));
      reasons.push(`working set ${workingSet} bytes within ${(config.resize.memoryHeadroom * 100).toFixed(0)}% of the limit`);
    }
    if (reasons.length === 0) {
      previous.refused = null;
      return;
    }
    const verdict = checkProposal(config.safety, proposal, {
      memoryUsageBytes: reading.memoryUsageBytes,
      capacity: this.deps.capacity(),
      initial: false,
      rateAllows: this.limiter.allows(run.id, nowMs),
    });
    if (!verdict.allowed) {
      await this.notResized(run, previous, nowMs, verdict.limits, reasons, verdict.notes.join("; "));
      return;
    }
    try {
      const changes = cgroups.apply(path, { cpuLimitCores: verdict.limits.cpuLimitCores, memoryLimitBytes: verdict.limits.memoryLimitBytes }, { dryRun: config.safety.dryRun });
      previous.refused = null;
      if (Object.keys(changes).length === 0) return;
      this.limiter.record(run.id, nowMs);
      if (!config.safety.dryRun) run.status.limits = verdict.limits;
      run.record({ type: "resized", ts: nowMs, limits: verdict.limits, reasons: [...reasons, ...verdict.notes], dryRun: config.safety.dryRun });
      await this.publishResult({ workload: `run:${run.id}`, connector: "cgroup", action: "resize", ok: true, reason: [...reasons, ...verdict.notes].join("; "), details: JSON.stringify({ changes }) });
    } catch (error) {
      await this.notResized(run, previous, nowMs, verdict.limits, reasons, errorMessage(error));
    }
  }

  /**
   * A resize the safety rules refused or the kernel did not take. Either goes on for as
   * long as what causes it (an hour of rate limit, a limit the hierarchy caps), one
   * sample after another: recorded and published when it starts, not at every sample.
   */
  private async notResized(run: Run, previous: SampleState, nowMs: number, limits: RunStatus["limits"], reasons: string[], why: string): Promise<void> {
    if (why === previous.refused) return;
    previous.refused = why;
    run.record({ type: "refused", ts: nowMs, limits, reasons, why });
    await this.publishResult({ workload: `run:${run.id}`, connector: "cgroup", action: "resize", ok: false, reason: [...reasons, why].join("; "), details: "" });
  }

  /**
   * Stops a run: SIGTERM to its processes (and to the one augur spawned,
   * which may not have joined the cgroup yet), SIGKILL to what is left after
   * the grace period; a frozen run is killed at once.
   */
  async stop(runId: string, graceSeconds = 5): Promise<void> {
    const run = this.runs.get(runId);
    if (!run || run.status.state !== "running") return;
    // A frozen run (remediation froze it) cannot act on SIGTERM: there is no grace to give it.
    if (this.deps.cgroups.isFrozen(run.status.cgroup) !== true) {
      run.signalLeader("SIGTERM");
      for (const pid of this.deps.cgroups.read(run.status.cgroup).pids) {
        try {
          this.processes.signal(pid, "SIGTERM");
        } catch {
          // gone already
        }
      }
      const timeout = new Promise((resolve) => setTimeout(resolve, graceSeconds * 1000).unref());
      await Promise.race([run.done.catch(() => undefined), timeout]);
    }
    if (run.status.state === "running") {
      this.processes.killCgroup(run.status.cgroup);
      run.signalLeader("SIGKILL");
    }
    await run.done.catch(() => undefined);
  }

  /**
   * Stops every run, and refuses new ones from now on. A run still starting
   * (its cgroup and network being made) is waited for and stopped too: none
   * outlives the launcher.
   */
  async stopAll(): Promise<void> {
    this.stopping = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    await Promise.allSettled(this.starting);
    await Promise.all([...this.runs.keys()].map((id) => this.stop(id)));
    await this.sweeping?.catch(() => undefined);
  }

  /** Finished runs stay visible (GET /v1/runs/:id) until this many newer ones finished. */
  private forgetOldRuns(keep = 1000): void {
    const finished = [...this.runs.values()].filter((run) => run.status.state === "exited" || run.status.state === "failed");
    for (const run of finished.slice(0, Math.max(0, finished.length - keep))) this.runs.delete(run.id);
  }

  get(runId: string): Run | undefined {
    return this.runs.get(runId);
  }

  /**
   * Holds a running run's CPU at `cores` (remediation's `throttle`). From then on the
   * feedback loop leaves its CPU alone: its throttling is what was asked, so it neither
   * raises the limit back nor raises the pair's CPU floor for later runs.
   */
  restrict(runId: string, cores: number, reason: string): Changes {
    const run = this.runs.get(runId);
    if (!run || run.status.state !== "running") throw new ActuationError(`run ${runId} is not running on this node`, runId);
    const changes = this.deps.cgroups.apply(run.status.cgroup, { cpuLimitCores: cores });
    run.status.limits = { ...run.status.limits, cpuLimitCores: cores };
    run.status.restricted = { cpuLimitCores: cores, reason, ts: this.now() };
    return changes;
  }
}
