"""The local Kubernetes cluster: ``python -m e2e.cluster up | down | status | env``.

A real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) built from
the official Go modules, kwok managing simulated nodes, one real node (kubelet + kube-proxy +
Debian's containerd, runc and CNI plugins) running real containers, and Prometheus scraping the
real node's pods. Every process is started here, detached, with its PID in ``pids/`` and its log
in ``logs/``; ``down`` stops them by PID and removes every mount, interface and iptables rule the
cluster made.

``up`` is idempotent: when everything already answers it only prints the kubeconfig path. A cold
start wipes the previous state, so every cluster begins empty.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from e2e import components as cfg
from e2e import images, paths, pki


class ClusterError(RuntimeError):
    """A part of the cluster could not be built or started; the message carries its log tail."""


@dataclass(frozen=True)
class Component:
    name: str
    argv: Callable[[cfg.Topology], list[str]]
    # What the component needs besides its own files: "node" parts run only with the real node.
    part: str = "control-plane"
    env: Callable[[cfg.Topology], dict[str, str]] | None = None


COMPONENTS: tuple[Component, ...] = (
    Component("etcd", cfg.etcd_argv),
    Component("kube-apiserver", cfg.apiserver_argv),
    Component("kube-controller-manager", cfg.controller_manager_argv),
    Component("kube-scheduler", cfg.scheduler_argv),
    Component("kwok", cfg.kwok_argv, part="kwok"),
    Component("containerd", cfg.containerd_argv, part="node"),
    Component("kubelet", cfg.kubelet_argv, part="node"),
    Component("kube-proxy", cfg.kube_proxy_argv, part="node"),
    Component("coredns", cfg.coredns_argv, part="node"),
    Component("pod-discovery", cfg.podsd_argv, part="prometheus"),
    Component("prometheus", cfg.prometheus_argv, part="prometheus"),
    # The Gateway API data plane routes to pods, so only with the real node (kwok pods' addresses
    # lead nowhere).
    Component("traefik", cfg.traefik_argv, part="node", env=cfg.traefik_env),
    # Resource metrics for HPAs: the real node's pods only.
    Component("metrics-server", cfg.metrics_server_argv, part="node"),
)
KUBECONFIG_USERS = (
    "admin",
    "controller-manager",
    "scheduler",
    "kube-proxy",
    "kubelet-client",
    "kwok",
    "prometheus",
    "coredns",
    "traefik",
    "metrics-server",
)
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
    "net/bridge/bridge-nf-call-ip6tables": "1",
}
SYSCTL_SAVE = paths.CACHE / "cluster-sysctl-before.json"
PROMETHEUS_URL = f"http://127.0.0.1:{cfg.PROMETHEUS_PORT}"


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


# --- processes -----------------------------------------------------------------------------------


def pid_file(name: str) -> Path:
    return paths.PIDS / f"{name}.pid"


def log_file(name: str) -> Path:
    return paths.LOGS / f"{name}.log"


def read_pid(name: str) -> int | None:
    try:
        return int(pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive for our purposes.
    with contextlib.suppress(FileNotFoundError):
        if " Z " in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]:
            return False
    return True


def log_tail(name: str, lines: int = 40) -> str:
    try:
        text = log_file(name).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {log_file(name)})"
    return "\n".join(text[-lines:])


def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    binary = Path(argv[0])
    if not binary.exists():
        raise ClusterError(
            f"{name}: binary {binary} is missing; run `bash e2e/build-binaries.sh` (or `make bootstrap`)"
        )
    paths.LOGS.mkdir(parents=True, exist_ok=True)
    paths.PIDS.mkdir(parents=True, exist_ok=True)
    with log_file(name).open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=paths.REPO,
            env={**os.environ, **env} if env else None,
        )
    pid_file(name).write_text(str(proc.pid))
    return proc.pid


def stop_pid(pid: int, timeout_seconds: float = 15) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.05)
    # Reap if it happens to be our child (it never is after a detached start, but be tidy).
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_for(
    what: str, check: Callable[[], bool], timeout_seconds: float, component: str | None = None
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        if component and not alive(read_pid(component)):
            raise ClusterError(
                f"{component} exited while waiting for {what}; log tail:\n{log_tail(component)}"
            )
        time.sleep(0.25)
    detail = f"; {component} log tail:\n{log_tail(component)}" if component else ""
    raise ClusterError(f"timed out after {timeout_seconds:.0f}s waiting for {what}{detail}")


# --- talking to the cluster ----------------------------------------------------------------------


def _tls(topo: cfg.Topology, who: str = "admin") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(topo.pki / "ca.crt"))
    ctx.load_cert_chain(str(topo.pki / f"{who}.crt"), str(topo.pki / f"{who}.key"))
    return ctx


def https_ok(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def unix_accepts(path: Path) -> bool:
    """Whether a daemon listens on the unix socket (the file alone may be a dead one's)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(1)
        try:
            conn.connect(str(path))
        except OSError:
            return False
    return True


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(paths.KUBECTL), f"--kubeconfig={paths.KUBECONFIG}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def host_ip() -> str:
    """The address of the interface holding the default route: pods reach the API server there."""
    out = subprocess.run(
        ["ip", "-4", "-json", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=False
    )
    if out.returncode == 0:
        with contextlib.suppress(ValueError, KeyError, IndexError):
            return str(json.loads(out.stdout)[0]["prefsrc"])
    raise ClusterError(
        "no default route: kube-apiserver needs a non-loopback address to advertise; "
        "add one (e.g. `ip addr add 192.0.2.10/24 dev eth0 && ip route add default dev eth0`)"
    )


# --- up ------------------------------------------------------------------------------------------


def binaries_ready() -> bool:
    needed = [
        paths.KUBE_BIN / b
        for b in (
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "kubectl",
        )
    ]
    needed += [paths.ETCD_BIN / "etcd", paths.KWOK_DIR / "kwok", paths.HELM, paths.COREDNS_BIN / "coredns"]
    needed += [paths.TRAEFIK_BIN / "traefik", paths.METRICS_SERVER_BIN / "metrics-server"]
    return all(p.exists() for p in needed)


def ensure_binaries() -> None:
    if binaries_ready():
        return
    log("building binaries from the Go module proxy (cold build: 20-40 min on 2 cores)")
    started = time.monotonic()
    proc = subprocess.run(["bash", str(paths.REPO / "e2e" / "build-binaries.sh"), "all"], check=False)
    if proc.returncode != 0 or not binaries_ready():
        raise ClusterError("e2e/build-binaries.sh failed; see its output above")
    log(f"cold build took {time.monotonic() - started:.0f}s")


def running_components() -> dict[str, bool]:
    return {c.name: alive(read_pid(c.name)) for c in COMPONENTS}


def expected_components() -> list[str]:
    """The components this cluster was started with (the real node is optional)."""
    try:
        real = bool(json.loads((paths.STATE / "topology.json").read_text()).get("real_node", True))
    except FileNotFoundError:
        real = True
    return [c.name for c in COMPONENTS if real or c.part != "node"]


def is_up(topo: cfg.Topology | None = None) -> bool:
    state = running_components()
    if not paths.KUBECONFIG.exists() or not all(state[name] for name in expected_components()):
        return False
    topo = topo or load_topology()
    return https_ok(f"https://127.0.0.1:{cfg.APISERVER_PORT}/readyz", _tls(topo))


def load_topology() -> cfg.Topology:
    try:
        data = json.loads((paths.STATE / "topology.json").read_text())
        return cfg.Topology(host_ip=data["host_ip"])
    except FileNotFoundError:
        return cfg.Topology(host_ip=host_ip())


def write_files(topo: cfg.Topology, kwok_nodes: int, real_node: bool) -> None:
    for sub in ("logs", "pids", "pki", "cni/net.d", "cni/ipam", "prometheus/targets", "prometheus/data"):
        (paths.STATE / sub).mkdir(parents=True, exist_ok=True)
    pki.make_all(topo.pki, host_ip=topo.host_ip, node_name=cfg.NODE_NAME, service_ip=cfg.SERVICE_IP)
    for who in KUBECONFIG_USERS:
        topo.kubeconfig(who).write_text(cfg.kubeconfig_text(topo, who))
    shutil.copy(topo.kubeconfig("admin"), paths.KUBECONFIG)
    topo.file("audit-policy.yaml").write_text(cfg.AUDIT_POLICY)
    topo.file("containerd.toml").write_text(cfg.containerd_config(topo))
    topo.file("cni/net.d/10-rollwise.conflist").write_text(cfg.cni_conflist(topo))
    topo.file("kubelet.yaml").write_text(cfg.kubelet_config(topo))
    topo.file("kube-proxy.yaml").write_text(cfg.kube_proxy_config(topo))
    topo.file("traefik.yaml").write_text(cfg.traefik_config(topo))
    topo.file("prometheus/prometheus.yml").write_text(cfg.prometheus_config(topo))
    topo.file("Corefile").write_text(cfg.corefile(topo))
    topo.file("topology.json").write_text(
        json.dumps({"host_ip": topo.host_ip, "kwok_nodes": kwok_nodes, "real_node": real_node})
    )


def set_sysctls() -> None:
    before: dict[str, str] = {}
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key
        if not path.exists():
            raise ClusterError(f"/proc/sys/{key} is missing: the kernel lacks a feature the real node needs")
        before[key] = path.read_text().strip()
        path.write_text(value)
    if not SYSCTL_SAVE.exists():
        SYSCTL_SAVE.write_text(json.dumps(before))


def restore_sysctls() -> None:
    if not SYSCTL_SAVE.exists():
        return
    for key, value in json.loads(SYSCTL_SAVE.read_text()).items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key).write_text(value)
    SYSCTL_SAVE.unlink()


def up(kwok_nodes: int = 3, *, real_node: bool = True) -> Path:
    """Bring the cluster up (or find it up) and return the kubeconfig path."""
    started = time.monotonic()
    if paths.KUBECONFIG.exists() and is_up():
        log(f"already up ({paths.KUBECONFIG})")
        if alive(read_pid("containerd")) and not node_has_image(images.PAUSE_TAG):
            # Without it no pod can start; it cannot be pulled, so put it back.
            images.import_into_node(images.PAUSE_TAG)
        ensure_kwok_nodes(kwok_nodes)
        return paths.KUBECONFIG
    ensure_binaries()
    # Anything half-running from an earlier start goes first, then a clean slate.
    down(quiet=True)
    shutil.rmtree(paths.STATE, ignore_errors=True)
    topo = cfg.Topology(host_ip=host_ip())
    write_files(topo, kwok_nodes, real_node)
    tls = _tls(topo)

    start("etcd", cfg.etcd_argv(topo))
    wait_for("etcd", lambda: http_ok(f"http://127.0.0.1:{cfg.ETCD_CLIENT_PORT}/health"), 30, "etcd")
    start("kube-apiserver", cfg.apiserver_argv(topo))
    # Pods need the pause image in the node's runtime; build it while the API server starts.
    if real_node:
        images.ensure_pause_image()
    wait_for(
        "kube-apiserver /readyz",
        lambda: https_ok(f"https://127.0.0.1:{cfg.APISERVER_PORT}/readyz", tls),
        90,
        "kube-apiserver",
    )
    start("kube-controller-manager", cfg.controller_manager_argv(topo))
    start("kube-scheduler", cfg.scheduler_argv(topo))
    start("kwok", cfg.kwok_argv(topo))
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=cfg.PROMETHEUS_RBAC + "---\n" + cfg.COREDNS_RBAC + "---\n" + cfg.TRAEFIK_RBAC,
    )
    kubectl("apply", "-f", "-", stdin=cfg.prometheus_service(topo.host_ip))
    topo.file("prometheus/pods.json").write_text("[]")
    start("pod-discovery", cfg.podsd_argv(topo))
    start("prometheus", cfg.prometheus_argv(topo))
    if real_node:
        start_real_node(topo)
    ensure_kwok_nodes(kwok_nodes)
    wait_for(
        "kube-controller-manager healthz",
        lambda: https_ok("https://127.0.0.1:10257/healthz", _insecure()),
        60,
        "kube-controller-manager",
    )
    wait_for(
        "kube-scheduler healthz",
        lambda: https_ok("https://127.0.0.1:10259/healthz", _insecure()),
        60,
        "kube-scheduler",
    )
    wait_for("prometheus ready", lambda: http_ok(f"{PROMETHEUS_URL}/-/ready"), 60, "prometheus")
    wait_for(
        "the default ServiceAccount",
        lambda: kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
        60,
        "kube-controller-manager",
    )
    if real_node:
        wait_for(f"node {cfg.NODE_NAME} Ready", lambda: node_ready(cfg.NODE_NAME), 120, "kubelet")
        start_gateway(topo)
        start_metrics_server(topo)
    wait_for(
        f"{kwok_nodes} kwok nodes Ready",
        lambda: all(node_ready(f"kwok-node-{i}") for i in range(kwok_nodes)),
        60,
        "kwok",
    )
    running = running_components()
    for name in expected_components():
        if not running[name]:
            raise ClusterError(f"{name} exited during start-up; log tail:\n{log_tail(name)}")
    log(f"up in {time.monotonic() - started:.1f}s; kubeconfig: {paths.KUBECONFIG}")
    return paths.KUBECONFIG


