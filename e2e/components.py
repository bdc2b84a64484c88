"""What each process of the local cluster is: its argv and the files it reads.

Pure text generation from a ``Topology``; ``cluster.py`` starts and stops the processes. Flags
follow what kubeadm gives each component, so the API behaves as in a production cluster:
client-certificate authentication, Node+RBAC authorization, NodeRestriction admission,
service-account tokens, the aggregation layer and an audit log of every write.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from e2e import paths

NODE_NAME = "rollwise-node"
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service's ClusterIP: first address of SERVICE_CIDR
BRIDGE = "rwbr0"
# kwok gives simulated pods addresses from here; nothing ever connects to them (Prometheus keeps
# only pods on the real node), and 198.18.0.0/15 is the benchmarking range, never routed.
KWOK_POD_CIDR = "198.18.0.0/16"

APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
PROMETHEUS_PORT = 9090
# The Gateway API data plane (Traefik, on the host like kube-proxy): the one Gateway's HTTP
# listener, on the host's address so clients on the host reach it, and Traefik's health port.
GATEWAY_PORT = 18000
GATEWAY_PING_PORT = 18082
GATEWAY_CLASS = "traefik"
GATEWAY_NAMESPACE = "rollwise-gateway"
GATEWAY_NAME = "models"
# metrics-server (the resource metrics API HPAs read), on the host; the API server reaches it
# through a selector-less Service whose endpoint is this host (aggregator routing to endpoints).
METRICS_SERVER_PORT = 4443
SCRAPE_INTERVAL = "2s"

# How a pod chooses a node: simulated nodes carry this taint and label; the real node has neither
# taint, so pods land on the real node unless they tolerate the taint and select the label.
SIMULATED_TAINT_KEY = "rollwise.dev/simulated"
NODE_KIND_LABEL = "rollwise.dev/node-kind"
# Pods opt in to scraping with this annotation (and prometheus.io/port, prometheus.io/path).
SCRAPE_ANNOTATION = "prometheus.io/scrape"


@dataclass(frozen=True)
class Topology:
    host_ip: str
    state: Path = paths.STATE

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    def file(self, name: str) -> Path:
        return self.state / name

    def kubeconfig(self, who: str) -> Path:
        return self.state / f"{who}.kubeconfig"


def kubeconfig_text(topo: Topology, who: str, server: str | None = None) -> str:
    """A kubeconfig authenticating with the client certificate ``pki/<who>.crt``."""
    server = server or f"https://127.0.0.1:{APISERVER_PORT}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "rollwise-local",
                "cluster": {"server": server, "certificate-authority": str(topo.pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": who,
                "user": {
                    "client-certificate": str(topo.pki / f"{who}.crt"),
                    "client-key": str(topo.pki / f"{who}.key"),
                },
            }
        ],
        "contexts": [{"name": "rollwise-local", "context": {"cluster": "rollwise-local", "user": who}}],
        "current-context": "rollwise-local",
    }
    return json.dumps(doc, indent=2)


def etcd_argv(topo: Topology) -> list[str]:
    client = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
    peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    return [
        str(paths.ETCD_BIN / "etcd"),
        "--name=rollwise",
        f"--data-dir={topo.file('etcd')}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=rollwise={peer}",
        "--auto-compaction-retention=1",
        "--quota-backend-bytes=8589934592",
        "--log-level=warn",
    ]


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
# Every write at Metadata level, reads not at all: enough to count API writes per client
# (the operator's idle reconcile must make none) without the log outgrowing the disk.
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["get", "list", "watch"]
  - level: None
    resources: [{group: "coordination.k8s.io", resources: ["leases"]}]
  - level: None
    users: ["system:kube-controller-manager", "system:kube-scheduler", "rollwise-kwok"]
    verbs: ["update", "patch"]
    resources: [{group: "", resources: ["nodes/status", "pods/status"]}]
  - level: Metadata
"""


def apiserver_argv(topo: Topology) -> list[str]:
    pki = topo.pki
    return [
        str(paths.KUBE_BIN / "kube-apiserver"),
        f"--advertise-address={topo.host_ip}",
        "--bind-address=0.0.0.0",
        f"--secure-port={APISERVER_PORT}",
        f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        "--enable-aggregator-routing=true",
        f"--audit-policy-file={topo.file('audit-policy.yaml')}",
        f"--audit-log-path={topo.file('logs/audit.log')}",
        "--audit-log-maxsize=200",
        "--audit-log-maxbackup=2",
        "--profiling=false",
    ]


