"""A real Redis in the local cluster: ``redis://redis.rollwise-system.svc:6379/0``.

The model server joins delayed ground-truth labels to its predictions through Redis when a label
reaches another replica, or the other track, than the one that predicted (``--feedback-redis-url``),
as it would on a user's cluster. Debian's ``redis-server`` in a debootstrapped image (the base
images' way: no registry), run as a non-root, read-only pod with no persistence.

CLI: ``python -m e2e.redis`` (needs the cluster up).
"""

from __future__ import annotations

from e2e import cluster, images

NAMESPACE = "rollwise-system"
URL = f"redis://redis.{NAMESPACE}.svc:6379/0"
TAG = f"rollwise/redis:{images.ROOTFS_KEY}"

MANIFESTS = """\
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: redis, namespace: {ns}, labels: {{app: redis}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: redis}}}}
  template:
    metadata: {{labels: {{app: redis}}}}
    spec:
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: redis
          image: {image}
          imagePullPolicy: Never
          args: [redis-server, --port, "6379", --bind, 0.0.0.0, --protected-mode, "no", --save, "",
                 --appendonly, "no", --maxmemory, 128mb, --maxmemory-policy, allkeys-lru, --dir, /tmp]
          ports: [{{containerPort: 6379, name: redis}}]
          readinessProbe: {{tcpSocket: {{port: 6379}}, periodSeconds: 2}}
          volumeMounts: [{{name: tmp, mountPath: /tmp}}]
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {{drop: [ALL]}}
      volumes: [{{name: tmp, emptyDir: {{sizeLimit: 64Mi}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: redis, namespace: {ns}}}
spec:
  selector: {{app: redis}}
  ports: [{{name: redis, port: 6379, targetPort: 6379}}]
"""


def deploy() -> str:
    """Build (once per root filesystem key), import and apply Redis; returns the in-cluster URL."""
    images.ensure_dockerd()
    tag = images.import_rootfs(TAG, "redis", "redis-server")
    images.import_into_node(tag)
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=MANIFESTS.format(ns=NAMESPACE, image=tag))
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/redis", "--timeout=120s")
    return URL


if __name__ == "__main__":
    print(deploy())
