"""A small real cluster for tests: Linux network namespaces on a private bridge.

Each host is a network namespace with one veth link onto a bridge the test creates, on a
private /24. A host's processes run under ``ip netns exec``; :meth:`TestNet.spawn` can also
put them in a mount namespace of their own where tmpfs hides given folders (the driver's)
and ``/tmp``. :meth:`TestNet.close` kills every process in every namespace, deletes the
namespaces, links and bridge, and is safe to call twice; use the net as a context manager.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

IP = shutil.which("ip") or "/usr/sbin/ip"
#: what a host must still see when /tmp and the driver's folders are hidden: this checkout and
#: its virtual environment (a CI clone may well live under /tmp)
KEEP = tuple(sorted({os.path.realpath(p) for p in (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), sys.prefix, sys.base_prefix)}))
#: an empty folder outside /tmp to stage kept folders while /tmp is covered (a tmpfs there is
#: private to the host's mount namespace)
STAGE = next((d for d in ("/mnt", "/media", "/srv", "/opt") if os.path.isdir(d)), "/mnt")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _mount_script(hidden: list[str]) -> list[str]:
    """Shell steps that cover each of ``hidden`` with an empty tmpfs, keeping :data:`KEEP`
    folders inside them visible (bind-mounted through :data:`STAGE`)."""
    keep = [k for k in KEEP if any(_inside(k, h) for h in hidden)]
    steps = []
    if keep:
        steps.append(f"mount -t tmpfs -o size=1m tmpfs {STAGE}")
        for i, k in enumerate(keep):
            steps += [f"mkdir -p {STAGE}/k{i}", f"mount --bind {shlex.quote(k)} {STAGE}/k{i}"]
    steps += [f"mount -t tmpfs -o size=512m tmpfs {shlex.quote(d)}" for d in hidden]
    for i, k in enumerate(keep):
        steps += [f"mkdir -p {shlex.quote(k)}", f"mount --bind {STAGE}/k{i} {shlex.quote(k)}"]
    return steps


def why_no_netns() -> str | None:
    """None where this process can build namespaces; else the reason, for a skip."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); the suite runs as root in CI"
    for tool in ("ip", "unshare"):
        if not shutil.which(tool) and not os.path.exists(IP if tool == "ip" else "/usr/bin/unshare"):
            return f"`{tool}` not found (Debian: apt-get install iproute2 util-linux)"
    probe = f"approbe{os.getpid() % 100000}"
    r = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace here: {r.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return None


def _free_octet() -> int:
    """A third octet of 10.213.x.0/24 that no interface here uses. Two test processes
    (pytest-xdist workers) start their search at different places, so they do not race for
    the same one; a subnet on two bridges would route the test's traffic to the wrong net."""
    used = {int(m) for m in re.findall(r"inet 10\.213\.(\d+)\.", _ip("-4", "-o", "addr", "show", check=False).stdout)}
    worker = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    start = int(worker.group(1)) * 10 if worker else os.getpid()
    for i in range(150):
        octet = 100 + (start + i) % 150
        if octet not in used:
            return octet
    raise RuntimeError("no free 10.213.x.0/24 subnet for a test net: delete leftover bridges (ip link show type bridge)")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([IP, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


class TestNet:
    """Hosts on one bridge. ``tag`` keeps names unique per process (interface names <= 15 chars)."""

    __test__ = False  # not a pytest class

    def __init__(self, subnet_octet: int | None = None, suffix: str = "") -> None:
        self.tag = f"{os.getpid() % 100000}{suffix}"
        octet = subnet_octet if subnet_octet is not None else _free_octet()
        self.prefix = f"10.213.{octet}"
        self.bridge = f"apb{self.tag}"
        self.hosts: dict[str, str] = {}  # name -> address
        self.links: dict[str, str] = {}  # name -> root end of its veth
        self.procs: list[subprocess.Popen] = []
        self._next = 2

    # --- building --------------------------------------------------------------------
    def __enter__(self) -> TestNet:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def gateway(self) -> str:
        """The test process's own address on the bridge (the root namespace)."""
        return f"{self.prefix}.1"

    def ns(self, host: str) -> str:
        return f"ap{self.tag}-{host}"

    def add_host(self, host: str) -> str:
        """A namespace with loopback up and one link onto the bridge; its address."""
        addr = f"{self.prefix}.{self._next}"
        self._next += 1
        ns, root_end = self.ns(host), f"ap{self.tag}{host[:5]}"
        self.hosts[host], self.links[host] = addr, root_end
        _ip("netns", "add", ns)
        _ip("link", "add", root_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", root_end, "master", self.bridge)
        _ip("link", "set", root_end, "up")
        for args in (("link", "set", "lo", "up"), ("addr", "add", f"{addr}/24", "dev", "eth0"), ("link", "set", "eth0", "up")):
            _ip("-n", ns, *args)
        return addr

    def spawn(
        self, host: str, argv: list[str], *, env: dict[str, str], hide: Iterable[str] = (), workdir: str | None = None, log: str | None = None,
    ) -> subprocess.Popen:
        """Run ``argv`` on ``host``. With ``hide`` or ``workdir``: in a private mount namespace
        where each folder of ``hide`` and ``/tmp`` are empty tmpfs, starting in ``workdir``
        (created on that tmpfs)."""
        cmd = [IP, "netns", "exec", self.ns(host)]
        if hide or workdir:
            mounts = _mount_script([d for d in (*hide, "/tmp") if os.path.isdir(d)])
            script = " && ".join([*mounts, f"mkdir -p {shlex.quote(workdir or '/tmp/work')}", f"cd {shlex.quote(workdir or '/tmp/work')}",
                                  "exec " + shlex.join(argv)])
            cmd += ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
        else:
            cmd += argv
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if log:
            out.close()
        self.procs.append(p)
        return p

    # --- failures ---------------------------------------------------------------------
    def pids(self, host: str) -> list[int]:
        r = _ip("netns", "pids", self.ns(host), check=False)
        return [int(x) for x in r.stdout.split()] if r.returncode == 0 else []

    def lose_host(self, host: str, *, silent: bool = False) -> None:
        """A host gone at once: every process in it SIGKILLed (its kernel closes their
        connections), then its link and namespace deleted. ``silent``: the link goes first,
        so nothing reaches the others and they learn of it only by its missed heartbeats."""
        if silent:
            _ip("link", "del", self.links[host], check=False)
        self._kill_all(host)
        _ip("link", "del", self.links.pop(host), check=False)
        _ip("netns", "del", self.ns(host), check=False)
        self.hosts.pop(host, None)

    def _kill_all(self, host: str) -> None:
        for _ in range(50):
            pids = self.pids(host)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    # --- teardown ---------------------------------------------------------------------
    def leftovers(self) -> list[str]:
        """Namespaces, links and processes of this net still present (empty after close)."""
        out = [n for n in _ip("netns", "list", check=False).stdout.split() if n.startswith(f"ap{self.tag}-")]
        links = _ip("-o", "link", "show", check=False).stdout
        out += [w for w in (self.bridge, *self.links.values()) if f" {w}:" in links or f" {w}@" in links]
        out += [f"pid {p.pid}" for p in self.procs if p.poll() is None]
        return out

    def close(self) -> None:
        for host in list(self.hosts):
            self._kill_all(host)
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for host in list(self.hosts):
            _ip("netns", "del", self.ns(host), check=False)
            self.hosts.pop(host)
        for link in list(self.links.values()):
            _ip("link", "del", link, check=False)
        self.links.clear()
        _ip("link", "del", self.bridge, check=False)