def _insecure() -> ssl.SSLContext:
    # The controller-manager and scheduler serve self-signed health endpoints on loopback.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def start_real_node(topo: cfg.Topology) -> None:
    set_sysctls()
    for d in (paths.CONTAINERD_ROOT, paths.CONTAINERD_STATE, paths.KUBELET_ROOT):
        d.mkdir(parents=True, exist_ok=True)
    # A containerd killed with the session leaves its socket file behind: waiting for the file
    # alone raced the new daemon (CI: `ctr import` refused), so stale sockets go and the wait
    # is for a socket that accepts a connection.
    for stale in paths.CONTAINERD_STATE.glob("containerd.sock*"):
        stale.unlink(missing_ok=True)
    start("containerd", cfg.containerd_argv(topo))
    wait_for(
        "containerd to accept connections",
        lambda: unix_accepts(paths.CONTAINERD_SOCK),
        30,
        "containerd",
    )
    images.import_into_node(images.PAUSE_TAG)
    start("kubelet", cfg.kubelet_argv(topo))
    start("kube-proxy", cfg.kube_proxy_argv(topo))
    start("coredns", cfg.coredns_argv(topo))


def start_gateway(topo: cfg.Topology) -> None:
    """Traefik as the Gateway API implementation, and the cluster's one Gateway. Its provider
    watches Gateway API kinds from start-up, so their CRDs go first."""
    from e2e import upstream_crds  # noqa: PLC0415 - it imports this module

    upstream_crds.install()
    start("traefik", cfg.traefik_argv(topo), cfg.traefik_env(topo))
    kubectl("apply", "-f", "-", stdin=cfg.GATEWAY)
    wait_for("traefik ping", lambda: http_ok(f"http://127.0.0.1:{cfg.GATEWAY_PING_PORT}/ping"), 60, "traefik")
    gateway = ("gateway", cfg.GATEWAY_NAME, "-n", cfg.GATEWAY_NAMESPACE)
    wait_for("the Gateway programmed", lambda: condition_true("Programmed", *gateway), 60, "traefik")


