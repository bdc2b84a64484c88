"""The traffic providers' own CRDs, from their Go modules, installed into the local cluster.

The `gatewayAPI` and `istio` routers edit objects whose schemas belong to other projects. Tests
prove the objects we write pass those schemas by installing the real CRDs and letting the API
server judge, so the CRDs come verbatim from the projects' release modules on the Go module
proxy (checked against the Go checksum database by `go mod download`):

- Gateway API: ``sigs.k8s.io/gateway-api`` ``config/crd/standard/*.yaml`` (the standard channel,
  the stricter one: RequestMirror, weights and header matches are all in it).
- Istio: ``istio.io/api`` ``kubernetes/customresourcedefinitions.gen.yaml`` (the same CRDs
  Istio's base chart installs, generated from these API definitions).
- ingress-nginx has no CRD (an Ingress is built in); we add the IngressClass ``nginx`` that its
  controller's chart would create, so our Ingresses name a class that exists.

Only CustomResourceDefinition documents are kept (Gateway API's safe-upgrade admission policy is
left out: it guards channel changes we never make). Each CRD is stamped with the annotation
``rollwise.dev/upstream-bundle`` so `install` can tell an up-to-date cluster from a stale one and
write nothing when every CRD is already there and Established.

Cached under ``~/.cache/rollwise/upstream-crds-<versions>/`` and fetched again when absent.

CLI: ``python -m e2e.upstream_crds fetch|install|path`` (install needs the cluster up).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e import cluster, paths

BUNDLE_ANNOTATION = "rollwise.dev/upstream-bundle"
INGRESS_CLASS = "nginx"
INGRESS_NGINX_CONTROLLER = "k8s.io/ingress-nginx"


@dataclass(frozen=True)
class Bundle:
    """One project's CRDs: the Go module, its pinned release, and the files holding the CRDs."""

    name: str
    module: str
    version: str
    files: tuple[str, ...]
    """Paths inside the module (a trailing `/` takes every `*.yaml` directly in that directory)."""

    @property
    def id(self) -> str:
        return f"{self.name}-{self.version}"


GATEWAY_API = Bundle(
    "gateway-api",
    "sigs.k8s.io/gateway-api",
    os.environ.get("ROLLWISE_GATEWAY_API_VERSION", "v1.6.3"),
    ("config/crd/standard/",),
)
ISTIO = Bundle(
    "istio",
    "istio.io/api",
    os.environ.get("ROLLWISE_ISTIO_API_VERSION", "v1.32.0"),
    ("kubernetes/customresourcedefinitions.gen.yaml",),
)
BUNDLES = (GATEWAY_API, ISTIO)
CACHE_DIR = paths.CACHE / ("upstream-crds-" + "-".join(b.id for b in BUNDLES))

