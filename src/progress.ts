/**
 * The one progress event of the library: every `onProgress` option
 * (MeshNode.start, LocalControl.start, ensureHeadscale, buildGoProgram)
 * receives this shape. Kept in its own file so that the control-server
 * manager can report progress without loading the node's option schemas.
 */

/**
 * ProgressPhase names a step of a slow operation.
 *
 * - MeshNode.start: `loading` (the core), `creating` (the node), `connecting`
 *   (once per tailnet state change; the message names the state), `online`.
 * - ensureHeadscale / buildGoProgram: `waiting` (another process is
 *   building), `building` (each build step), `built`.
 * - LocalControl.start: those of ensureHeadscale, then `starting` and `running`.
 */
export type ProgressPhase = "loading" | "creating" | "connecting" | "online" | "waiting" | "building" | "built" | "starting" | "running";

/** A step of a slow operation, for progress display. */
export interface ProgressEvent {
  phase: ProgressPhase;
  /** One line for a person, e.g. "online as agent.mesh.internal (100.64.0.1) in 153 ms". */
  message: string;
  /** Milliseconds since the operation began. */
  elapsedMs: number;
}

/** A progress callback, as every `onProgress` option takes it. */
export type ProgressListener = (ev: ProgressEvent) => void;

/**
 * progressReporter turns an optional listener into a `(phase, message)`
 * function that stamps the elapsed time. A listener that throws must not
 * break the operation it watches, so its errors are swallowed.
 */
export function progressReporter(listener: ProgressListener | undefined, t0 = performance.now()): (phase: ProgressPhase, message: string) => void {
  if (listener === undefined) return () => {};
  return (phase, message) => {
    try {
      listener({ phase, message, elapsedMs: Math.round(performance.now() - t0) });
    } catch {
      // see above
    }
  };
}
