/**
 * True when a process with this pid exists (this one included): how lock files left by a process
 * that died (SIGKILL, power loss) are told from live ones.
 */
export function isProcessAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