def controller_manager_argv(topo: Topology) -> list[str]:
    kc = topo.kubeconfig("controller-manager")
    pki = topo.pki
    return [
        str(paths.KUBE_BIN / "kube-controller-manager"),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        "--secure-port=10257",
        # One instance: leader election adds nothing but a way to die. On a loaded 2-core machine a
        # lease renewal missing its 10 s deadline made it exit mid-run (CI, 2026-12-06), and every
        # later test waited for ReplicaSets that were never made.
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--cluster-cidr={CLUSTER_CIDR}",
        "--controllers=*,bootstrapsigner,tokencleaner",
        # HPAs read resource metrics every 5 s instead of 15 s so tests see scaling promptly;
        # the semantics are unchanged.
        "--horizontal-pod-autoscaler-sync-period=5s",
    ]


def scheduler_argv(topo: Topology) -> list[str]:
    kc = topo.kubeconfig("scheduler")
    return [
        str(paths.KUBE_BIN / "kube-scheduler"),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        "--secure-port=10259",
        "--leader-elect=false",  # one instance, as for the controller manager
    ]


def kwok_argv(topo: Topology) -> list[str]:
    return [
        str(paths.KWOK_DIR / "kwok"),
        f"--kubeconfig={topo.kubeconfig('kwok')}",
        f"--config={paths.KWOK_DIR / 'stages' / 'stage' / 'fast'}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        f"--cidr={KWOK_POD_CIDR}",
        "--node-ip=198.18.255.254",
        "--node-lease-duration-seconds=40",
        "--server-address=",
    ]


