/**
 * Ctrl-C (or SIGTERM) the first time runs `first`, which asks the work to stop cleanly; a second
 * time exits at once with 130. Returns the function that stops listening.
 */
export function onStopSignal(first: () => void): () => void {
  let seen = false;
  const handler = () => {
    if (seen) process.exit(130);
    seen = true;
    first();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}
