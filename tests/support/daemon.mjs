// The real daemon for the node test suites (tests/browser, tests/compat): `pushd serve`
// on a loopback port the system picks (the daemon prints it), its data in `dataDir`, set
// up by `settings` (PUSHD_* variables) alone. Only node's own modules: each suite has
// its own node_modules.

import { spawn } from 'node:child_process';
import path from 'node:path';

/** The last bytes of the daemon's output kept, for failure messages. */
const LOG_BYTES = 20_000;

/**
 * Starts `bin serve` in `dataDir` (cwd: no pushd.toml is found there, so defaults plus
 * `settings`; every PUSHD_* variable of this process is left out), with `serveArgs`
 * after `serve` (say `--simulated-providers`). Resolves once it listens, with `base`
 * (its URL), `log()` (its recent output) and `stop()`.
 */
export async function startDaemon(bin, dataDir, settings, timeoutMs = 30_000, serveArgs = []) {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('PUSHD_')) delete env[k];
  Object.assign(env, {
    PUSHD_LISTEN: '127.0.0.1:0',
    PUSHD_DATA_DIR: path.join(dataDir, 'data'),
    ...settings,
  });
  const child = spawn(bin, ['serve', ...serveArgs], { cwd: dataDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const keep = (b) => { log = (log + b.toString()).slice(-LOG_BYTES); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  child.on('exit', (code, sig) => { exited = `exited with ${code ?? sig}`; });
  const daemon = {
    process: child,
    base: null,
    log: () => log,
    /** Whether it still runs; throws with its output once it has exited. */
    alive() {
      if (exited) throw new Error(`daemon ${exited}:\n${log}`);
      return true;
    },
    /** SIGTERM, then SIGKILL if it has not exited within 10 s. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(t);
    },
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    daemon.alive();
    const m = log.match(/pushd listening on (http:\/\/\S+)/);
    if (m) {
      daemon.base = m[1];
      return daemon;
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the daemon did not print its address within ${timeoutMs} ms:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
