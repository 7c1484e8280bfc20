import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { basename, isAbsolute } from "node:path";
import { promisify } from "node:util";
import { z } from "zod";
import { ActuationError, ValidationError, errorMessage } from "../core/errors.js";
import { idDigest } from "../core/keys.js";

const run = promisify(execFile);

/** An absolute path to a binary whose file name is exactly `name`: config cannot swap in another program. */
const binary = (name: string) =>
  z
    .string()
    .refine((path) => isAbsolute(path) && !path.includes("\0") && basename(path) === name, `an absolute path to the '${name}' binary`);

const ipv4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

export const tcConnectorConfig = z
  .object({
    kind: z.literal("tc"),
    ip: binary("ip").default("/usr/sbin/ip"),
    tc: binary("tc").default("/usr/sbin/tc"),
    /** Private range the per-run /30 links come from (host side .1, workload side .2 of each). */
    subnet: z
      .string()
      .refine((value) => {
        const [address, bits] = value.split("/");
        return address !== undefined && ipv4.test(address) && Number(bits) >= 8 && Number(bits) <= 28;
      }, "an IPv4 CIDR between /8 and /28, e.g. 10.213.0.0/16")
      .default("10.213.0.0/16"),
    /** HTB burst: at least this many bytes, and at least this many milliseconds of the rate. */
    minBurstBytes: z.number().int().min(1600).max(1 << 26).default(16_000),
    burstMillis: z.number().min(1).max(1000).default(20),
    /** Commands that take longer fail (seconds). */
    timeoutSeconds: z.number().min(1).max(120).default(10),
  })
  .strict();
export type TcConnectorConfig = z.infer<typeof tcConnectorConfig>;

/** A run's network: its namespace and the two ends of its veth link. */
export interface RunNetwork {
  namespace: string;
  hostDevice: string;
  workloadDevice: string;
  hostAddress: string;
  workloadAddress: string;
}

export interface Shaping {
  /** What the workload may send, bytes per second (HTB rate and ceiling on its side of the link). */
  egressBytesPerSecond: number | null;
  egressCeilBytesPerSecond?: number | null;
  /** What the workload may receive (HTB on the host side of the link). */
  ingressBytesPerSecond?: number | null;
}

const NAME = /^augur-[0-9a-f]{10}$/;

/**
 * The network namespace of the run whose cgroup is `path` (its last segment
 * ends in the run id's digest, `safePathSegment`), or null for a path that
 * is not a run's.
 */
export function namespaceOfRunCgroup(path: string): string | null {
  const digest = /-([0-9a-f]{12})$/.exec(path)?.[1];
  return digest ? `augur-${digest.slice(0, 10)}` : null;
}

/** Parses tc's rate notation ("8Mbit", "1600Kbit", "500bit", "1Gbit") into bits per second. */
export function parseTcRate(text: string): number | null {
  const match = /^([\d.]+)([KMGT]?)(bit|bps)$/i.exec(text.trim());
  if (!match) return null;
  const scale = { "": 1, K: 1e3, M: 1e6, G: 1e9, T: 1e12 }[match[2]!.toUpperCase() as "" | "K" | "M" | "G" | "T"];
  const value = Number(match[1]) * scale;
  return match[3]!.toLowerCase() === "bps" ? value * 8 : value;
}

/** The rate and ceiling of an HTB class from `tc class show` text. */
export function parseHtbClass(text: string, classId: string): { rateBits: number; ceilBits: number } | null {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`class htb ${classId} `)) continue;
    const rate = /\brate (\S+)/.exec(line)?.[1];
    const ceil = /\bceil (\S+)/.exec(line)?.[1];
    const rateBits = rate ? parseTcRate(rate) : null;
    const ceilBits = ceil ? parseTcRate(ceil) : null;
    if (rateBits !== null && ceilBits !== null) return { rateBits, ceilBits };
  }
  return null;
}

function ipToNumber(address: string): number {
  return address.split(".").reduce((sum, octet) => sum * 256 + Number(octet), 0);
}

function numberToIp(value: number): string {
  return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join(".");
}

/**
 * The tc connector: gives a run its own network namespace joined to the
 * host by a veth pair, and shapes that link with HTB (rate and ceiling).
 * Names are derived from a hash of the run id, never from the id itself;
 * `ip` and `tc` run with an argument vector (execFile), never a shell.
 * Where the kernel offers the net_cls controller, a cgroup classifier could
 * shape workloads outside a namespace; hosts without it (cgroup v2 has no
 * net_cls) use the namespace.
 */
export class TcConnector {
  private readonly reserved = new Set<number>();

