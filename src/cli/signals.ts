import { exitStatus } from "../core/exit-status.js";

/**
 * SIGINT and SIGTERM (and whichever others are named) caught from the moment
 * a command starts, before what they must stop exists: one that comes while
 * a run's cgroup is being made or a pipeline is starting is held, and given
 * to the handler as soon as there is one, instead of killing augur midway
 * and leaving what it made behind. A second signal before the handler
 * exits at once, so a start that hangs can still be ended. Loads nothing but
 * node's own modules and one of augur's that loads nothing else (the heap
 * re-run uses it before the commands' modules load).
 */
export class HeldSignals {
  private held: NodeJS.Signals | null = null;
  private handler: ((signal: NodeJS.Signals) => void) | null = null;
  private readonly listener = (signal: NodeJS.Signals): void => {
    if (this.handler) {
      this.handler(signal);
    } else if (this.held === null) {
      this.held = signal;
      process.stderr.write(`augur: ${signal}: stopping as soon as started (send it again to exit now)\n`);
    } else {
      // A start that hangs (a broker that never answers) still ends on a second signal.
      process.stderr.write(`augur: ${signal} again while starting: exiting now\n`);
      process.exit(exitStatus(null, signal));
    }
  };

  constructor(private readonly signals: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM"]) {
    for (const signal of signals) process.on(signal, this.listener);
  }

  /** The first signal that came before a handler was given, if any (none once one is: it took it). */
  get pending(): NodeJS.Signals | null {
    return this.held;
  }

  /** Every signal from now on goes to `handler`; one held already goes to it at once. */
  handle(handler: (signal: NodeJS.Signals) => void): void {
    this.handler = handler;
    const held = this.held;
    this.held = null;
    if (held) handler(held);
  }

  /** Stops catching: the signals get node's default again. */
  release(): void {
    for (const signal of this.signals) process.off(signal, this.listener);
  }
}

/**
 * Stops a long-running command on its first signal: `stop`, then exit 0
 * (what an orchestrator's SIGTERM asks for); a failed stop exits through
 * `fail`. A signal that came while it was starting stops it at once; a
 * second one exits without waiting for the stop.
 */
export function stopOnSignal(signals: HeldSignals, stop: () => Promise<void>, fail: (error: unknown) => never): void {
  let stopping = false;
  signals.handle((signal) => {
    if (stopping) {
      process.stderr.write(`augur: ${signal} again, exiting without waiting\n`);
      process.exit(exitStatus(null, signal));
    }
    stopping = true;
    process.stderr.write(`augur: ${signal}, stopping\n`);
    stop().then(
      () => process.exit(0),
      (error: unknown) => fail(error),
    );
  });
}
