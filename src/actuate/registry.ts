import type { AllocationEngine } from "../allocate/engine.js";
import type { LoadedPipeline } from "../config/pipeline.js";
import { errorMessage } from "../core/errors.js";
import type { Metrics } from "../core/metrics.js";
import type { ProfileStore } from "../store/profile-store.js";
import type { Transport } from "../transport/topic.js";
import { CgroupConnector } from "./cgroup.js";
import type { ActuatorConfig } from "./config.js";
import { GpuConnector } from "./gpu.js";
import { Launcher } from "./launcher.js";
import { ProcessConnector } from "./process.js";
import { TcConnector } from "./tc.js";

export interface Actuators {
  cgroups: CgroupConnector | null;
  tc: TcConnector | null;
  gpu: GpuConnector | null;
  processes: ProcessConnector | null;
  /** Why a configured connector is not available on this host. */
  unavailable: string[];
}

function byKind<K extends ActuatorConfig["kind"]>(configs: ActuatorConfig[], kind: K): Extract<ActuatorConfig, { kind: K }> | undefined {
  return configs.find((config): config is Extract<ActuatorConfig, { kind: K }> => config.kind === kind);
}

/**
 * Builds the configured connectors. A connector this host cannot offer (no
 * cgroup hierarchy, no `ip`/`tc` binary) is left out with the reason, so
 * the rest of augur still runs; what needs it then fails with that reason.
 */
export function createActuators(configs: ActuatorConfig[]): Actuators {
  const unavailable: string[] = [];
  const attempt = <T>(name: string, build: () => T): T | null => {
    try {
      return build();
    } catch (error) {
      unavailable.push(`${name}: ${errorMessage(error)}`);
      return null;
    }
  };
  const cgroupConfig = byKind(configs, "cgroup");
  const cgroups = cgroupConfig ? attempt("cgroup", () => new CgroupConnector(cgroupConfig)) : null;
  const tcConfig = byKind(configs, "tc");
  const tc = tcConfig ? attempt("tc", () => new TcConnector(tcConfig)) : null;
  const gpuConfig = byKind(configs, "gpu");
  const gpu = gpuConfig ? new GpuConnector(gpuConfig) : null;
  const processConfig = byKind(configs, "process");
  const processes = processConfig && cgroups ? new ProcessConnector(processConfig, cgroups) : null;
  return { cgroups, tc, gpu, processes, unavailable };
}

/** The launcher of a pipeline, or the reason there is none on this host. */
export function createLauncher(
  pipeline: LoadedPipeline,
  deps: { engine: AllocationEngine; store: ProfileStore; transport?: Transport; metrics?: Metrics },
): { launcher: Launcher | null; actuators: Actuators; reason: string | null } {
  const actuators = createActuators(pipeline.actuators);
  if (!actuators.cgroups) {
    const reason = byKind(pipeline.actuators, "cgroup")
      ? `the cgroup connector is not available: ${actuators.unavailable.join("; ")}`
      : `${pipeline.path}: actuate.connectors has no cgroup connector`;
    return { launcher: null, actuators, reason };
  }
  const launcher = new Launcher({
    engine: deps.engine,
    store: deps.store,
    cgroups: actuators.cgroups,
    tc: actuators.tc ?? undefined,
    gpu: actuators.gpu ?? undefined,
    config: pipeline.config.actuate,
    node: pipeline.node,
    capacity: () => deps.engine.capacity(),
    transport: deps.transport,
    metrics: deps.metrics,
  });
  return { launcher, actuators, reason: null };
}
