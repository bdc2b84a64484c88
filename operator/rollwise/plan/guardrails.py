"""What an administrator lets a ModelDeployment do, checked before anything is created.

Creating a ModelDeployment amounts to creating pods, so the chart's `guardrails` bound what those
pods may be: which images, which Secrets their env may read, which PVCs `pvc://` may mount, which
nodes they may select or tolerate, and whether custom PromQL may run at all (when it may, it is
confined to the namespace: `plan/scope.py`). A spec outside them is `Invalid`, naming the field and
the rule; the running version keeps serving.

Every list holds glob patterns (`fnmatch`): `["*"]` allows anything, `[]` nothing. The defaults
allow what the first release allowed, but images: only the operator's own serving image, in any
tag or digest, unless the administrator lists more (a ModelBatchJob may also name the batch image's
repository, when the administrator keeps the batch variant in a repository of its own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from rollwise.api.batch import ModelBatchJob
from rollwise.api.v1alpha1 import EnvVar, FallbackModel, ModelDeployment, ModelSpec, RuntimeSpec, Toleration

ANY = ["*"]


class Guardrails(BaseModel):
    """The chart's `guardrails` values, as the operator reads them (`ROLLWISE_GUARDRAILS`, JSON)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    allowed_images: list[str] = Field(default_factory=list)
    """Images `spec.runtime.image` and `spec.runtime.server.image` may name; empty: the operator's
    serving image only (so no tenant's own server runs until the administrator lists it)."""
    allowed_env_secrets: list[str] = Field(default_factory=lambda: list(ANY))
    """Secrets `env[].valueFrom.secretKeyRef.name` may read."""
    allowed_pvcs: list[str] = Field(default_factory=lambda: list(ANY))
    """Claims `pvc://<claim>/...` URIs may mount."""
    allowed_node_selectors: list[str] = Field(default_factory=lambda: list(ANY))
    """`key=value` pairs `spec.runtime.nodeSelector` may ask for (e.g. `pool=ml-*`)."""
    allowed_tolerations: list[str] = Field(default_factory=lambda: list(ANY))
    """Taint keys `spec.runtime.tolerations` may tolerate (a toleration without a key tolerates
    every taint, so it needs `*`)."""
    custom_queries: bool = True
    """Whether `analysis.metrics[].query` may be used at all."""