def start_metrics_server(topo: cfg.Topology) -> None:
    topo.file("metrics-server").mkdir(parents=True, exist_ok=True)
    kubectl("apply", "-f", "-", stdin=cfg.metrics_server_objects(topo.host_ip))
    start("metrics-server", cfg.metrics_server_argv(topo))
    wait_for(
        "the metrics API available",
        lambda: condition_true("Available", "apiservice", "v1beta1.metrics.k8s.io"),
        90,
        "metrics-server",
    )


def condition_true(condition: str, *target: str) -> bool:
    """Whether the object `kubectl get *target` names reports `condition` True."""
    out = kubectl(
        "get", *target, "-o", f"jsonpath={{.status.conditions[?(@.type=='{condition}')].status}}", check=False
    )
    return out.returncode == 0 and out.stdout.strip() == "True"


def node_has_image(tag: str) -> bool:
    out = subprocess.run(
        [images.CTR, "--address", str(paths.CONTAINERD_SOCK), "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"docker.io/{tag}" in out.stdout.split()


def node_ready(name: str) -> bool:
    proc = kubectl(
        "get", "node", name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
    )
    return proc.returncode == 0 and proc.stdout.strip() == "True"


def ensure_kwok_nodes(count: int) -> None:
    docs = "\n---\n".join(json.dumps(cfg.kwok_node_manifest(i)) for i in range(count))
    if count:
        kubectl("apply", "--server-side", "--field-manager=rollwise-e2e", "-f", "-", stdin=docs)


# --- down ----------------------------------------------------------------------------------------


def _our_mounts() -> list[str]:
    prefixes = (str(paths.CONTAINERD_ROOT.parent), str(paths.CONTAINERD_STATE.parent), str(paths.STATE))
    points: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefixes) or point.startswith("/run/netns/cni-"):
                points.append(point)
    return points


KUBEPODS_CGROUPS = Path("/sys/fs/cgroup")


def _pod_cgroups() -> list[Path]:
    """Every cgroup below a ``kubepods`` root, deepest first (the order rmdir needs)."""
    found: list[Path] = []
    for root in KUBEPODS_CGROUPS.glob("*/kubepods"):
        found += [p for p in root.rglob("*") if p.is_dir()]
        found.append(root)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _kill_pods(timeout_seconds: float = 10) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        pids = set()
        for group in _pod_cgroups():
            with contextlib.suppress(OSError):
                pids |= {int(p) for p in (group / "cgroup.procs").read_text().split()}
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for group in _pod_cgroups():
        with contextlib.suppress(OSError):
            group.rmdir()


def _shim_pids() -> Iterator[int]:
    """containerd-shim processes of OUR containerd (Docker's own shims are left alone)."""
    sock = str(paths.CONTAINERD_SOCK)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in cmd:
            yield int(entry.name)


def down(*, quiet: bool = False) -> None:
    """Stop every process the cluster started, by PID, and undo its mounts, links and rules."""
    for comp in reversed(COMPONENTS):
        pid = read_pid(comp.name)
        if alive(pid):
            assert pid is not None
            if not quiet:
                log(f"stopping {comp.name} (pid {pid})")
            stop_pid(pid)
        pid_file(comp.name).unlink(missing_ok=True)
    # With the kubelet and containerd gone, the pods' processes live on under the kubepods
    # cgroups: end them there, then their shims. Each network namespace goes with its last
    # process and mount, and each veth with its namespace.
    _kill_pods()
    for pid in _shim_pids():
        stop_pid(pid, timeout_seconds=5)
    for point in sorted(_our_mounts(), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    for ns in Path("/run/netns").glob("cni-*"):
        ns.unlink(missing_ok=True)
    if Path(f"/sys/class/net/{cfg.BRIDGE}").exists():
        subprocess.run(["ip", "link", "delete", cfg.BRIDGE], capture_output=True, check=False)
    kube_proxy = paths.KUBE_BIN / "kube-proxy"
    if kube_proxy.exists() and _has_kube_rules():
        subprocess.run([str(kube_proxy), "--cleanup"], capture_output=True, check=False)
    _remove_our_chains()
    restore_sysctls()


IPTABLES = ("iptables", "ip6tables")
OUR_CHAINS = ("KUBE-", "CNI-")


def _iptables_save(family: str = "iptables") -> str:
    out = subprocess.run([f"{family}-save"], capture_output=True, text=True, check=False)
    return out.stdout


def _has_kube_rules() -> bool:
    return any(":KUBE-" in _iptables_save(f) for f in IPTABLES)


def _remove_our_chains() -> None:
    """Every KUBE-* and CNI-* chain, and the jumps to them from built-in chains.

    kube-proxy --cleanup removes its own rules, but the kubelet's (KUBE-FIREWALL,
    KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) and the portmap plugin's stay behind otherwise.
    """
    for family in IPTABLES:
        table = ""
        chains: list[tuple[str, str]] = []
        for line in _iptables_save(family).splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":") and line[1:].startswith(OUR_CHAINS):
                chains.append((table, line[1:].split()[0]))
            elif (
                line.startswith("-A ")
                and not line.split()[1].startswith(OUR_CHAINS)
                and any(f"-j {prefix}" in line for prefix in OUR_CHAINS)
            ):
                subprocess.run(
                    [family, "-t", table, "-D", *line.split()[1:]], capture_output=True, check=False
                )
        for table, chain in chains:
            subprocess.run([family, "-t", table, "-F", chain], capture_output=True, check=False)
        for table, chain in chains:
            subprocess.run([family, "-t", table, "-X", chain], capture_output=True, check=False)


# --- leftovers (used by `status` and by the tests of `down`) -------------------------------------


def leftovers() -> dict[str, list[str]]:
    """What of the cluster is still on the host: processes, mounts, interfaces, iptables rules."""
    procs = [c.name for c, ok in zip(COMPONENTS, running_components().values(), strict=True) if ok]
    procs += [f"containerd-shim pid {p}" for p in _shim_pids()]
    links: list[str] = [
        n.name for n in Path("/sys/class/net").iterdir() if n.name == cfg.BRIDGE or n.name.startswith("veth")
    ]
    rules = [
        f"{family}: {line}"
        for family in IPTABLES
        for line in _iptables_save(family).splitlines()
        if any(prefix in line for prefix in OUR_CHAINS)
    ]
    cgroups = [str(p) for p in _pod_cgroups()]
    return {
        "processes": procs,
        "mounts": _our_mounts(),
        "interfaces": links,
        "iptables": rules,
        "cgroups": cgroups,
    }


def restart_component(name: str) -> int:
    """Start one stopped component again with its usual arguments (tests stop one to see how
    the rest copes, e.g. Prometheus going away mid-rollout)."""
    comp = next(c for c in COMPONENTS if c.name == name)
    if alive(read_pid(name)):
        return read_pid(name) or 0
    topo = load_topology()
    return start(name, comp.argv(topo), comp.env(topo) if comp.env else None)


def stop_component(name: str) -> None:
    pid = read_pid(name)
    if alive(pid):
        assert pid is not None
        stop_pid(pid)


def user_kubeconfig(user: str, groups: tuple[str, ...] = ()) -> Path:
    """A kubeconfig for a client certificate with this user name and groups (issued on demand).

    Tests give each actor its own identity so the audit log tells their writes apart.
    """
    topo = load_topology()
    stem = f"user-{user}"
    if not (topo.pki / f"{stem}.crt").exists():
        ca_key, ca_cert = pki.load_ca(topo.pki)
        pki.issue(topo.pki, ca_key, ca_cert, pki.Identity(stem, user, groups))
    path = topo.kubeconfig(stem)
    path.write_text(cfg.kubeconfig_text(topo, stem))
    return path


def audit_path() -> Path:
    return paths.LOGS / "audit.log"


# --- status / env --------------------------------------------------------------------------------


def rss_mib(pid: int | None) -> float:
    """Resident memory of a process, in MiB (0 when it is gone)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def status() -> int:
    state = running_components()
    total = 0.0
    for comp in COMPONENTS:
        pid = read_pid(comp.name)
        word = "running" if state[comp.name] else "stopped"
        mib = rss_mib(pid) if state[comp.name] else 0.0
        total += mib
        print(f"{comp.name:24} {word:8} pid={pid or '-':<8} rss={mib:6.0f}MiB log={log_file(comp.name)}")
    print(f"{'total':24} {'':8} {'':12} rss={total:6.0f}MiB (cluster processes, pods excluded)")
    print(f"kubeconfig: {paths.KUBECONFIG}{'' if paths.KUBECONFIG.exists() else ' (absent)'}")
    print(f"prometheus: {PROMETHEUS_URL}")
    return 0 if all(state[name] for name in expected_components()) else 1


def env_lines() -> list[str]:
    return [
        f"export KUBECONFIG={paths.KUBECONFIG}",
        f"export ROLLWISE_PROMETHEUS_URL={PROMETHEUS_URL}",
        f"export PATH={paths.KUBE_BIN}:{paths.HELM_BIN}:$PATH",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.cluster", description="The local Kubernetes cluster."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the cluster (idempotent); prints the kubeconfig path")
    p_up.add_argument("--kwok-nodes", type=int, default=3, help="simulated nodes (default 3)")
    p_up.add_argument("--no-real-node", action="store_true", help="control plane and kwok only")
    sub.add_parser("down", help="stop everything and clean up")
    sub.add_parser("status", help="what runs and where its logs are")
    sub.add_parser("env", help="shell exports for kubectl, helm and Prometheus")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            if args.kwok_nodes < 0:
                parser.error("--kwok-nodes must be 0 or more")
            print(up(args.kwok_nodes, real_node=not args.no_real_node))
            return 0
        if args.cmd == "down":
            down()
            return 0
        if args.cmd == "status":
            return status()
        print("\n".join(env_lines()))
        return 0
    except ClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