# The CRDs the routers need; `install` waits for these to be Established.
REQUIRED = {
    "gateway-api": ("httproutes.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io"),
    "istio": ("virtualservices.networking.istio.io", "destinationrules.networking.istio.io"),
}


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader when PyYAML has it: the bundles are 2 MB, ten times faster to read."""


class UpstreamCrdError(RuntimeError):
    """A module could not be fetched, or holds no CRD where we expect one."""


def log(msg: str) -> None:
    print(f"[upstream-crds] {msg}", file=sys.stderr, flush=True)


def module_zip(bundle: Bundle) -> Path:
    """The module's zip in the Go module cache, downloaded through the module proxy if needed."""
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    with tempfile.TemporaryDirectory() as work:  # outside any go.mod, so nothing is edited
        try:
            proc = subprocess.run(
                ["go", "mod", "download", "-json", f"{bundle.module}@{bundle.version}"],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
        except FileNotFoundError:
            raise UpstreamCrdError(
                "`go` not found on PATH: install Go (scripts/bootstrap.sh needs it too) to fetch CRDs"
            ) from None
    try:
        info: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise UpstreamCrdError(
            f"go mod download {bundle.module}@{bundle.version} failed: {proc.stderr.strip()}"
        ) from None
    zip_path = Path(info.get("Zip") or "")
    if info.get("Error") or not zip_path.is_file():
        raise UpstreamCrdError(
            f"go mod download {bundle.module}@{bundle.version}: {info.get('Error') or proc.stderr.strip()}"
        )
    return zip_path


def crd_documents(bundle: Bundle, archive: Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in the bundle's files, stamped with the bundle id."""
    prefix = f"{bundle.module}@{bundle.version}/"
    crds: list[dict[str, Any]] = []
    with zipfile.ZipFile(archive) as z:
        names = sorted(n for n in z.namelist() if n.startswith(prefix))
        for wanted in bundle.files:
            full = prefix + wanted
            if wanted.endswith("/"):
                matched = [n for n in names if n.startswith(full) and "/" not in n[len(full) :]]
                matched = [n for n in matched if n.endswith(".yaml")]
            else:
                matched = [n for n in names if n == full]
            if not matched:
                raise UpstreamCrdError(f"{bundle.module}@{bundle.version} has no {wanted}")
            for name in matched:
                for doc in yaml.load_all(z.read(name), Loader=_LOADER):
                    if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                        doc["metadata"].setdefault("annotations", {})[BUNDLE_ANNOTATION] = bundle.id
                        crds.append(doc)
    missing = set(REQUIRED[bundle.name]) - {c["metadata"]["name"] for c in crds}
    if missing:
        raise UpstreamCrdError(f"{bundle.module}@{bundle.version} lacks the CRDs {sorted(missing)}")
    return crds


def bundle_file(bundle: Bundle) -> Path:
    return CACHE_DIR / f"{bundle.id}.yaml"


def fetch() -> list[Path]:
    """The cached CRD files, one per bundle; fetched from the module proxy when absent."""
    out: list[Path] = []
    for bundle in BUNDLES:
        target = bundle_file(bundle)
        if not target.is_file():
            log(f"fetching {bundle.module}@{bundle.version} from the Go module proxy")
            docs = crd_documents(bundle, module_zip(bundle))
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            tmp.replace(target)
            log(f"{len(docs)} CRDs from {bundle.id} cached in {target}")
        out.append(target)
    return out


def crd_names(path: Path) -> Iterator[str]:
    for doc in yaml.load_all(path.read_text(), Loader=_LOADER):
        if isinstance(doc, dict):
            yield doc["metadata"]["name"]


def ingress_class() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": INGRESS_CLASS, "labels": {"app.kubernetes.io/name": "ingress-nginx"}},
        "spec": {"controller": INGRESS_NGINX_CONTROLLER},
    }


def _current(expected: dict[str, str]) -> bool:
    """Whether every expected CRD exists from its bundle and is Established (one list request)."""
    proc = cluster.kubectl("get", "crd", "-o", "json", check=True)
    live = {c["metadata"]["name"]: c for c in json.loads(proc.stdout)["items"]}
    for name, bundle_id in expected.items():
        crd = live.get(name)
        if crd is None or (crd["metadata"].get("annotations") or {}).get(BUNDLE_ANNOTATION) != bundle_id:
            return False
        conditions = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions", [])}
        if conditions.get("Established") != "True":
            return False
    return True


def install() -> None:
    """Apply every bundle's CRDs (server-side) and the nginx IngressClass; idempotent and quick
    when already installed (one read, no write)."""
    files = fetch()
    expected = {name: b.id for b, f in zip(BUNDLES, files, strict=True) for name in crd_names(f)}
    has_class = cluster.kubectl("get", "ingressclass", INGRESS_CLASS, check=False).returncode == 0
    if has_class and _current(expected):
        return
    for bundle, path in zip(BUNDLES, files, strict=True):
        log(f"applying {bundle.id} ({path.name})")
        cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=rollwise-e2e", "-f", str(path)
        )
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=rollwise-e2e",
        "-f",
        "-",
        stdin=json.dumps(ingress_class()),
    )
    names = [f"crd/{n}" for n in expected]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=120s", *names)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "install"
    try:
        if command == "fetch":
            for path in fetch():
                print(path)
        elif command == "path":
            print(CACHE_DIR)
        elif command == "install":
            install()
        else:
            print("usage: python -m e2e.upstream_crds [fetch|install|path]", file=sys.stderr)
            return 2
    except (UpstreamCrdError, cluster.ClusterError) as err:
        print(f"upstream-crds: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