def _allowed(value: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


def _repository(image: str) -> str:
    """`reg:5000/rollwise/serving:0.1.0@sha256:...` -> `reg:5000/rollwise/serving`."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def violations(
    md: ModelDeployment, rails: Guardrails, *, serving_image: str, batch_image: str | None = None
) -> list[str]:
    """Every field of `md` the guardrails refuse, each with the rule and the fix. A backtest's
    pods are pods too: its image (by default the batch or serving image's repository), env and
    dataset claim are held to the same rules as a ModelBatchJob's."""
    out: list[str] = []
    runtime = md.spec.runtime
    out += _runtime(runtime, rails, serving_image=serving_image)
    out += _model(md.spec.model, rails)
    backtest = md.spec.rollout.backtest
    if backtest is not None:
        where = "spec.rollout.backtest"
        defaults = [i for i in (batch_image, serving_image) if i]
        out += _image(backtest.image, rails, defaults=defaults, where=f"{where}.image")
        out += _placement(backtest.env, {}, [], rails, where)
        out += _claims([(f"{where}.dataset.uri", backtest.dataset.uri)], rails, "ModelDeployment")
    analysis = md.spec.rollout.analysis
    if not rails.custom_queries and analysis is not None:
        for i, check in enumerate(analysis.metrics):
            if check.query is not None:
                out.append(
                    f"spec.rollout.analysis.metrics[{i}].query: custom queries are turned off by the "
                    "administrator (guardrails.customQueries); use a built-in check"
                )
    return out


def _image(image: str | None, rails: Guardrails, *, defaults: Sequence[str], where: str) -> list[str]:
    """`defaults`: the operator's own images, always allowed, whose repositories are the default
    `allowedImages`."""
    patterns = _image_patterns(rails, defaults)
    if image is not None and image not in defaults and not _allowed(image, patterns):
        return [
            f"{where}: {image} is not an allowed image (guardrails.allowedImages: "
            f"{', '.join(patterns)}); leave it unset for the bundled server or ask the "
            "administrator to allow it"
        ]
    return []


def _image_patterns(rails: Guardrails, defaults: Sequence[str]) -> list[str]:
    repositories = dict.fromkeys(_repository(image) for image in defaults)
    return rails.allowed_images or [p for r in repositories for p in (f"{r}:*", f"{r}@*")]


def _runtime(runtime: RuntimeSpec, rails: Guardrails, *, serving_image: str) -> list[str]:
    patterns = _image_patterns(rails, [serving_image])
    out = _image(runtime.image, rails, defaults=[serving_image], where="spec.runtime.image")
    # A tenant's own server is an image like any other: the same list decides, so by default
    # (the serving image only) no tenant runs arbitrary code until the administrator allows it.
    server = runtime.server
    if server is not None and not _allowed(server.image, patterns):
        out.append(
            f"spec.runtime.server.image: {server.image} is not an allowed image "
            f"(guardrails.allowedImages: {', '.join(patterns)}); ask the administrator to add it"
        )
    out += _placement(runtime.env, runtime.node_selector, runtime.tolerations, rails, "spec.runtime")
    return out


def _placement(
    env_list: Sequence[EnvVar],
    node_selector: Mapping[str, str],
    tolerations: Sequence[Toleration],
    rails: Guardrails,
    where: str,
) -> list[str]:
    """The Secrets env reads, the nodes selected, the taints tolerated; `where` is the spec path
    holding `env`, `nodeSelector` and `tolerations`."""
    out: list[str] = []
    for i, env in enumerate(env_list):
        ref = env.value_from.secret_key_ref if env.value_from is not None else None
        if ref is not None and not _allowed(ref.name, rails.allowed_env_secrets):
            out.append(
                f"{where}.env[{i}].valueFrom.secretKeyRef.name: Secret {ref.name} is not one env "
                "may read (guardrails.allowedEnvSecrets); use an allowed Secret"
            )
    for key, value in sorted(node_selector.items()):
        if not _allowed(f"{key}={value}", rails.allowed_node_selectors):
            out.append(
                f"{where}.nodeSelector: {key}={value} is not allowed "
                "(guardrails.allowedNodeSelectors); remove it or ask the administrator"
            )
    for i, toleration in enumerate(tolerations):
        key = toleration.key or ""
        if not (_allowed(key, rails.allowed_tolerations) if key else "*" in rails.allowed_tolerations):
            what = f"taint {key}" if key else "every taint (no key)"
            out.append(
                f"{where}.tolerations[{i}]: tolerating {what} is not allowed "
                "(guardrails.allowedTolerations); remove it or ask the administrator"
            )
    return out


def _model(model: ModelSpec, rails: Guardrails) -> list[str]:
    uris: list[tuple[str, str]] = [] if model.uri is None else [("spec.model.uri", model.uri)]
    fallback: FallbackModel | None = model.fallback
    if fallback is not None:
        uris.append(("spec.model.fallback.uri", fallback.uri))
    if model.reference is not None:
        uris.append(("spec.model.reference.uri", model.reference.uri))
    return _claims(uris, rails, "ModelDeployment")


def _claims(uris: list[tuple[str, str]], rails: Guardrails, kind: str) -> list[str]:
    """The `pvc://` URIs (field, uri) whose claim guardrails.allowedPvcs does not allow `kind`."""
    out: list[str] = []
    for where, uri in uris:
        if uri.startswith("pvc://"):
            claim = uri.removeprefix("pvc://").split("/", 1)[0]
            if not _allowed(claim, rails.allowed_pvcs):
                out.append(
                    f"{where}: PVC {claim} is not one a {kind} may mount (guardrails.allowedPvcs); "
                    "use an allowed claim"
                )
    return out


def batch_violations(
    mbj: ModelBatchJob, rails: Guardrails, *, serving_image: str, batch_image: str
) -> list[str]:
    """Every field of a ModelBatchJob the guardrails refuse: its image, env, placement and claims,
    under the same rules as a ModelDeployment's pods (a batch job creates pods too). By default its
    image may be the serving image's repository or the batch image's (the same one unless the
    administrator moved the batch variant), in any tag or digest."""
    spec = mbj.spec
    out = _image(spec.image, rails, defaults=[batch_image, serving_image], where="spec.image")
    out += _placement(spec.env, spec.node_selector, spec.tolerations, rails, "spec")
    uris = [("spec.input.uri", spec.input.uri), ("spec.output.uri", spec.output.uri)]
    inline = spec.model.inline
    if inline is not None and inline.uri is not None:
        uris.append(("spec.model.inline.uri", inline.uri))
    return out + _claims(uris, rails, "ModelBatchJob")
