"""Kubernetes ``apps/v1`` Deployments, translated onto the native document.

Translation only: every value with a native equivalent is copied through as
found and validated once, by :func:`policies.model.deployment_from_document`.
:attr:`Translation.origins` records where each native field came from, so a
problem found in the native document can be pointed at the user's own field
and line. What this module checks itself is the Kubernetes structure it walks
(spec, template, containers, env, ports, resources, selector, affinity,
tolerations, topology spread, strategy) and the rules that exist only in
Kubernetes (selector must match the template's labels, restartPolicy is
Always, one container for now).

Scheduling maps onto native placement: well-known node labels become the
labels every edgefed node carries (:data:`NODE_LABELS`), topology keys become
scopes (:data:`SCOPES`), required node affinity becomes node selector
expressions (only the first of several ORed terms: narrower, never wider),
pod (anti-)affinity and topology spread keep their required/preferred sense.
``strategy`` becomes ``rollout``: percentages are resolved against the
replicas as Kubernetes resolves them, and ``Recreate`` replaces every replica
at once with no surge.

Every field without an edgefed equivalent yields a warning naming it: nothing
is dropped silently. Fields Kubernetes itself does not know are errors, as
with ``kubectl apply --validate=strict``. Problem paths are in the coordinates
of the Kubernetes document, never the native one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from policies.errors import FieldPath, Problems
from policies.model import API_VERSION as NATIVE_API_VERSION
from policies.model import LabelRequirement, Operator, _kind
from policies.quantity import QuantityError, parse_cpu, parse_memory

API_VERSION = "apps/v1"
KIND = "Deployment"
NO_EQUIVALENT = "has no edgefed equivalent yet; ignored"

_TEMPLATE: FieldPath = ("spec", "template")
_POD: FieldPath = (*_TEMPLATE, "spec")
_CONTAINERS: FieldPath = (*_POD, "containers")
_NATIVE_CONTAINER: FieldPath = ("spec", "container")

# Field names as the Kubernetes API defines them (v1.31). Names listed here but
# not translated are warned about; names not listed at all are errors.
_DEPLOYMENT = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_OBJECT_META = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields",
})
_DEPLOYMENT_SPEC = frozenset({
    "replicas", "selector", "template", "strategy", "minReadySeconds",
    "revisionHistoryLimit", "paused", "progressDeadlineSeconds",
})
_POD_TEMPLATE = frozenset({"metadata", "spec"})
_POD_SPEC = frozenset({
    "volumes", "initContainers", "containers", "ephemeralContainers", "restartPolicy",
    "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "nodeSelector",
    "serviceAccountName", "serviceAccount", "automountServiceAccountToken", "nodeName",
    "hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace", "securityContext",
    "imagePullSecrets", "hostname", "subdomain", "affinity", "schedulerName", "tolerations",
    "hostAliases", "priorityClassName", "priority", "dnsConfig", "readinessGates",
    "runtimeClassName", "enableServiceLinks", "preemptionPolicy", "overhead",
    "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers", "schedulingGates",
    "resourceClaims", "resources",
})
_CONTAINER = frozenset({
    "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources",
    "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices", "livenessProbe",
    "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
    "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce",
    "tty",
})
_PORT = frozenset({"name", "hostPort", "containerPort", "protocol", "hostIP"})
_ENV_VAR = frozenset({"name", "value", "valueFrom"})
_RESOURCES = frozenset({"limits", "requests", "claims"})
# Kubernetes resource name -> the native field it becomes.
_RESOURCE_NAMES = {"cpu": "cpu", "memory": "memory", "ephemeral-storage": "disk"}
_LABEL_SELECTOR = frozenset({"matchLabels", "matchExpressions"})
_STRATEGY = frozenset({"type", "rollingUpdate"})
_ROLLING_UPDATE = frozenset({"maxSurge", "maxUnavailable"})
_AFFINITY = frozenset({"nodeAffinity", "podAffinity", "podAntiAffinity"})
_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
_PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
_NODE_AFFINITY = frozenset({_REQUIRED, _PREFERRED})
_NODE_SELECTOR = frozenset({"nodeSelectorTerms"})
_NODE_SELECTOR_TERM = frozenset({"matchExpressions", "matchFields"})
_POD_AFFINITY = frozenset({_REQUIRED, _PREFERRED})
_WEIGHTED_TERM = frozenset({"weight", "podAffinityTerm"})
_POD_AFFINITY_TERM = frozenset({"labelSelector", "namespaceSelector", "namespaces",
                                "topologyKey", "matchLabelKeys", "mismatchLabelKeys"})
_TOLERATION = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})
_SPREAD = frozenset({"maxSkew", "topologyKey", "whenUnsatisfiable", "labelSelector",
                     "minDomains", "nodeAffinityPolicy", "nodeTaintsPolicy", "matchLabelKeys"})
# Kubernetes' well-known node labels as the labels every edgefed node carries,
# so a selector on them means on edgefed what it meant on the cluster.
NODE_LABELS = {
    "kubernetes.io/hostname": "node",
    "kubernetes.io/arch": "arch",
    "kubernetes.io/os": "os",
    "topology.kubernetes.io/zone": "site",
    "topology.kubernetes.io/region": "region",
}
# Topology keys as edgefed scopes: where replicas are counted together.
SCOPES = {"kubernetes.io/hostname": "node", "topology.kubernetes.io/zone": "site",
          "topology.kubernetes.io/region": "region"}
_SCOPE_HINT = ("kubernetes.io/hostname is node, topology.kubernetes.io/zone site, "
               "topology.kubernetes.io/region region")
_NATIVE_PLACEMENT: FieldPath = ("spec", "placement")
_SELECTOR_REQUIREMENT = frozenset({"key", "operator", "values"})
# Label selectors (unlike node selector terms) know no Gt/Lt.
_SELECTOR_OPERATORS = (Operator.IN, Operator.NOT_IN, Operator.EXISTS, Operator.DOES_NOT_EXIST)


@dataclass(frozen=True, slots=True, kw_only=True)
class Translation:
    """The native document and, per native field path, the path in the source
    document (Kubernetes or Compose) it came from."""

    document: dict[str, Any]
    origins: Mapping[FieldPath, FieldPath] = field(default_factory=dict)
    # Parts of the source the translator could not walk (missing or of the
    # wrong type), already reported: native problems under them only repeat it.
    unread: tuple[FieldPath, ...] = ()
    # Native fields the translator has already judged and reported in its own
    # words (a Compose service name that cannot be a deployment name): the
    # native validator's problem with exactly that field would only repeat it.
    settled: frozenset[FieldPath] = frozenset()

    def source_path(self, native: FieldPath) -> FieldPath:
        """The source path of a native path: the longest recorded prefix is
        replaced, the rest is kept (``spec.container.ports[1]`` ->
        ``spec.template.spec.containers[0].ports[1]``)."""
        for cut in range(len(native), 0, -1):
            origin = self.origins.get(native[:cut])
            if origin is not None:
                return (*origin, *native[cut:])
        return native


def translate_deployment(doc: Any, problems: Problems) -> dict[str, Any]:
    """The native document for a Kubernetes Deployment; problems found on the
    way are added to ``problems`` with Kubernetes field paths."""
    return translate(doc, problems).document


def translate(doc: Any, problems: Problems) -> Translation:
    translator = _Translator(problems)
    document = translator.deployment(doc)
    return Translation(document=document, origins=dict(translator.origins),
                       unread=tuple(translator.unread))


def _empty(value: Any) -> bool:
    """Nothing to lose by ignoring it (``kubectl create --dry-run`` writes
    ``creationTimestamp: null``, ``strategy: {}``, ``status: {}``)."""
    return value is None or (isinstance(value, dict | list | str) and not value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


class _Translator:
    def __init__(self, problems: Problems) -> None:
        self.p = problems
        self.origins: dict[FieldPath, FieldPath] = {}
        self.unread: list[FieldPath] = []

    # -- structure ---------------------------------------------------------------

    def is_unread(self, path: FieldPath) -> bool:
        return any(path[:len(done)] == done for done in self.unread)

    def cannot_read(self, path: FieldPath, message: str) -> None:
        """Report a part that cannot be walked, once: not again for what is under it."""
        if not self.is_unread(path):
            self.p.error(path, message)
            self.unread.append(path)

    def mapping(self, value: Any, path: FieldPath, *, required: bool = False) -> dict[str, Any]:
        if value is None:
            if required:
                self.cannot_read(path, "is required (expected a mapping)")
            return {}
        if not isinstance(value, dict):
            self.cannot_read(path, f"expected a mapping, found {_kind(value)}")
            return {}
        return value

    def fields(
        self, doc: Mapping[str, Any], path: FieldPath, known: Set[str], translated: Set[str]
    ) -> None:
        """Unknown names are errors; known names without a translation are warnings."""
        for key, value in doc.items():
            name = str(key)
            if name not in known:
                guess = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" (did you mean {guess[0]!r}?)" if guess else ""
                self.p.error((*path, name), f"unknown field in a Kubernetes Deployment{hint}")
            elif name not in translated and not _empty(value):
                self.p.warn((*path, name), NO_EQUIVALENT)

    def copy(self, source: Mapping[str, Any], key: str, source_path: FieldPath,
             target: dict[str, Any], native_path: FieldPath) -> None:
        """Copy one value unchecked; the native validator judges it."""
        if source.get(key) is not None:
            target[str(native_path[-1])] = source[key]
            self.origins[native_path] = (*source_path, key)

    # -- levels ------------------------------------------------------------------

    def deployment(self, doc: Any) -> dict[str, Any]:
        top = self.mapping(doc, (), required=True)
        self.fields(top, (), _DEPLOYMENT, _DEPLOYMENT)
        if not _empty(top.get("status")):
            self.p.warn(("status",), "is written by the cluster; ignored")
        meta = self.mapping(top.get("metadata"), ("metadata",), required=True)
        self.fields(meta, ("metadata",), _OBJECT_META, {"name", "labels"})
        spec = self.mapping(top.get("spec"), ("spec",), required=True)
        self.fields(spec, ("spec",), _DEPLOYMENT_SPEC,
                    {"replicas", "selector", "template", "strategy", "progressDeadlineSeconds"})
        template = self.mapping(spec.get("template"), _TEMPLATE, required=True)
        self.fields(template, _TEMPLATE, _POD_TEMPLATE, _POD_TEMPLATE)
        template_meta = self.mapping(template.get("metadata"), (*_TEMPLATE, "metadata"))
        self.fields(template_meta, (*_TEMPLATE, "metadata"), _OBJECT_META, {"labels"})
        pod = self.mapping(template.get("spec"), _POD, required=True)
        self.fields(pod, _POD, _POD_SPEC, {"containers", "nodeSelector", "restartPolicy",
                                           "affinity", "tolerations",
                                           "topologySpreadConstraints"})

        native_meta: dict[str, Any] = {}
        self.copy(meta, "name", ("metadata",), native_meta, ("metadata", "name"))
        labels = self.labels(meta, template_meta)
        if labels:
            native_meta["labels"] = labels
        self.selector(spec.get("selector"), template_meta.get("labels"))

        native_spec: dict[str, Any] = {}
        self.copy(spec, "replicas", ("spec",), native_spec, ("spec", "replicas"))
        native_spec["container"] = self.container(pod.get("containers"))
        placement = self.placement(pod, template_meta.get("labels"))
        if placement:
            native_spec["placement"] = placement
        rollout = self.rollout(spec.get("strategy"), spec.get("replicas"))
        if spec.get("progressDeadlineSeconds") is not None:
            rollout["progressDeadline"] = spec["progressDeadlineSeconds"]
            self.origins[("spec", "rollout", "progressDeadline")] = (
                "spec", "progressDeadlineSeconds")
        if rollout:
            native_spec["rollout"] = rollout
        self.restart_policy(pod, native_spec)
        return {"apiVersion": NATIVE_API_VERSION, "kind": "Deployment",
                "metadata": native_meta, "spec": native_spec}

    def labels(self, meta: Mapping[str, Any], template_meta: Mapping[str, Any]) -> dict[str, Any]:
        """The deployment's labels merged over its pods' labels, so the labels a
        selector names show up on the edgefed Deployment too."""
        pod_path: FieldPath = (*_TEMPLATE, "metadata", "labels")
        merged: dict[str, Any] = {}
        for key, value in self.mapping(template_meta.get("labels"), pod_path).items():
            merged[str(key)] = value
            self.origins[("metadata", "labels", str(key))] = (*pod_path, str(key))
        for key, value in self.mapping(meta.get("labels"), ("metadata", "labels")).items():
            name = str(key)
            if name in merged and _text(merged[name]) != _text(value):
                self.p.warn(("metadata", "labels", name),
                            f"differs from the template's label {name}={_text(merged[name])}; "
                            "the deployment's own value is used")
            merged[name] = value
            self.origins[("metadata", "labels", name)] = ("metadata", "labels", name)
        return merged

    def selector(self, value: Any, template_labels: Any) -> None:
        """Kubernetes refuses a Deployment whose selector does not select its own
        pods; so do we. The selector itself is implied by edgefed and not kept."""
        path: FieldPath = ("spec", "selector")
        doc = self.mapping(value, path)
        self.fields(doc, path, _LABEL_SELECTOR, _LABEL_SELECTOR)
        errors_before = len(self.p.errors)
        wanted = self.mapping(doc.get("matchLabels"), (*path, "matchLabels"))
        requirements = self.requirements(doc.get("matchExpressions"), (*path, "matchExpressions"))
        if len(self.p.errors) > errors_before or self.is_unread(
                (*_TEMPLATE, "metadata", "labels")):
            return  # the selector or the labels are already reported as unreadable
        labels = {str(k): _text(v) for k, v in (template_labels or {}).items()}
        mismatch = None
        for key, want in wanted.items():
            have = labels.get(str(key))
            if have != _text(want):
                found = f"{key}={have}" if have is not None else f"no label {key}"
                mismatch = f"selector wants {key}={_text(want)}, template labels have {found}"
                break
        for req in requirements:
            if mismatch is None and not req.matches(labels):
                mismatch = f"selector wants {req.describe()}"
        if mismatch is not None:
            self.p.error((*_TEMPLATE, "metadata", "labels"),
                         f"`selector` does not match template `labels` ({mismatch})")

    def requirements(self, value: Any, path: FieldPath) -> list[LabelRequirement]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.p.error(path, f"expected a list, found {_kind(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            ipath = (*path, i)
            doc = self.mapping(item, ipath, required=True)
            self.fields(doc, ipath, _SELECTOR_REQUIREMENT, _SELECTOR_REQUIREMENT)
            key, operator = doc.get("key"), doc.get("operator")
            values = doc.get("values") or []
            names = ", ".join(o.value for o in _SELECTOR_OPERATORS)
            if not isinstance(key, str) or not key:
                self.p.error((*ipath, "key"), "is required (expected a string)")
            elif operator not in [o.value for o in _SELECTOR_OPERATORS]:
                self.p.error((*ipath, "operator"), f"found {operator!r}, expected one of {names}")
            elif not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                self.p.error((*ipath, "values"), "expected a list of strings")
            else:
                out.append(LabelRequirement(key=key, operator=Operator(operator),
                                            values=tuple(values)))
        return out

    def container(self, value: Any) -> Any:
        # Registered first: native problems about a missing container must map
        # under the containers path so they fold into the problem reported here.
        self.origins[_NATIVE_CONTAINER] = (*_CONTAINERS, 0)
        if value is None:
            self.cannot_read(_CONTAINERS, "is required (expected a list with one container)")
            return None
        if not isinstance(value, list):
            self.cannot_read(_CONTAINERS, f"expected a list, found {_kind(value)}")
            return None
        if not value:
            self.cannot_read(_CONTAINERS, "expected exactly one container, found none")
            return None
        if len(value) > 1:
            self.p.error(_CONTAINERS, f"found {len(value)} containers, expected exactly one "
                         "(edgefed runs one container per deployment for now)")
        path: FieldPath = (*_CONTAINERS, 0)
        if not isinstance(value[0], dict):
            return value[0]  # the native validator names the wrong type
        doc: dict[str, Any] = value[0]
        # The container's name is implied, like the selector: one container, one name.
        self.fields(doc, path, _CONTAINER,
                    {"name", "image", "command", "args", "env", "ports", "resources"})
        out: dict[str, Any] = {}
        for key in ("image", "command", "args"):
            self.copy(doc, key, path, out, (*_NATIVE_CONTAINER, key))
        env = self.env(doc.get("env"), (*path, "env"))
        if env:
            out["env"] = env
        ports = self.ports(doc.get("ports"), (*path, "ports"))
        if ports:
            out["ports"] = ports
        resources = self.resources(doc.get("resources"), (*path, "resources"))
        if resources:
            out["resources"] = resources
        return out

    def env(self, value: Any, path: FieldPath) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, list):
            self.p.error(path, f"expected a list, found {_kind(value)}")
            return {}
        self.origins[(*_NATIVE_CONTAINER, "env")] = path
        out: dict[str, Any] = {}
        for i, item in enumerate(value):
            ipath = (*path, i)
            if not isinstance(item, dict):
                self.p.error(ipath, f"expected a mapping, found {_kind(item)}")
                continue
            doc: dict[str, Any] = item
            self.fields(doc, ipath, _ENV_VAR, _ENV_VAR)
            name = doc.get("name")
            if not isinstance(name, str) or not name:
                self.p.error((*ipath, "name"), "is required (expected a string)")
                continue
            if not _empty(doc.get("valueFrom")):
                self.p.warn((*ipath, "valueFrom"),
                            "not supported, ignored; the variable is not set")
                if doc.get("value") is None:
                    continue
            if name in out:
                self.p.warn((*ipath, "name"), f"{name} is set more than once; the last value "
                            "is used")
            # Kubernetes sets a variable without a value to the empty string.
            out[name] = "" if doc.get("value") is None else doc["value"]
            self.origins[(*_NATIVE_CONTAINER, "env", name)] = (
                (*ipath, "value") if "value" in doc else ipath)
        return out

    def ports(self, value: Any, path: FieldPath) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.p.error(path, f"expected a list, found {_kind(value)}")
            return []
        out: list[Any] = []  # index for index, so native paths map back unchanged
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                out.append(item)
                continue
            self.fields(item, (*path, i), _PORT, {"containerPort", "hostPort", "protocol"})
            port = {k: item[k] for k in ("containerPort", "hostPort", "protocol")
                    if item.get(k) is not None}
            if port.get("hostPort") == 0 and not isinstance(port["hostPort"], bool):
                del port["hostPort"]  # 0 is how Kubernetes writes "no host port"
            out.append(port)
        return out

    def resources(self, value: Any, path: FieldPath) -> dict[str, Any]:
        """Requests, or limits where no request is given (as Kubernetes defaults
        them): edgefed reserves and limits to one value per resource."""
        doc = self.mapping(value, path)
        self.fields(doc, path, _RESOURCES, {"limits", "requests"})
        requests = self.mapping(doc.get("requests"), (*path, "requests"))
        limits = self.mapping(doc.get("limits"), (*path, "limits"))
        for section, quantities in (("requests", requests), ("limits", limits)):
            for key, amount in quantities.items():
                if str(key) not in _RESOURCE_NAMES and not _empty(amount):
                    self.p.warn((*path, section, str(key)), NO_EQUIVALENT)
        out: dict[str, Any] = {}
        parsers: tuple[tuple[str, Callable[[object], int]], ...] = (
            ("cpu", parse_cpu), ("memory", parse_memory), ("ephemeral-storage", parse_memory))
        for name, parse in parsers:
            request, limit = requests.get(name), limits.get(name)
            chosen = "requests" if request is not None else "limits"
            if request is None and limit is None:
                continue
            native = _RESOURCE_NAMES[name]
            out[native] = request if request is not None else limit
            self.origins[(*_NATIVE_CONTAINER, "resources", native)] = (*path, chosen, name)
            if request is not None and limit is not None:
                self.compare(name, parse, request, limit, (*path, "limits", name))
        return out

    def compare(self, name: str, parse: Callable[[object], int], request: Any, limit: Any,
                limit_path: FieldPath) -> None:
        try:
            limit_value = parse(limit)
        except QuantityError as exc:
            self.p.error(limit_path, str(exc))
            return
        except OverflowError:
            self.p.error(limit_path, f"is too large to be a {name} quantity")
            return
        try:
            request_value = parse(request)
        except (QuantityError, OverflowError):
            return  # the native validator reports the request, which is the value used
        if limit_value != request_value:
            self.p.warn(limit_path, f"differs from requests.{name} ({_text(request)}); edgefed "
                        "uses one value as both reservation and limit: the request")

    def restart_policy(self, pod: Mapping[str, Any], native_spec: dict[str, Any]) -> None:
        value = pod.get("restartPolicy")
        if isinstance(value, str) and value != "Always":
            self.p.error((*_POD, "restartPolicy"),
                         f"found {value!r}, expected 'Always' (the only restartPolicy a "
                         "Kubernetes Deployment allows)")
            return
        self.copy(pod, "restartPolicy", _POD, native_spec, ("spec", "restartPolicy"))

    # -- scheduling and rollout --------------------------------------------------

    def placement(self, pod: Mapping[str, Any], template_labels: Any) -> dict[str, Any]:
        self.origins[_NATIVE_PLACEMENT] = _POD
        out: dict[str, Any] = {}
        selector: dict[str, Any] = {}
        labels = self.node_labels(pod.get("nodeSelector"), (*_POD, "nodeSelector"))
        if labels is not None:
            selector["matchLabels"] = labels
        path: FieldPath = (*_POD, "affinity")
        affinity = self.mapping(pod.get("affinity"), path)
        self.fields(affinity, path, _AFFINITY, _AFFINITY)
        expressions = self.node_affinity(affinity.get("nodeAffinity"), (*path, "nodeAffinity"))
        if expressions:
            selector["matchExpressions"] = expressions
        if selector:
            out["nodeSelector"] = selector
        for key, native in (("podAffinity", "affinity"), ("podAntiAffinity", "antiAffinity")):
            terms = self.pod_affinity(affinity.get(key), (*path, key), native)
            if terms:
                out[native] = terms
        tolerations = self.tolerations(pod.get("tolerations"), (*_POD, "tolerations"))
        if tolerations:
            out["tolerations"] = tolerations
        spread = self.spread(pod.get("topologySpreadConstraints"),
                             (*_POD, "topologySpreadConstraints"), template_labels)
        if spread:
            out["spread"] = spread
        return out

    def node_labels(self, value: Any, path: FieldPath) -> Any:
        """The pod's nodeSelector, well-known keys renamed (:data:`NODE_LABELS`)."""
        if value is None:
            return None
        native: FieldPath = (*_NATIVE_PLACEMENT, "nodeSelector", "matchLabels")
        self.origins[native[:-1]] = path
        self.origins[native] = path
        if not isinstance(value, dict):
            return value  # the native validator names the wrong type
        out: dict[str, Any] = {}
        for key, wanted in value.items():
            name = NODE_LABELS.get(str(key), str(key))
            out[name] = wanted
            self.origins[(*native, name)] = (*path, str(key))
        return out

    def node_affinity(self, value: Any, path: FieldPath) -> list[Any]:
        """The required node selector term as native expressions. Kubernetes ORs
        several terms; a native selector cannot, so only the first is used:
        placement is narrower than written, never wider."""
        doc = self.mapping(value, path)
        self.fields(doc, path, _NODE_AFFINITY, {_REQUIRED})
        required_path: FieldPath = (*path, _REQUIRED)
        required = self.mapping(doc.get(_REQUIRED), required_path)
        self.fields(required, required_path, _NODE_SELECTOR, _NODE_SELECTOR)
        terms, terms_path = required.get("nodeSelectorTerms"), (*required_path, "nodeSelectorTerms")
        if terms is None and not required:
            return []
        if not isinstance(terms, list) or not terms:
            self.p.error(terms_path, "expected a list of at least one term, found "
                         f"{_kind(terms) if terms != [] else 'an empty list'}")
            return []
        if len(terms) > 1:
            self.p.warn(terms_path, f"has {len(terms)} terms, which Kubernetes ORs; edgefed "
                        "cannot express OR yet, so only the first term is used (placement is "
                        "narrower than written)")
        term_path: FieldPath = (*terms_path, 0)
        term = self.mapping(terms[0], term_path, required=True)
        self.fields(term, term_path, _NODE_SELECTOR_TERM, _NODE_SELECTOR_TERM)
        out: list[Any] = []
        for key in ("matchExpressions", "matchFields"):
            items, items_path = term.get(key), (*term_path, key)
            if items is not None and not isinstance(items, list):
                self.p.error(items_path, f"expected a list, found {_kind(items)}")
                continue
            for i, item in enumerate(items or []):
                expression = self.node_requirement(item, (*items_path, i), key == "matchFields")
                if expression is not None:
                    self.origins[(*_NATIVE_PLACEMENT, "nodeSelector", "matchExpressions",
                                  len(out))] = (*items_path, i)
                    out.append(expression)
        if isinstance(terms[0], dict) and _empty(term.get("matchExpressions")) \
                and _empty(term.get("matchFields")):
            self.p.error(term_path, "an empty term matches no node (as in Kubernetes)")
        return out

    def node_requirement(self, item: Any, path: FieldPath, field_selector: bool) -> Any:
        if not isinstance(item, dict):
            self.p.error(path, f"expected a mapping, found {_kind(item)}")
            return None
        self.fields(item, path, _SELECTOR_REQUIREMENT, _SELECTOR_REQUIREMENT)
        out = {k: item[k] for k in ("key", "operator", "values") if item.get(k) is not None}
        key = item.get("key")
        if field_selector and key != "metadata.name":
            self.p.error((*path, "key"), f"found {_found(key)}, expected metadata.name (the "
                         "only field Kubernetes selects nodes by)")
            return None
        if field_selector:
            out["key"] = "node"  # every edgefed node is labelled with its name
        elif isinstance(key, str):
            out["key"] = NODE_LABELS.get(key, key)
        return out

    def pod_affinity(self, value: Any, path: FieldPath, native: str) -> list[Any]:
        """Required terms as required ones, preferred terms with their weight."""
        doc = self.mapping(value, path)
        self.fields(doc, path, _POD_AFFINITY, _POD_AFFINITY)
        out: list[Any] = []
        for key, required in ((_REQUIRED, True), (_PREFERRED, False)):
            items, items_path = doc.get(key), (*path, key)
            if items is not None and not isinstance(items, list):
                self.p.error(items_path, f"expected a list, found {_kind(items)}")
                continue
            for i, item in enumerate(items or []):
                item_path: FieldPath = (*items_path, i)
                term, term_path, weight = item, item_path, None
                if not required:
                    weighted = self.mapping(item, item_path, required=True)
                    self.fields(weighted, item_path, _WEIGHTED_TERM, _WEIGHTED_TERM)
                    term, term_path = weighted.get("podAffinityTerm"), (*item_path,
                                                                        "podAffinityTerm")
                    weight = weighted.get("weight")
                    if isinstance(item, dict) and weight is None:
                        self.p.error((*item_path, "weight"), "is required (expected 1 to 100)")
                        continue
                entry = self.affinity_term(term, term_path)
                if entry is None:
                    continue
                base: FieldPath = (*_NATIVE_PLACEMENT, native, len(out))
                self.origins[base] = term_path
                self.origins[(*base, "selector")] = (*term_path, "labelSelector")
                self.origins[(*base, "scope")] = (*term_path, "topologyKey")
                entry["required"] = required
                if weight is not None:
                    entry["weight"] = weight
                    self.origins[(*base, "weight")] = (*item_path, "weight")
                out.append(entry)
        return out

    def affinity_term(self, value: Any, path: FieldPath) -> dict[str, Any] | None:
        doc = self.mapping(value, path, required=True)
        if not isinstance(value, dict):
            return None
        self.fields(doc, path, _POD_AFFINITY_TERM, {"labelSelector", "topologyKey"})
        scope = self.scope(doc.get("topologyKey"), (*path, "topologyKey"))
        if scope is None:
            return None
        if doc.get("labelSelector") is None:
            self.p.warn(path, "has no labelSelector, so it matches no pods (as in Kubernetes); "
                        "ignored")
            return None
        return {"selector": self.label_selector(doc["labelSelector"], (*path, "labelSelector")),
                "scope": scope}

    def scope(self, key: Any, path: FieldPath) -> str | None:
        if not isinstance(key, str) or not key:
            self.p.error(path, "is required (expected a node label like kubernetes.io/hostname)")
            return None
        if key not in SCOPES:
            self.p.warn(path, f"{key!r} has no edgefed scope; ignored ({_SCOPE_HINT})")
            return None
        return SCOPES[key]

    def label_selector(self, value: Any, path: FieldPath) -> Any:
        if not isinstance(value, dict):
            return value  # the native validator names the wrong type
        self.fields(value, path, _LABEL_SELECTOR, _LABEL_SELECTOR)
        return {k: value[k] for k in ("matchLabels", "matchExpressions") if k in value}

    def tolerations(self, value: Any, path: FieldPath) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.p.error(path, f"expected a list, found {_kind(value)}")
            return []
        self.origins[(*_NATIVE_PLACEMENT, "tolerations")] = path  # index for index
        out: list[Any] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                out.append(item)  # the native validator names the wrong type
                continue
            self.fields(item, (*path, i), _TOLERATION, {"key", "operator", "value", "effect"})
            # An empty effect is how Kubernetes writes "every effect", as a missing one is.
            out.append({k: item[k] for k in ("key", "operator", "value", "effect")
                        if item.get(k) is not None and not (k == "effect" and item[k] == "")})
        return out

    def spread(self, value: Any, path: FieldPath, template_labels: Any) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.p.error(path, f"expected a list, found {_kind(value)}")
            return []
        out: list[Any] = []
        for i, item in enumerate(value):
            item_path: FieldPath = (*path, i)
            doc = self.mapping(item, item_path, required=True)
            if not isinstance(item, dict):
                continue
            self.fields(doc, item_path, _SPREAD,
                        {"maxSkew", "topologyKey", "whenUnsatisfiable", "labelSelector"})
            when = doc.get("whenUnsatisfiable")
            required = {"DoNotSchedule": True, "ScheduleAnyway": False}.get(when) \
                if isinstance(when, str) else None
            if required is None:
                self.p.error((*item_path, "whenUnsatisfiable"),
                             "is required (expected DoNotSchedule or ScheduleAnyway)"
                             if when is None else f"found {_found(when)}, expected "
                             "DoNotSchedule or ScheduleAnyway")
            if doc.get("maxSkew") is None:
                self.p.error((*item_path, "maxSkew"), "is required (expected an integer of at "
                             "least 1)")
            scope = self.scope(doc.get("topologyKey"), (*item_path, "topologyKey"))
            if required is None or doc.get("maxSkew") is None or scope is None:
                continue
            selects = _selects(doc.get("labelSelector"), template_labels)
            if selects is None:
                self.p.error((*item_path, "labelSelector"), "expected a label selector "
                             "(matchLabels, matchExpressions with key, operator, values)")
                continue
            if not selects:
                self.p.warn((*item_path, "labelSelector"), "selects pods other than this "
                            "deployment's; edgefed spreads this deployment's own replicas")
            base: FieldPath = (*_NATIVE_PLACEMENT, "spread", len(out))
            self.origins[base] = item_path
            for native, key in (("maxSkew", "maxSkew"), ("scope", "topologyKey"),
                                ("required", "whenUnsatisfiable")):
                self.origins[(*base, native)] = (*item_path, key)
            out.append({"scope": scope, "maxSkew": doc["maxSkew"], "required": required})
        return out

    def rollout(self, value: Any, replicas: Any) -> dict[str, Any]:
        """``RollingUpdate`` bounds, a percentage resolved against the replicas as
        Kubernetes resolves it (surge rounds up, unavailable down; a bound not
        given is Kubernetes' 25%). ``Recreate`` stops every replica before
        starting any: all at once, nothing extra. No strategy at all keeps
        edgefed's rollout defaults."""
        path: FieldPath = ("spec", "strategy")
        doc = self.mapping(value, path)
        self.fields(doc, path, _STRATEGY, _STRATEGY)
        rolling_path: FieldPath = (*path, "rollingUpdate")
        rolling = self.mapping(doc.get("rollingUpdate"), rolling_path)
        self.fields(rolling, rolling_path, _ROLLING_UPDATE, _ROLLING_UPDATE)
        count = replicas if isinstance(replicas, int) and not isinstance(replicas, bool) \
            and replicas >= 0 else 1
        kind = doc.get("type")
        if kind == "Recreate":
            if not _empty(doc.get("rollingUpdate")):
                self.p.error(rolling_path, "may not be given when type is Recreate (as in "
                             "Kubernetes)")
                return {}
            self.origins[("spec", "rollout")] = (*path, "type")
            everyone = max(count, 1)
            return {"parallelism": everyone, "maxSurge": 0, "maxUnavailable": everyone}
        if kind not in (None, "RollingUpdate"):
            self.p.error((*path, "type"), f"found {_found(kind)}, expected RollingUpdate or "
                         "Recreate")
            return {}
        if not rolling:
            return {}
        self.origins[("spec", "rollout")] = rolling_path
        surge = self.rollout_bound(rolling, "maxSurge", rolling_path, count)
        unavailable = self.rollout_bound(rolling, "maxUnavailable", rolling_path, count)
        if surge is None or unavailable is None:
            return {}
        if surge == 0 and unavailable == 0:
            if _is_zero(rolling.get("maxSurge")) and _is_zero(rolling.get("maxUnavailable")):
                self.p.error((*rolling_path, "maxUnavailable"), "may not be 0 when maxSurge is "
                             "0 (as in Kubernetes)")
                return {}
            unavailable = 1  # as Kubernetes does, so that the rollout can make progress
        return {"maxSurge": surge, "maxUnavailable": unavailable}

    def rollout_bound(self, rolling: Mapping[str, Any], name: str, path: FieldPath,
                      replicas: int) -> Any:
        value = rolling.get(name)
        self.origins[("spec", "rollout", name)] = (*path, name) if value is not None else path
        if value is None:
            value = "25%"
        if isinstance(value, int) and not isinstance(value, bool):
            return value  # the native validator judges the range
        match = re.fullmatch(r"\s*(\d+)%\s*", value) if isinstance(value, str) else None
        if match is None:
            self.p.error((*path, name), "expected an integer or a percentage like 25%, found "
                         f"{_found(value)}")
            return None
        percent = int(match.group(1))
        if name == "maxUnavailable" and percent > 100:
            self.p.error((*path, name), f"{value!r} is more than 100%")
            return None
        share = replicas * percent
        return -(-share // 100) if name == "maxSurge" else share // 100


def _found(value: Any) -> str:
    return repr(value) if isinstance(value, str | int | float) else _kind(value)


def _is_zero(value: Any) -> bool:
    return (value == 0 and not isinstance(value, bool)) or (
        isinstance(value, str) and value.strip() == "0%")


def _selects(selector: Any, labels: Any) -> bool | None:
    """Whether a pod label selector selects the deployment's own pods (no
    selector counts as yes: nothing is narrowed); None if it cannot be read."""
    if selector is None:
        return True
    try:
        own = {str(k): _text(v) for k, v in (labels if isinstance(labels, dict) else {}).items()}
        match_labels = selector.get("matchLabels") or {}
        expressions = selector.get("matchExpressions") or []
        if not isinstance(match_labels, dict) or not isinstance(expressions, list):
            return None
        requirements = [LabelRequirement(
            key=str(e["key"]), operator=_SELECTOR_OPERATORS[
                [o.value for o in _SELECTOR_OPERATORS].index(e["operator"])],
            values=tuple(str(v) for v in e.get("values") or ())) for e in expressions]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return all(own.get(str(k)) == _text(v) for k, v in match_labels.items()) and all(
        r.matches(own) for r in requirements)