def kwok_node_manifest(index: int) -> dict[str, object]:
    name = f"kwok-node-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                NODE_KIND_LABEL: "simulated",
            },
        },
        "spec": {"taints": [{"key": SIMULATED_TAINT_KEY, "value": "true", "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "250"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "250"},
        },
    }


def containerd_config(topo: Topology) -> str:
    cni_conf = topo.file("cni/net.d")
    return f"""\
version = 2
root = "{paths.CONTAINERD_ROOT}"
state = "{paths.CONTAINERD_STATE}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{paths.CONTAINERD_SOCK}"

[ttrpc]
  address = "{paths.CONTAINERD_STATE}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.CONTAINERD_ROOT}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # Built locally by e2e/images.py and imported; nothing is ever pulled.
  sandbox_image = "docker.io/rollwise/pause:3.10"
  enable_unprivileged_ports = true
  # Our VMs withhold CAP_SYS_RESOURCE even from root, so no process may lower its OOM score; the
  # sandbox's default -998 makes runc init die ("failed to update /proc/self/oom_score_adj:
  # Permission denied"). Clamp adjustments at the current floor, as rootless setups do.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroup v1 without systemd: the cgroupfs driver, matching the kubelet.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
"""


def cni_conflist(topo: Topology) -> str:
    doc = {
        "cniVersion": "1.0.0",
        "name": "rollwise",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # No masquerade: pods talk only to the host and to each other; kube-proxy does the
                # Service NAT. Fewer rules to clean up on `down`.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(topo.file("cni/ipam")),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(doc, indent=2)


def kubelet_config(topo: Topology) -> str:
    pki = topo.pki
    return f"""\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Our machines run cgroup v1 (hybrid). Kubernetes >= 1.35 refuses it unless told otherwise;
# 1.37 is the last line whose kubelet still accepts it and Debian's containerd 1.6 (see README).
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{paths.CONTAINERD_SOCK}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {pki / "ca.crt"}}}
authorization: {{mode: Webhook}}
tlsCertFile: {pki / "kubelet-serving.crt"}
tlsPrivateKeyFile: {pki / "kubelet-serving.key"}
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
clusterDomain: cluster.local
# CoreDNS runs on the host (like kube-proxy) and answers pods on the node's address.
clusterDNS: ["{topo.host_ip}"]
resolvConf: /etc/resolv.conf
failSwapOn: false
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
serializeImagePulls: false
# Images are imported, never pulled: one the kubelet garbage-collected could never come back
# (the pause image least of all), so image GC is off. Our machines share a disk whose free space
# swings by tens of GB with other work, so disk eviction only acts when the disk is nearly full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
"""


def kubelet_argv(topo: Topology) -> list[str]:
    return [
        str(paths.KUBE_BIN / "kubelet"),
        f"--config={topo.file('kubelet.yaml')}",
        f"--kubeconfig={topo.kubeconfig('kubelet-client')}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={topo.host_ip}",
        f"--root-dir={paths.KUBELET_ROOT}",
        f"--cert-dir={topo.pki}",
        f"--node-labels={NODE_KIND_LABEL}=real",
        "--v=1",
    ]


def kube_proxy_config(topo: Topology) -> str:
    return f"""\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {topo.kubeconfig("kube-proxy")}
mode: iptables
clusterCIDR: {CLUSTER_CIDR}
hostnameOverride: {NODE_NAME}
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  # 0 leaves the host's conntrack table size alone (a VM may not let us change it).
  maxPerCore: 0
  min: 0
"""


def kube_proxy_argv(topo: Topology) -> list[str]:
    return [str(paths.KUBE_BIN / "kube-proxy"), f"--config={topo.file('kube-proxy.yaml')}", "--v=1"]


def containerd_argv(topo: Topology) -> list[str]:
    return ["/usr/bin/containerd", f"--config={topo.file('containerd.toml')}"]


def prometheus_config(topo: Topology) -> str:
    return f"""\
global:
  scrape_interval: {SCRAPE_INTERVAL}
  scrape_timeout: 1s
  evaluation_interval: {SCRAPE_INTERVAL}
scrape_configs:
  # Pods: discovered by e2e/podsd.py (Debian's Prometheus lacks kubernetes_sd_configs); it keeps
  # only annotated, Running pods on the real node and labels them as Kubernetes SD would.
  - job_name: pods
    file_sd_configs:
      - files: ["{topo.file("prometheus/pods.json")}"]
        refresh_interval: 2s
  # Processes on the host (an out-of-cluster operator, a serving process under test) register by
  # dropping a file_sd JSON file into this directory.
  - job_name: host
    file_sd_configs:
      - files: ["{topo.file("prometheus/targets")}/*.json"]
        refresh_interval: 2s
"""


def podsd_argv(topo: Topology) -> list[str]:
    return [
        sys.executable,
        "-m",
        "e2e.podsd",
        f"--kubeconfig={topo.kubeconfig('prometheus')}",
        f"--node={NODE_NAME}",
        f"--out={topo.file('prometheus/pods.json')}",
    ]


def prometheus_argv(topo: Topology) -> list[str]:
    return [
        "/usr/bin/prometheus",
        f"--config.file={topo.file('prometheus/prometheus.yml')}",
        f"--storage.tsdb.path={topo.file('prometheus/data')}",
        # All addresses: pods (an in-cluster operator) reach it as prometheus.monitoring:9090,
        # a Service whose endpoint is this host.
        f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1d",
    ]


def corefile(topo: Topology) -> str:
    return f"""\
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {topo.host_ip}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {topo.kubeconfig("coredns")} rollwise-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
# Names outside the cluster are not ours to answer: pods here have no internet.
.:53 {{
    bind {topo.host_ip}
    errors
}}
"""


def coredns_argv(topo: Topology) -> list[str]:
    return [str(paths.COREDNS_BIN / "coredns"), "-conf", str(topo.file("Corefile"))]


COREDNS_RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: rollwise-coredns}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: rollwise-coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: rollwise-coredns}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: rollwise-coredns}
"""


def prometheus_service(host_ip: str) -> str:
    """`prometheus.monitoring:9090` for pods: a selector-less Service whose endpoint is the host."""
    return f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: monitoring}}
---
apiVersion: v1
kind: Service
metadata: {{name: prometheus, namespace: monitoring}}
spec:
  ports: [{{name: http, port: {PROMETHEUS_PORT}, targetPort: {PROMETHEUS_PORT}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: prometheus-host
  namespace: monitoring
  labels: {{kubernetes.io/service-name: prometheus}}
addressType: IPv4
ports: [{{name: http, port: {PROMETHEUS_PORT}, protocol: TCP}}]
endpoints: [{{addresses: ["{host_ip}"]}}]
"""


PROMETHEUS_RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: rollwise-prometheus}
rules:
  - apiGroups: [""]
    resources: [pods, nodes, services, endpoints]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: rollwise-prometheus}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: rollwise-prometheus}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: rollwise-prometheus}
"""


def traefik_config(topo: Topology) -> str:
    """Traefik's static configuration: its Gateway API provider and one entry point per port a
    Gateway listener may name (Traefik binds a listener to the entry point of the same port)."""
    return f"""\
# Nothing here may reach past this machine: no release check, no usage report.
global:
  checkNewVersion: false
  sendAnonymousUsage: false
entryPoints:
  web:
    address: "{topo.host_ip}:{GATEWAY_PORT}"
  ping:
    address: "127.0.0.1:{GATEWAY_PING_PORT}"
ping:
  entryPoint: ping
providers:
  kubernetesGateway:
    # The address written to each Gateway's status: where its listeners are served.
    statusAddress:
      ip: "{topo.host_ip}"
    throttleDuration: 0s
  # Traefik's ingress-nginx compatibility provider: Ingresses of class `nginx` (the IngressClass
  # e2e/upstream_crds.py installs), canary annotations included, served on the same entry point.
  kubernetesIngressNGINX:
    ingressClass: nginx
    controllerClass: k8s.io/ingress-nginx
    httpEntryPoint: web
    publishStatusAddress: ["{topo.host_ip}"]
    throttleDuration: 0s
