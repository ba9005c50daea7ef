/** Why a call's signal aborted: the client cancelled it, or its deadline passed. */
export type TerminationReason = 'cancel' | 'timeout';

/**
 * Joins the client's cancellation signal and a deadline into one AbortSignal; the first
 * reason wins and is kept (execa's `terminationReason ??=`).
 *
 * @param parent the client's signal (MCP `notifications/cancelled`, or HTTP stream closed)
 * @param ms deadline in ms from now
 * @returns `signal` to hand down, `reason()` once it aborted (undefined before), and
 *   `dispose()` to clear the timer when the call is over.
 */
export function withDeadline(parent: AbortSignal, ms: number): {signal: AbortSignal; reason: () => TerminationReason | undefined; dispose: () => void} {
  const controller = new AbortController();
  let reason: TerminationReason | undefined;
  const abort = (why: TerminationReason) => {
    reason ??= why;
    controller.abort(why);
  };
  const timer = setTimeout(() => abort('timeout'), ms);
  timer.unref?.();
  const onParent = () => abort('cancel');
  if (parent.aborted) onParent();
  else parent.addEventListener('abort', onParent, {once: true});
  return {
    signal: controller.signal,
    reason: () => reason,
    dispose: () => {
      clearTimeout(timer);
      parent.removeEventListener('abort', onParent);
    },
  };
}
