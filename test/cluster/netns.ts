// Hosts for multi-host tests on one machine: each host is a Linux network namespace (`ip netns`,
// iproute2) with its own address on a private /24, joined to the others by veth pairs on a bridge
// in the root namespace. Processes run inside a host with `ip netns exec`; services of the root
// namespace that listen on loopback (PostgreSQL, the S3 server) are reached through TCP forwarders
// that listen on the bridge's address. Every name carries a random tag, so two runs never clash,
// and `close()` removes what was made (processes, namespaces, veths, bridge), also when the test
// process exits early; what a run killed outright left behind, the next run removes (the names
// carry the creating process's id).
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import { alive } from '../support/processes.ts';

export interface Host {
  name: string;
  namespace: string;
  address: string;
}

export interface Network {
  /** The bridge's address in the root namespace: where the hosts reach forwarded services. */
  gateway: string;
  hosts: Host[];
  host(name: string): Host;
  /** A TCP forwarder on `gateway` to `target` (e.g. PostgreSQL on 127.0.0.1): the port hosts use. */
  forward(target: { host: string; port: number }): Promise<number>;
  /** The argv prefix that runs a command inside `host`'s namespace. */
  launcher(host: Host): string[];
  /** The processes running inside `host`. */
  pids(host: Host): number[];
  /** Kills what still runs in the hosts, removes the namespaces, veths and bridge, closes forwarders. */
  close(): Promise<void>;
}

/** Why hosts cannot be made here (not Linux, not root), or false. Where both hold, failing to make them is an error. */
export function networkUnavailable(): string | false {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'network namespaces need root (ip netns add); CI runs as root';
  return false;
}

const COMMAND_TIMEOUT_MS = 10_000;
const ip = (...args: string[]) => execFileSync('ip', args, { timeout: COMMAND_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });

/** A 10.77.N.0/24 that no interface of this machine uses yet (another run's bridge, say). */
function freeSubnet(): string {
  const used = ip('-4', '-o', 'addr', 'show');
  for (let attempt = 0; attempt < 50; attempt++) {
    const subnet = `10.77.${1 + crypto.randomInt(254)}`;
    if (!used.includes(` ${subnet}.`)) return subnet;
  }
  throw new Error('no free 10.77.N.0/24 subnet for the test network');
}

/** Makes one namespace per name, addressed .11, .12, … in a fresh subnet whose .1 is the bridge. */
export async function createNetwork(names: string[]): Promise<Network> {
  removeLeftovers();
  const tag = crypto.randomBytes(3).toString('hex'); // interface names have at most 15 characters
  const bridge = `tf${tag}br`;
  const subnet = freeSubnet();
  const gateway = `${subnet}.1`;
  const owner = `${OWNER_PREFIX}${process.pid}`;
  const hosts: Host[] = names.map((name, i) => ({ name, namespace: `${owner}-${tag}-${name}`, address: `${subnet}.${11 + i}` }));
  const forwarders: net.Server[] = [];
  const sockets = new Set<net.Socket>();

  let closed = false;
  const removeLinks = () => {
    if (closed) return;
    closed = true;
    for (const host of hosts) removeNamespace(host.namespace);
    // Deleting a namespace frees its veths only once the kernel has torn it down (seconds to
    // minutes on a busy machine): delete our ends now, which takes each pair.
    hosts.forEach((_host, i) => tryIp('link', 'del', outsideLink(tag, i)));
    tryIp('link', 'del', bridge);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    removeLinks();
    process.kill(process.pid, signal); // as the signal would have ended the process
  };
  process.once('exit', removeLinks);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    ip('link', 'add', bridge, 'type', 'bridge');
    ip('link', 'set', bridge, 'alias', owner);
    ip('addr', 'add', `${gateway}/24`, 'dev', bridge);
    ip('link', 'set', bridge, 'up');
    hosts.forEach((host, i) => {
      const outside = outsideLink(tag, i);
      const inside = `tf${tag}h${i}`;
      ip('netns', 'add', host.namespace);
      ip('link', 'add', outside, 'type', 'veth', 'peer', 'name', inside);
      ip('link', 'set', inside, 'netns', host.namespace);
      ip('link', 'set', outside, 'master', bridge);
      ip('link', 'set', outside, 'up');
      ip('-n', host.namespace, 'addr', 'add', `${host.address}/24`, 'dev', inside);
      ip('-n', host.namespace, 'link', 'set', inside, 'up');
      ip('-n', host.namespace, 'link', 'set', 'lo', 'up');
    });
  } catch (error) {
    removeLinks();
    throw new Error(`could not make the test network (ip netns, veth, bridge): ${(error as { stderr?: string }).stderr || (error as Error).message}`);
  }

  return {
    gateway,
    hosts,
    host(name) {
      const host = hosts.find((h) => h.name === name);
      if (!host) throw new Error(`no host named ${name}`);
      return host;
    },
    async forward(target) {
      const server = net.createServer((client) => {
        const upstream = net.connect(target);
        for (const socket of [client, upstream]) {
          sockets.add(socket);
          socket.once('close', () => sockets.delete(socket));
          socket.on('error', () => {
            client.destroy();
            upstream.destroy();
          });
        }
        client.pipe(upstream).pipe(client);
      });
      forwarders.push(server);
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, gateway, resolve));
      return (server.address() as net.AddressInfo).port;
    },
    launcher: (host) => ['ip', 'netns', 'exec', host.namespace],
    pids: (host) => pidsIn(host.namespace),
    async close() {
      removeLinks();
      process.removeListener('exit', removeLinks);
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      for (const socket of sockets) socket.destroy();
      await Promise.all(forwarders.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    },
  };
}

const OWNER_PREFIX = 'tuneforge-';
const outsideLink = (tag: string, i: number) => `tf${tag}v${i}`;
const pidsIn = (namespace: string) => tryIp('netns', 'pids', namespace).split('\n').filter(Boolean).map(Number);

/** SIGKILLs what still runs in `namespace` (only processes a test started live there), then deletes it and so its veth pairs. */
function removeNamespace(namespace: string) {
  for (const pid of pidsIn(namespace)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  tryIp('netns', 'del', namespace);
}

/** Namespaces and bridges of runs whose process is gone (killed before it could clean up). */
function removeLeftovers() {
  const deadOwner = (name: string) => {
    const pid = name.startsWith(OWNER_PREFIX) ? Number.parseInt(name.slice(OWNER_PREFIX.length), 10) : NaN;
    return Number.isInteger(pid) && !alive(pid);
  };
  for (const line of tryIp('netns', 'list').split('\n')) {
    const namespace = line.split(' ')[0];
    if (namespace && deadOwner(namespace)) removeNamespace(namespace);
  }
  const bridges = JSON.parse(tryIp('-j', 'link', 'show', 'type', 'bridge') || '[]') as { ifname: string; ifalias?: string }[];
  for (const bridge of bridges) if (bridge.ifalias && deadOwner(bridge.ifalias)) tryIp('link', 'del', bridge.ifname);
}

function tryIp(...args: string[]): string {
  try {
    return ip(...args);
  } catch {
    return '';
  }
}