  constructor(readonly config: TcConnectorConfig) {
    for (const path of [config.ip, config.tc]) if (!existsSync(path)) throw new ActuationError(`tc connector: ${path} does not exist`, path);
  }

  /** The namespace name of a run: `augur-` and ten hex digits of a hash of the run id (those of its cgroup's name: `namespaceOfRunCgroup`). */
  namespaceOf(runId: string): string {
    if (typeof runId !== "string" || runId.length === 0) throw new ValidationError("run id must be a non-empty string", runId);
    return `augur-${idDigest(runId).slice(0, 10)}`;
  }

  private async exec(file: string, args: string[]): Promise<string> {
    try {
      const { stdout } = await run(file, args, { timeout: this.config.timeoutSeconds * 1000, maxBuffer: 4 << 20 });
      return stdout;
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr?.trim();
      throw new ActuationError(`${basename(file)} ${args.join(" ")}: ${stderr || errorMessage(error)}`, { file, args });
    }
  }

  ip(args: string[]): Promise<string> {
    return this.exec(this.config.ip, args);
  }

  tc(args: string[]): Promise<string> {
    return this.exec(this.config.tc, args);
  }

  private checkName(namespace: string): void {
    if (!NAME.test(namespace)) throw new ValidationError(`not a namespace augur owns: ${JSON.stringify(namespace)}`, namespace);
  }

