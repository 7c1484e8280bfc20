// Units as operators read them: cores, binary bytes, bytes per second.

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function bytes(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  let v = value;
  let unit = 0;
  while (Math.abs(v) >= 1024 && unit < BYTE_UNITS.length - 1) {
    v /= 1024;
    unit++;
  }
  return `${v.toFixed(v >= 100 || unit === 0 ? 0 : 1)} ${BYTE_UNITS[unit]}`;
}

export function number(value: number | null | undefined, digits = 2): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  if (Math.abs(value) >= 1000) return value.toLocaleString("en", { maximumFractionDigits: 0 });
  return value.toLocaleString("en", { maximumFractionDigits: digits });
}

export function percent(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return `${(value * 100).toFixed(value < 0.01 && value > 0 ? 2 : 1)} %`;
}

/** How a resource's amounts read: memory-like in bytes, rates in bytes/s, cpu and GPUs as counts. */
export function resourceFormat(resource: string): (value: number | null | undefined) => string {
  if (resource === "mem" || resource === "gpu_mem") return bytes;
  if (resource.startsWith("net_") || resource.startsWith("disk_")) return (value) => (value === null || value === undefined ? "–" : `${bytes(value)}/s`);
  if (resource === "cpu") return (value) => (value === null || value === undefined ? "–" : `${number(value, 3)} cores`);
  return (value) => number(value, 3);
}

export const RESOURCE_NAMES: Record<string, string> = {
  cpu: "CPU",
  mem: "memory",
  net_rx: "network in",
  net_tx: "network out",
  disk_read: "disk read",
  disk_write: "disk write",
  gpu_util: "GPU",
  gpu_mem: "GPU memory",
};

export function time(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}
