// A private LAN of network namespaces for the end-to-end tests (the same layout as the bridge's
// Rust LAN tests): machines `<prefix>-1..N` on one switch, addresses 10.<net>.0.i/24, multicast
// on. Bridges run inside with `ip netns exec`; Chromium runs inside through a wrapper script, so
// Playwright still drives it over its pipe. Nothing touches the host's interfaces. Needs root.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

export class Lan {
  constructor(n, dir, bridgeBin) {
    this.n = n;
    this.dir = dir;
    this.bin = bridgeBin;
    this.prefix = `e${process.pid % 100000}`;
    this.net = 100 + (process.pid % 100);
    this.children = [];
    const sw = `${this.prefix}-sw`;
    ip('netns', 'add', sw);
    ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', sw, 'link', 'set', 'br0', 'type', 'bridge', 'mcast_snooping', '0');
    ip('-n', sw, 'link', 'set', 'br0', 'up');
    for (let i = 1; i <= n; i++) {
      const ns = this.ns(i);
      const [h, s] = [`${this.prefix}h${i}`, `${this.prefix}s${i}`];
      ip('netns', 'add', ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('link', 'add', h, 'type', 'veth', 'peer', 'name', s);
      ip('link', 'set', h, 'netns', ns);
      ip('link', 'set', s, 'netns', sw);
      ip('-n', sw, 'link', 'set', s, 'master', 'br0');
      ip('-n', sw, 'link', 'set', s, 'up');
      try {
        execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
      } catch {}
      ip('-n', ns, 'link', 'set', h, 'name', 'eth0');
      ip('-n', ns, 'link', 'set', 'eth0', 'multicast', 'on');
      ip('-n', ns, 'addr', 'add', `${this.addr(i)}/24`, 'dev', 'eth0');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      ip('-n', ns, 'route', 'add', 'default', 'dev', 'eth0');
      // Chromium is started through this wrapper: same pipes, inside the namespace.
      const wrapper = join(dir, `chromium-${i}.sh`);
      writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} /usr/bin/chromium "$@"\n`);
      chmodSync(wrapper, 0o755);
    }
  }

  ns(i) {
    return `${this.prefix}-${i}`;
  }

  addr(i) {
    return `10.${this.net}.0.${i}`;
  }

  chromium(i) {
    return join(this.dir, `chromium-${i}.sh`);
  }

  dataDir(i) {
    return join(this.dir, `data-${i}`);
  }

  /** Runs `kathon-bridge` on machine `i` (its data directory; never starts a bridge of its own
   *  unless `autostart`). Returns stdout; throws with stderr. */
  cli(i, args, { autostart = false } = {}) {
    const flags = ['--data-dir', this.dataDir(i), ...(autostart ? [] : ['--no-autostart'])];
    try {
      return execFileSync('ip', ['netns', 'exec', this.ns(i), this.bin, ...flags, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
    } catch (e) {
      throw new Error(`kathon-bridge ${args.join(' ')} on ${i}: ${e.stderr?.toString() ?? e}`);
    }
  }

  json(i, args, options) {
    return JSON.parse(this.cli(i, ['--json', ...args], options));
  }

  /** Starts a bridge on machine `i`; resolves once it serves. */
  async bridge(i, extra = []) {
    mkdirSync(this.dir, { recursive: true });
    const log = join(this.dir, `bridge-${i}-${this.children.length}.log`);
    const child = spawn(
      'ip',
      ['netns', 'exec', this.ns(i), this.bin, '--data-dir', this.dataDir(i), 'run', '--interface', this.addr(i), '--name', `machine ${i}`, ...extra],
      { stdio: ['ignore', 'pipe', openSync(log, 'w')], env: { ...process.env, RUST_LOG: 'info,webrtc=warn,rtc=warn' } },
    );
    this.children.push(child);
    const lines = createInterface({ input: child.stdout });
    await new Promise((resolve, reject) => {
      let serving = false;
      lines.on('line', (line) => {
        if (line.trim().startsWith('status:')) {
          serving = true;
          resolve();
        }
      });
      child.on('exit', () => {
        if (!serving) reject(new Error(`bridge ${i} exited: ${readFileSync(log, 'utf8')}`));
      });
    });
    return {
      child,
      log,
      stop: () =>
        new Promise((resolve) => {
          child.on('exit', resolve);
          child.kill('SIGTERM');
        }),
    };
  }

  /** Cuts machine `i` off the LAN (its switch port down), or joins it again. */
  link(i, up) {
    ip('-n', `${this.prefix}-sw`, 'link', 'set', `${this.prefix}s${i}`, up ? 'up' : 'down');
  }

  /** Starts any program inside machine `i`'s namespace (killed with the LAN). */
  spawnIn(i, cmd, args, log) {
    const child = spawn('ip', ['netns', 'exec', this.ns(i), cmd, ...args], { stdio: ['ignore', openSync(log, 'w'), openSync(`${log}.err`, 'w')] });
    this.children.push(child);
    return child;
  }

  down() {
    for (const c of this.children) {
      try {
        c.kill('SIGKILL');
      } catch {}
    }
    for (let i = 1; i <= this.n; i++) {
      try {
        ip('netns', 'del', this.ns(i));
      } catch {}
    }
    try {
      ip('netns', 'del', `${this.prefix}-sw`);
    } catch {}
  }
}

/** Polls `check` (sync or async) until it returns a truthy value. */
export async function until(what, check, timeoutMs = 30_000) {
  const start = Date.now();
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
