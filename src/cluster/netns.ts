/**
 * Network namespaces for test clusters (root only): one namespace per host, all
 * joined by veth pairs to a bridge in a "switch" namespace, so that a test can
 * cut one host off (link down) or kill it. Hosts get addresses in 127.77.N.0/24
 * with route_localnet on: a range no real network uses, so no traffic can leave
 * the machine (rexd itself now listens anywhere, over TLS).
 */
import { execFileSync } from 'node:child_process';

/** Runs `ip ...`, throwing with ip's own message on failure. */
function ip(...args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? err.message).trim()}`);
  }
}

function nsExec(ns: string, ...args: string[]): string {
  return ip('netns', 'exec', ns, ...args);
}

/** True when this process may create namespaces (root with iproute2). */
export function netnsAvailable(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** One host's place in the namespace network. */
export interface NetnsHost {
  name: string;
  ns: string;
  address: string;
  /** The switch-side end of its veth pair, for cutting the link. */
  switchIf: string;
}

/** A set of namespaces joined by a bridge; `id` (1-250) keeps concurrent clusters apart. */
export class NetnsNetwork {
  readonly switchNs: string;
  readonly hosts: NetnsHost[] = [];

  constructor(readonly id: number) {
    if (!Number.isInteger(id) || id < 1 || id > 250) throw new RangeError(`netns network id must be 1..250, got ${id}`);
    this.switchNs = `rex${id}-sw`;
  }

  /** Creates the switch and one namespace per name; on failure removes what it made. */
  create(names: string[]): NetnsHost[] {
    try {
      ip('netns', 'add', this.switchNs);
      nsExec(this.switchNs, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
      nsExec(this.switchNs, 'ip', 'link', 'set', 'br0', 'up');
      nsExec(this.switchNs, 'ip', 'link', 'set', 'lo', 'up');
      names.forEach((name, k) => {
        const ns = `rex${this.id}-${k}`;
        const hostIf = `rx${this.id}h${k}`;
        const switchIf = `rx${this.id}s${k}`;
        ip('netns', 'add', ns);
        this.hosts.push({ name, ns, address: `127.77.${this.id}.${k + 1}`, switchIf });
        ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', switchIf);
        ip('link', 'set', hostIf, 'netns', ns);
        ip('link', 'set', switchIf, 'netns', this.switchNs);
        nsExec(this.switchNs, 'ip', 'link', 'set', switchIf, 'master', 'br0');
        nsExec(this.switchNs, 'ip', 'link', 'set', switchIf, 'up');
        // 127/8 is "martian" on anything but lo unless route_localnet is on, per namespace and interface.
        nsExec(ns, 'sysctl', '-qw', 'net.ipv4.conf.all.route_localnet=1');
        nsExec(ns, 'sysctl', '-qw', `net.ipv4.conf.${hostIf}.route_localnet=1`);
        nsExec(ns, 'ip', 'link', 'set', 'lo', 'up');
        nsExec(ns, 'ip', 'addr', 'add', `127.77.${this.id}.${k + 1}/24`, 'dev', hostIf);
        nsExec(ns, 'ip', 'link', 'set', hostIf, 'up');
      });
      return this.hosts;
    } catch (e) {
      this.destroy();
      throw e;
    }
  }

  /**
   * The command prefix that runs a program inside a host's namespace. The
   * host also gets a UTS namespace with its own name, so gethostname() there
   * says which host a process runs on (rfork's example prints it). Every step
   * execs, so the pid started is the program's.
   */
  execPrefix(name: string): string[] {
    return ['ip', 'netns', 'exec', this.host(name).ns, ...hostnamePrefix(name)];
  }

  /** The file holding a host's network namespace (for nsenter). */
  nsFile(name: string): string {
    return `/run/netns/${this.host(name).ns}`;
  }

  /** Takes a host's link down: it stays up but can reach no one. */
  cut(name: string): void {
    nsExec(this.switchNs, 'ip', 'link', 'set', this.host(name).switchIf, 'down');
  }

  /** Brings a cut host's link back. */
  restore(name: string): void {
    nsExec(this.switchNs, 'ip', 'link', 'set', this.host(name).switchIf, 'up');
  }

  /** Deletes every namespace of this network (veth pairs go with them). */
  destroy(): void {
    for (const h of this.hosts) {
      try {
        ip('netns', 'del', h.ns);
      } catch {
        /* already gone */
      }
    }
    try {
      ip('netns', 'del', this.switchNs);
    } catch {
      /* already gone */
    }
  }

  private host(name: string): NetnsHost {
    const h = this.hosts.find((x) => x.name === name);
    if (!h) throw new Error(`no host ${name} in netns network ${this.id}`);
    return h;
  }
}

/** The command prefix giving what it runs a UTS namespace whose host name is `name` (it execs: the pid is the program's). */
export function hostnamePrefix(name: string): string[] {
  return ['unshare', '--uts', '--', 'sh', '-c', 'echo "$0" > /proc/sys/kernel/hostname && exec "$@"', name];
}

/** Rebuilds the handle of a network created by another process (from cluster.json). */
export function attachNetwork(id: number, hosts: NetnsHost[]): NetnsNetwork {
  const n = new NetnsNetwork(id);
  n.hosts.push(...hosts);
  return n;
}
