import { TransientError, errorMessage } from "./errors.js";

/** POSTs JSON to a hook (scaler, anomaly webhook) and returns the answer's text; failures are transient. */
export async function postJson(url: string, body: unknown, options: { timeoutMs: number; token?: string; what: string }): Promise<string> {
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...(options.token ? { authorization: `Bearer ${options.token}` } : {}) },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(options.timeoutMs),
    });
  } catch (error) {
    throw new TransientError(`${options.what} ${url} failed: ${errorMessage(error)}`);
  }
  const text = await response.text();
  if (!response.ok) throw new TransientError(`${options.what} ${url} answered HTTP ${response.status}`, text.slice(0, 200));
  return text;
}