  /** A free /30 of the configured subnet: not on any interface of the host, not reserved by this process. */
  private async freeSlot(seed: string): Promise<number> {
    const [base, bits] = this.config.subnet.split("/") as [string, string];
    const slots = 2 ** (32 - Number(bits)) / 4;
    const start = ipToNumber(base) & ~(2 ** (32 - Number(bits)) - 1);
    const used = new Set<number>();
    for (const match of (await this.ip(["-o", "-4", "addr", "show"])).matchAll(/inet (\d+\.\d+\.\d+\.\d+)\//g)) used.add(ipToNumber(match[1]!) & ~3);
    const first = parseInt(createHash("sha256").update(seed).digest("hex").slice(0, 8), 16) % slots;
    for (let step = 0; step < slots; step++) {
      const slot = start + ((first + step) % slots) * 4;
      if (!used.has(slot >>> 0) && !this.reserved.has(slot)) {
        this.reserved.add(slot);
        return slot;
      }
    }
    throw new ActuationError(`no free /30 left in ${this.config.subnet}`, this.config.subnet, true);
  }

  /** Creates the run's namespace and link. Idempotent: an existing namespace is described, not recreated. */
  async createNetwork(runId: string): Promise<RunNetwork> {
    const namespace = this.namespaceOf(runId);
    const suffix = namespace.slice(6, 14);
    const hostDevice = `ag${suffix}h`;
    const workloadDevice = `ag${suffix}w`;
    const existing = await this.describe(namespace);
    if (existing) return existing;
    const slot = await this.freeSlot(runId);
    const hostAddress = numberToIp(slot + 1);
    const workloadAddress = numberToIp(slot + 2);
    try {
      await this.ip(["netns", "add", namespace]);
      await this.ip(["link", "add", hostDevice, "type", "veth", "peer", "name", workloadDevice, "netns", namespace]);
      await this.ip(["addr", "add", `${hostAddress}/30`, "dev", hostDevice]);
      await this.ip(["link", "set", hostDevice, "up"]);
      await this.ip(["-n", namespace, "addr", "add", `${workloadAddress}/30`, "dev", workloadDevice]);
      await this.ip(["-n", namespace, "link", "set", workloadDevice, "up"]);
      await this.ip(["-n", namespace, "link", "set", "lo", "up"]);
      await this.ip(["-n", namespace, "route", "add", "default", "via", hostAddress]);
    } catch (error) {
      await this.removeNetwork(namespace).catch(() => undefined); // roll back what was made
      throw error;
    } finally {
      this.reserved.delete(slot);
    }
    return { namespace, hostDevice, workloadDevice, hostAddress, workloadAddress };
  }

  private async hasNamespace(namespace: string): Promise<boolean> {
    const list = await this.ip(["netns", "list"]);
    return list.split("\n").some((line) => line.split(" ")[0] === namespace);
  }

  /** The network of an existing namespace, or null. */
  async describe(namespace: string): Promise<RunNetwork | null> {
    this.checkName(namespace);
    if (!(await this.hasNamespace(namespace))) return null;
    const suffix = namespace.slice(6, 14);
    const inside = await this.ip(["-n", namespace, "-o", "-4", "addr", "show", "dev", `ag${suffix}w`]).catch(() => "");
    const address = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(inside)?.[1];
    if (!address) return null;
    return { namespace, hostDevice: `ag${suffix}h`, workloadDevice: `ag${suffix}w`, hostAddress: numberToIp(ipToNumber(address) - 1), workloadAddress: address };
  }

  private burst(bytesPerSecond: number): number {
    return Math.max(this.config.minBurstBytes, Math.ceil((bytesPerSecond * this.config.burstMillis) / 1000));
  }

  /** Brings one side of the link to an HTB class of the given rate; returns true when something changed. */
  private async shapeDevice(namespace: string | null, device: string, rateBytes: number | null, ceilBytes: number | null): Promise<boolean> {
    const scope = namespace ? ["-n", namespace] : [];
    const current = parseHtbClass(await this.tc([...scope, "class", "show", "dev", device]), "1:10");
    if (rateBytes === null) {
      if (!current) return false;
      await this.tc([...scope, "qdisc", "del", "dev", device, "root"]);
      return true;
    }
    const rateBits = Math.round(rateBytes * 8);
    const ceilBits = Math.round(Math.max(rateBytes, ceilBytes ?? rateBytes) * 8);
    const close = (a: number, b: number) => Math.abs(a - b) <= Math.max(1000, b * 0.01);
    if (current && close(current.rateBits, rateBits) && close(current.ceilBits, ceilBits)) return false;
    await this.tc([...scope, "qdisc", "replace", "dev", device, "root", "handle", "1:", "htb", "default", "10"]);
    const burst = String(this.burst(Math.max(rateBytes, ceilBytes ?? 0)));
    await this.tc([...scope, "class", "replace", "dev", device, "parent", "1:", "classid", "1:10", "htb", "rate", `${rateBits}bit`, "ceil", `${ceilBits}bit`, "burst", burst, "cburst", burst]);
    return true;
  }

  /** Applies shaping to a run's link. Idempotent: equal rates write nothing. */
  async shape(network: RunNetwork, shaping: Shaping, options: { dryRun?: boolean } = {}): Promise<Record<string, unknown>> {
    this.checkName(network.namespace);
    for (const value of [shaping.egressBytesPerSecond, shaping.egressCeilBytesPerSecond, shaping.ingressBytesPerSecond]) {
      if (value !== null && value !== undefined && (!Number.isFinite(value) || value < 1 || value > 1e12)) throw new ValidationError(`rate must be 1..1e12 bytes per second (got ${value})`, shaping);
    }
    if (options.dryRun) return { dryRun: true, ...shaping };
    const egress = await this.shapeDevice(network.namespace, network.workloadDevice, shaping.egressBytesPerSecond, shaping.egressCeilBytesPerSecond ?? null);
    const ingress = shaping.ingressBytesPerSecond === undefined ? false : await this.shapeDevice(null, network.hostDevice, shaping.ingressBytesPerSecond, null);
    return { egressChanged: egress, ingressChanged: ingress };
  }

  /** The HTB class on the workload's side, read back: bytes per second. */
  async readShaping(network: RunNetwork): Promise<{ rateBytesPerSecond: number; ceilBytesPerSecond: number } | null> {
    this.checkName(network.namespace);
    const current = parseHtbClass(await this.tc(["-n", network.namespace, "class", "show", "dev", network.workloadDevice]), "1:10");
    return current ? { rateBytesPerSecond: current.rateBits / 8, ceilBytesPerSecond: current.ceilBits / 8 } : null;
  }

  /** Cuts the run off the network (remediation: isolate-network), or reconnects it. */
  async setIsolated(network: RunNetwork, isolated: boolean): Promise<void> {
    this.checkName(network.namespace);
    await this.ip(["-n", network.namespace, "link", "set", network.workloadDevice, isolated ? "down" : "up"]);
    if (!isolated) await this.ip(["-n", network.namespace, "route", "replace", "default", "via", network.hostAddress]);
  }

  /** Deletes the namespace if it exists and no process is in it; true when it did. */
  async removeIdleNetwork(namespace: string): Promise<boolean> {
    this.checkName(namespace);
    if (!(await this.hasNamespace(namespace))) return false;
    if ((await this.ip(["netns", "pids", namespace])).trim() !== "") return false;
    await this.ip(["netns", "del", namespace]);
    return true;
  }

  /** Deletes the namespace; its veth pair goes with it. Idempotent. */
  async removeNetwork(namespace: string): Promise<void> {
    this.checkName(namespace);
    if (!(await this.hasNamespace(namespace))) return;
    await this.ip(["netns", "del", namespace]);
  }

  /** The argument vector that runs `argv` inside the namespace. */
  wrap(namespace: string, argv: string[]): string[] {
    this.checkName(namespace);
    return [this.config.ip, "netns", "exec", namespace, ...argv];
  }
}