log:
  level: INFO
  noColor: true
"""


def traefik_argv(topo: Topology) -> list[str]:
    return [str(paths.TRAEFIK_BIN / "traefik"), f"--configFile={topo.file('traefik.yaml')}"]


def traefik_env(topo: Topology) -> dict[str, str]:
    """Traefik's Kubernetes providers read a kubeconfig only from $KUBECONFIG (no flag)."""
    return {"KUBECONFIG": str(topo.kubeconfig("traefik"))}


TRAEFIK_RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: rollwise-traefik}
rules:
  - apiGroups: [""]
    resources: [namespaces, services, secrets, configmaps]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gatewayclasses, gateways, httproutes, grpcroutes, referencegrants, backendtlspolicies,
      listenersets, tcproutes, tlsroutes]
    verbs: [get, list, watch]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gatewayclasses/status, gateways/status, httproutes/status, grpcroutes/status,
      backendtlspolicies/status, listenersets/status, tcproutes/status, tlsroutes/status]
    verbs: [update, patch]
  - apiGroups: [""]
    resources: [events]
    verbs: [create, patch]
  - apiGroups: [networking.k8s.io]
    resources: [ingresses, ingressclasses]
    verbs: [get, list, watch]
  - apiGroups: [networking.k8s.io]
    resources: [ingresses/status]
    verbs: [update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: rollwise-traefik}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: rollwise-traefik}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: rollwise-traefik}
"""


GATEWAY = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: {GATEWAY_CLASS}}}
spec:
  controllerName: traefik.io/gateway-controller
---
apiVersion: v1
kind: Namespace
metadata: {{name: {GATEWAY_NAMESPACE}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {GATEWAY_NAME}, namespace: {GATEWAY_NAMESPACE}}}
spec:
  gatewayClassName: {GATEWAY_CLASS}
  listeners:
    - name: http
      protocol: HTTP
      port: {GATEWAY_PORT}
      allowedRoutes:
        namespaces: {{from: All}}
"""
"""The cluster's one Gateway: any namespace's HTTPRoute may attach to it (the routes' owners opt
each ModelDeployment in with rollwise.dev/traffic-for, docs/routers.md)."""


def metrics_server_argv(topo: Topology) -> list[str]:
    """metrics-server scraping the real node's kubelet only (kwok nodes have no kubelet to ask),
    authenticating to it with its client certificate and checking its serving certificate
    against the cluster CA."""
    kubeconfig = str(topo.kubeconfig("metrics-server"))
    return [
        str(paths.METRICS_SERVER_BIN / "metrics-server"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={topo.host_ip}",
        f"--secure-port={METRICS_SERVER_PORT}",
        f"--cert-dir={topo.file('metrics-server')}",
        f"--kubelet-certificate-authority={topo.pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--node-selector={NODE_KIND_LABEL}=real",
        "--metric-resolution=10s",
        "--kubelet-request-timeout=5s",
        f"--requestheader-client-ca-file={topo.pki / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
    ]


def metrics_server_objects(host_ip: str) -> str:
    """Its RBAC, and `v1beta1.metrics.k8s.io` served by the host. The APIService skips TLS
    verification of metrics-server's self-signed serving certificate (a local cluster's choice;
    its traffic never leaves the host)."""
    return f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: rollwise-metrics-server}}
rules:
  - apiGroups: [""]
    resources: [nodes/metrics]
    verbs: [get]
  - apiGroups: [""]
    resources: [pods, nodes]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: rollwise-metrics-server}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: rollwise-metrics-server}}
subjects:
  - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: rollwise-metrics-server}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: rollwise-metrics-server-auth-delegator}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator}}
subjects:
  - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: rollwise-metrics-server}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: rollwise-metrics-server-auth-reader, namespace: kube-system}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}}
subjects:
  - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: rollwise-metrics-server}}
---
apiVersion: v1
kind: Service
metadata: {{name: metrics-server, namespace: kube-system}}
spec:
  ports: [{{name: https, port: 443, targetPort: {METRICS_SERVER_PORT}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server-host
  namespace: kube-system
  labels: {{kubernetes.io/service-name: metrics-server}}
addressType: IPv4
ports: [{{name: https, port: {METRICS_SERVER_PORT}, protocol: TCP}}]
endpoints: [{{addresses: ["{host_ip}"]}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.metrics.k8s.io}}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {{name: metrics-server, namespace: kube-system, port: 443}}
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
"""
