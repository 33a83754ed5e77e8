"""Compose v3 files, translated onto native documents: one Deployment per service.

    services.<name>           ──▶ Deployment <name>
      image, entrypoint, command, environment, ports, volumes, healthcheck
                              ──▶ spec.container
      labels, deploy.labels   ──▶ metadata.labels
      deploy.replicas (scale) ──▶ spec.replicas
      deploy.placement        ──▶ spec.placement (nodeSelector, spread, maxPerNode)
      deploy.resources        ──▶ spec.container.resources (cpu, memory, devices)
      deploy.update_config    ──▶ spec.rollout
      deploy.restart_policy (restart) ──▶ spec.restartPolicy

Translation only, as for Kubernetes (:mod:`policies.kubernetes`): what Compose
writes differently is converted here (port strings, durations, binary memory
sizes, placement constraints) and every value is validated once, by
:func:`policies.model.deployment_from_document`. Each :class:`Translation`
maps native field paths back to the Compose path, so a problem points at the
line the user wrote.

Keys Compose knows but edgefed cannot honour yet are warnings naming them;
keys Compose does not know are errors, as ``docker compose config`` refuses
them. ``x-`` keys are Compose's own place for anything and are skipped
silently. Variables (``${TAG}``) are not substituted: ``docker compose config``
prints a file with them substituted.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Mapping, Set
from datetime import timedelta
from fractions import Fraction
from typing import Any

from policies.duration import format_duration
from policies.errors import FieldPath, Problems, kind_of
from policies.kubernetes import NO_EQUIVALENT, Translation
from policies.model import API_VERSION as NATIVE_API_VERSION
from policies.model import NAME_RE
from policies.quantity import format_cpu, format_memory

# Keys as the Compose specification defines them (including the v3 file format).
_TOP = frozenset({"version", "name", "services", "networks", "volumes", "secrets", "configs",
                  "include", "models"})
_SERVICE = frozenset({
    "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup",
    "cgroup_parent", "command", "configs", "container_name", "cpu_count", "cpu_percent",
    "cpu_shares", "cpu_period", "cpu_quota", "cpu_rt_runtime", "cpu_rt_period", "cpus",
    "cpuset", "credential_spec", "depends_on", "deploy", "develop", "device_cgroup_rules",
    "devices", "dns", "dns_opt", "dns_search", "domainname", "driver_opts", "entrypoint",
    "env_file", "environment", "expose", "extends", "external_links", "extra_hosts", "gpus",
    "group_add", "healthcheck", "hostname", "image", "init", "ipc", "isolation", "labels",
    "label_file", "links", "logging", "mac_address", "mem_limit", "mem_reservation",
    "mem_swappiness", "memswap_limit", "models", "network_mode", "networks", "oom_kill_disable",
    "oom_score_adj", "pid", "pids_limit", "platform", "ports", "post_start", "pre_stop",
    "privileged", "profiles", "provider", "pull_policy", "read_only", "restart", "runtime",
    "scale", "secrets", "security_opt", "shm_size", "stdin_open", "stop_grace_period",
    "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits", "use_api_socket",
    "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
})
_SERVICE_TRANSLATED = frozenset({
    "build", "command", "deploy", "entrypoint", "environment", "healthcheck", "image",
    "labels", "ports", "restart", "scale", "volumes",
})
_DEPLOY = frozenset({"mode", "replicas", "labels", "placement", "resources", "restart_policy",
                     "rollback_config", "update_config", "endpoint_mode"})
_PLACEMENT = frozenset({"constraints", "preferences", "max_replicas_per_node"})
_LIMITS = frozenset({"cpus", "memory", "pids"})
_RESERVATIONS = frozenset({"cpus", "memory", "generic_resources", "devices"})
_DEVICE = frozenset({"capabilities", "count", "device_ids", "driver", "options"})
_UPDATE = frozenset({"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio",
                     "order"})
_RESTART_POLICY = frozenset({"condition", "delay", "max_attempts", "window"})
_HEALTHCHECK = frozenset({"test", "interval", "timeout", "retries", "start_period",
                          "start_interval", "disable"})
_PORT = frozenset({"target", "published", "protocol", "mode", "host_ip", "name", "app_protocol"})
_VOLUME = frozenset({"type", "source", "target", "read_only", "bind", "volume", "tmpfs", "image",
                     "consistency"})

_CONDITIONS = {"any": "Always", "on-failure": "OnFailure", "none": "Never"}
_RESTARTS = {"no": "Never", "always": "Always", "unless-stopped": "Always",
             "on-failure": "OnFailure"}
# Swarm node attributes as the labels every edgefed node carries.
_NODE_ATTRIBUTES = {"node.hostname": "node", "node.platform.arch": "arch",
                    "node.platform.os": "os"}
# Docker reports the kernel's machine name; edgefed nodes label the Go/OCI one.
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_SPREAD_SCOPES = ("site", "region", "provider", "node")
_CONSTRAINT = re.compile(r"^\s*([^\s=!]+)\s*(==|!=)\s*(\S(?:.*\S)?)\s*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
          "h": 3600 * 10**9}
# Docker's RAMInBytes: binary units whatever the spelling (1M = 1MiB).
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_MEMORY_UNITS = {None: 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_CPUS = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)$")
_VARIABLE = re.compile(r"\$(?:\$|\{[^}]*\}?|[A-Za-z_][A-Za-z0-9_]*)")
# A range of ports becomes that many native ports; a longer one is surely a mistake.
MAX_PORT_RANGE = 256
_CONTAINER: FieldPath = ("spec", "container")


def is_compose(doc: Any) -> bool:
    """A Compose file: ``services:`` at the top and neither apiVersion nor kind."""
    return (isinstance(doc, dict) and "services" in doc
            and "apiVersion" not in doc and "kind" not in doc)


def translate(doc: Mapping[str, Any], problems: Problems) -> list[Translation]:
    """One translation per readable service, in file order; problems found on
    the way are added to ``problems`` with Compose field paths."""
    _fields(problems, doc, (), _TOP, {"version", "services"})
    if not _version_supported(doc.get("version"), problems):
        return []  # another format: translating it would only produce noise
    services = doc.get("services")
    if not isinstance(services, dict):
        problems.error(("services",), "expected a mapping of service names to services, "
                       f"found {kind_of(services)}")
        return []
    if not services:
        problems.error(("services",), "is empty (expected at least one service)")
    out = []
    for name, body in services.items():
        translation = _Service(problems, str(name)).translate(body)
        if translation is not None:
            out.append(translation)
    return out


def translate_services(doc: Mapping[str, Any], problems: Problems) -> list[dict[str, Any]]:
    """The native documents of a Compose file, one per service."""
    return [t.document for t in translate(doc, problems)]


def _version_supported(value: Any, problems: Problems) -> bool:
    if value is None:
        return True
    text = str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) \
        else None
    if text is not None and re.fullmatch(r"3(\.\d+)?", text):
        return True
    if text is not None and re.fullmatch(r"[12](\.\d+)?", text):
        problems.error(("version",), f"Compose file version {text[0]} is not supported; "
                       "use version 3")
    else:
        shown = repr(text) if text is not None else kind_of(value)
        problems.error(("version",), f"unknown Compose file version {shown} "
                       "(expected 3, 3.x or no version)")
    return False


def _fields(problems: Problems, doc: Mapping[str, Any], path: FieldPath, known: Set[str],
            translated: Set[str]) -> None:
    """Unknown keys are errors; known keys without a translation are warnings."""
    for key, value in doc.items():
        name = str(key)
        if name.startswith("x-"):
            continue
        if name not in known:
            guess = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            problems.error((*path, name), f"unknown field in a Compose file{hint}")
        elif name not in translated and not _empty(value):
            problems.warn((*path, name), NO_EQUIVALENT)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, dict | list | str) and not value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str | int | float) else kind_of(value)


def duration(value: Any) -> str:
    """A Compose (Go) duration as a native one, in its largest exact unit:
    ``1m30s`` -> ``90s``, ``1.5h`` -> ``90m``. Raises ValueError saying why not."""
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 10s or 1m30s, found {kind_of(value)}"
                         + (f" {value!r}" if isinstance(value, int | float) else ""))
    text = value.strip()
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{value!r} is not a duration (expected like 10s or 1m30s)")
    nanos = sum((Fraction(n) * _NANOS[u] for n, u in parts), Fraction(0))
    if nanos.denominator != 1 or nanos % 10**6:
        raise ValueError(f"{value!r} is finer than a millisecond (expected whole milliseconds)")
    if nanos > 10**9 * 86_400 * 365 * 1000:  # far past any limit; kept from timedelta's range
        raise ValueError(f"{value!r} is too long")
    return format_duration(timedelta(milliseconds=int(nanos) // 10**6))


def memory(value: Any) -> str:
    """A Compose memory size (binary units, ``512m`` = 512MiB) as a native quantity."""
    if _is_int(value) and value >= 0:
        return format_memory(value)
    match = _MEMORY.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{_shown(value)} is not a memory size (expected like 512M or 1G; "
                         "Compose sizes are binary, 1M is 1Mi)")
    unit = match.group(2).lower() if match.group(2) else None
    return format_memory(int(Fraction(match.group(1)) * _MEMORY_UNITS[unit]))


def cpus(value: Any) -> str:
    """A Compose number of cpus (``0.5``) as a native cpu quantity (``500m``)."""
    text = repr(value) if _is_int(value) or isinstance(value, float) else value
    if not isinstance(text, str) or not _CPUS.match(text.strip()):
        raise ValueError(f"{_shown(value)} is not a number of cpus (expected like 0.5 or 2)")
    return format_cpu(round(Fraction(text.strip()) * 1000))


class _Service:
    """One service's translation; problem paths are Compose paths."""

    def __init__(self, problems: Problems, name: str) -> None:
        self.p = problems
        self.name = name
        self.path: FieldPath = ("services", name)
        self.origins: dict[FieldPath, FieldPath] = {}
        self.unread: list[FieldPath] = []
        self.settled: set[FieldPath] = set()

    def at(self, *parts: str | int) -> FieldPath:
        return (*self.path, *parts)

    def origin(self, native: FieldPath, source: FieldPath) -> None:
        self.origins[native] = source

    def mapping(self, value: Any, path: FieldPath) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.p.error(path, f"expected a mapping, found {kind_of(value)}")
            self.unread.append(path)
            return {}
        return value

    def fields(self, doc: Mapping[str, Any], path: FieldPath, known: Set[str],
               translated: Set[str]) -> None:
        _fields(self.p, doc, path, known, translated)

    def converted(self, convert: Callable[[Any], str], value: Any,
                  path: FieldPath) -> str | None:
        try:
            return convert(value)
        except ValueError as exc:
            self.p.error(path, str(exc))
            return None

    # -- the service -------------------------------------------------------------

    def translate(self, body: Any) -> Translation | None:
        if not isinstance(body, dict):
            self.p.error(self.path, f"expected a mapping (a service), found {kind_of(body)}")
            return None
        # Catch-alls: a native problem on a field no Compose key gave points at the service.
        for native in (("metadata",), ("spec",), _CONTAINER):
            self.origin(native, self.path)
        self.fields(body, self.path, _SERVICE, _SERVICE_TRANSLATED)
        body = self.substituted(body)
        metadata: dict[str, Any] = {"name": self.name}
        self.origin(("metadata", "name"), self.path)
        if not NAME_RE.match(self.name):
            self.p.error(self.path, f"{self.name!r} is not a valid deployment name (expected "
                         "lowercase letters, digits and '-', at most 63 characters); each "
                         "service becomes a deployment of the same name")
            self.settled.add(("metadata", "name"))
        labels = self.labels(body)
        if labels:
            metadata["labels"] = labels
        deploy = self.mapping(body.get("deploy"), self.at("deploy"))
        self.fields(deploy, self.at("deploy"), _DEPLOY,
                    {"mode", "replicas", "labels", "placement", "resources", "restart_policy",
                     "update_config"})
        spec: dict[str, Any] = {}
        self.replicas(body, deploy, spec)
        self.restart_policy(body, deploy, spec)
        spec["container"] = self.container(body, deploy)
        placement = self.placement(deploy.get("placement"), self.at("deploy", "placement"))
        if placement:
            spec["placement"] = placement
        rollout = self.rollout(deploy.get("update_config"), self.at("deploy", "update_config"),
                               spec.get("replicas", 1))
        if rollout:
            spec["rollout"] = rollout
        document = {"apiVersion": NATIVE_API_VERSION, "kind": "Deployment",
                    "metadata": metadata, "spec": spec}
        return Translation(document=document, origins=dict(self.origins),
                           unread=tuple(self.unread), settled=frozenset(self.settled))

    def substituted(self, body: dict[str, Any]) -> dict[str, Any]:
        """The translated keys with ``$$`` unescaped as Compose does; variables
        are left as written, with a warning each."""
        return {key: self.unescaped(value, self.at(key)) if key in _SERVICE_TRANSLATED
                else value for key, value in body.items()}

    def unescaped(self, value: Any, path: FieldPath) -> Any:
        if isinstance(value, dict):
            return {k: v if str(k).startswith("x-") else self.unescaped(v, (*path, str(k)))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.unescaped(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "$" not in value:
            return value
        variables = [m for m in _VARIABLE.findall(value) if m != "$$"]
        if variables:
            self.p.warn(path, f"{', '.join(variables)}: edgefed does not substitute Compose "
                        "variables; the value is used as written (`docker compose config` "
                        "prints the file with variables substituted)")
        return _VARIABLE.sub(lambda m: "$" if m.group(0) == "$$" else m.group(0), value)

    def labels(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Service labels with the deploy labels over them (the service's own, in swarm)."""
        merged: dict[str, Any] = {}
        deploy = body.get("deploy")
        sources = [(body.get("labels"), self.at("labels"))]
        if isinstance(deploy, dict):
            sources.append((deploy.get("labels"), self.at("deploy", "labels")))
        for value, path in sources:
            for key, text, item_path in self.pairs(value, path):
                text = "" if text is None else text  # a label named alone has no value
                if key in merged and str(merged[key]) != str(text):
                    self.p.warn(item_path, f"differs from the service label {key}={merged[key]};"
                                " the deploy label is used")
                merged[key] = text
                self.origin(("metadata", "labels", key), item_path)
        return merged

    def pairs(self, value: Any, path: FieldPath) -> list[tuple[str, Any, FieldPath]]:
        """``KEY=value`` items or a mapping, as (key, value or None, path)."""
        if value is None:
            return []
        if isinstance(value, dict):
            return [(str(k), v, (*path, str(k))) for k, v in value.items()]
        if not isinstance(value, list):
            self.p.error(path, f"expected a mapping or a list of KEY=value, found {kind_of(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.p.error((*path, i), f"expected KEY=value, found {kind_of(item)}")
                continue
            key, sep, text = item.partition("=")
            if not key:
                self.p.error((*path, i), f"{item!r} names no key (expected KEY=value)")
                continue
            out.append((key, text if sep else None, (*path, i)))
        return out

    def replicas(self, body: Mapping[str, Any], deploy: Mapping[str, Any],
                 spec: dict[str, Any]) -> None:
        mode = deploy.get("mode")
        if mode is not None and mode != "replicated":
            self.p.warn(self.at("deploy", "mode"), f"{_shown(mode)} has no edgefed equivalent "
                        "yet; the service runs as replicated")
        if deploy.get("replicas") is not None:
            spec["replicas"] = deploy["replicas"]
            self.origin(("spec", "replicas"), self.at("deploy", "replicas"))
            if body.get("scale") is not None and body["scale"] != deploy["replicas"]:
                self.p.warn(self.at("scale"), "differs from deploy.replicas; deploy.replicas "
                            "is used")
        elif body.get("scale") is not None:
            spec["replicas"] = body["scale"]
            self.origin(("spec", "replicas"), self.at("scale"))

    def restart_policy(self, body: Mapping[str, Any], deploy: Mapping[str, Any],
                       spec: dict[str, Any]) -> None:
        path = self.at("deploy", "restart_policy")
        policy = self.mapping(deploy.get("restart_policy"), path)
        self.fields(policy, path, _RESTART_POLICY, {"condition"})
        condition, restart = policy.get("condition"), body.get("restart")
        if condition is not None:
            if restart is not None:
                self.p.warn(self.at("restart"), "deploy.restart_policy.condition is used "
                            "instead")
            if not isinstance(condition, str) or condition not in _CONDITIONS:
                self.p.error((*path, "condition"), f"found {_shown(condition)}, expected one "
                             "of any, on-failure, none")
                return
            spec["restartPolicy"] = _CONDITIONS[condition]
            self.origin(("spec", "restartPolicy"), (*path, "condition"))
        elif restart is not None:
            # YAML 1.1 reads a bare `no` as false; Compose (YAML 1.2) reads the word.
            text = "no" if restart is False else restart
            name, _, retries = text.partition(":") if isinstance(text, str) else ("", "", "")
            if name not in _RESTARTS or (retries and name != "on-failure"):
                self.p.error(self.at("restart"), f"found {_shown(restart)}, expected one of "
                             "no, always, on-failure, unless-stopped")
                return
            if retries:
                self.p.warn(self.at("restart"), f"the retry limit {retries} has no edgefed "
                            "equivalent yet; ignored")
            spec["restartPolicy"] = _RESTARTS[name]
            self.origin(("spec", "restartPolicy"), self.at("restart"))

    # -- the container -----------------------------------------------------------

    def container(self, body: Mapping[str, Any], deploy: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        image = body.get("image")
        self.origin((*_CONTAINER, "image"), self.at("image"))
        if image is not None:
            out["image"] = image
            if not _empty(body.get("build")):
                self.p.warn(self.at("build"), NO_EQUIVALENT)
        else:
            self.p.error(self.at("image"), "a service must name an image; edgefed does not "
                         "build images" if "build" in body else "is required (a service must "
                         "name an image)")
            self.settled.add((*_CONTAINER, "image"))
        for key, native in (("entrypoint", "command"), ("command", "args")):
            words = self.words(body.get(key), self.at(key), key)
            if words:
                out[native] = words
                self.origin((*_CONTAINER, native), self.at(key))
        env = self.environment(body.get("environment"), self.at("environment"))
        if env:
            out["env"] = env
        ports = self.ports(body.get("ports"), self.at("ports"))
        if ports:
            out["ports"] = ports
        resources = self.resources(deploy.get("resources"), self.at("deploy", "resources"))
        if resources:
            out["resources"] = resources
        health = self.health_check(body.get("healthcheck"), self.at("healthcheck"))
        if health:
            out["healthCheck"] = health
        volumes = self.volumes(body.get("volumes"), self.at("volumes"))
        if volumes:
            out["volumes"] = volumes
        return out

    def words(self, value: Any, path: FieldPath, key: str) -> Any:
        """A command as Compose reads it: a list as is, a string split like a shell would."""
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = shlex.split(value)
            except ValueError as exc:
                self.p.error(path, f"cannot split into words: {str(exc).lower()}")
                return None
        elif not isinstance(value, list):
            self.p.error(path, f"expected a string or a list of strings, found {kind_of(value)}")
            return None
        if not value:
            what = "ENTRYPOINT" if key == "entrypoint" else "CMD"
            self.p.warn(path, f"is empty, which makes Compose ignore the image's {what}; "
                        f"edgefed keeps the image's {what}")
        return value

    def environment(self, value: Any, path: FieldPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, text, item_path in self.pairs(value, path):
            if text is None:
                self.p.warn(item_path, f"{key} takes its value from where Compose runs, which "
                            "edgefed cannot see; the variable is not set")
                continue
            if key in out:
                self.p.warn(item_path, f"{key} is set more than once; the last value is used")
            out[key] = text
            self.origin((*_CONTAINER, "env", key), item_path)
        if out:
            self.origin((*_CONTAINER, "env"), path)
        return out

    def listed(self, value: Any, path: FieldPath) -> list[Any]:
        """A list field: absent is empty, anything else but a list is an error (and empty)."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.p.error(path, f"expected a list, found {kind_of(value)}")
            return []
        return value

    def ports(self, value: Any, path: FieldPath) -> list[Any]:
        value = self.listed(value, path)
        out: list[Any] = []
        for i, item in enumerate(value):
            ipath = (*path, i)
            ports = self.long_port(item, ipath) if isinstance(item, dict) \
                else self.short_port(item, ipath)
            for port in ports:
                # A short port is one string: its problems point at the string.
                for native, key in (("containerPort", "target"), ("hostPort", "published"),
                                    ("protocol", "protocol")):
                    self.origin((*_CONTAINER, "ports", len(out), native),
                                (*ipath, key) if isinstance(item, dict) else ipath)
                self.origin((*_CONTAINER, "ports", len(out)), ipath)
                out.append(port)
        return out

    def short_port(self, item: Any, path: FieldPath) -> list[dict[str, Any]]:
        """``[HOST_IP:][HOST:]CONTAINER[/PROTOCOL]``, each port possibly a range."""
        if _is_int(item):
            return [{"containerPort": item}]
        text = item.strip() if isinstance(item, str) else None
        bad = (f"{_shown(item)} is not a port (expected [HOST_IP:][HOST:]CONTAINER[/PROTOCOL], "
               'like "8080:80/udp")')
        if not text:
            self.p.error(path, bad)
            return []
        text, _, protocol = text.partition("/")
        host_ip = ""
        if text.startswith("["):  # an IPv6 address: [::1]:8080:80
            host_ip, _, text = text[1:].partition("]:")
        parts = text.split(":")
        if len(parts) == 3 and not host_ip:
            host_ip = parts.pop(0)
        if len(parts) > 2 or not all(re.fullmatch(r"\d+(-\d+)?", p) for p in parts[-1:]) or (
                len(parts) == 2 and not re.fullmatch(r"(\d+(-\d+)?)?", parts[0])):
            self.p.error(path, bad)
            return []
        if host_ip:
            self.p.warn(path, f"the host address {host_ip} has no edgefed equivalent yet; the "
                        "port is published on every address")
        host = parts[0] if len(parts) == 2 and parts[0] else None
        return self.port_range(parts[-1], host, protocol or None, path)

    def long_port(self, item: dict[str, Any], path: FieldPath) -> list[dict[str, Any]]:
        self.fields(item, path, _PORT, {"target", "published", "protocol", "mode"})
        target, published = item.get("target"), item.get("published")
        if target is None:
            self.p.error((*path, "target"), "is required (expected the container port)")
            return []
        if not (_is_int(target) or isinstance(target, str)):
            return [{"containerPort": target}]  # the native validator names the wrong type
        host = str(published) if _is_int(published) or isinstance(published, str) else None
        if published is not None and host is None:
            self.p.error((*path, "published"), f"expected a port, found {kind_of(published)}")
            return []
        protocol = item.get("protocol")
        if not re.fullmatch(r"\d+(-\d+)?", str(target)) or (
                host and not re.fullmatch(r"\d+(-\d+)?", host)):
            self.p.error(path, f"{target!r}:{published!r} is not a port mapping (expected "
                         "port numbers or ranges like 8080-8081)")
            return []
        return self.port_range(str(target), host or None, protocol, path)

    def port_range(self, container: str, host: str | None, protocol: Any,
                   path: FieldPath) -> list[dict[str, Any]]:
        first, _, last = container.partition("-")
        targets = range(int(first), int(last or first) + 1)
        hosts: range | list[None] = [None] * len(targets)
        if host is not None:
            low, _, high = host.partition("-")
            hosts = range(int(low), int(high or low) + 1)
        if not targets or not hosts:
            self.p.error(path, "a port range must not end below its start")
            return []
        if len(hosts) != len(targets):
            self.p.error(path, f"the host ports ({host}) and container ports ({container}) "
                         "must be ranges of the same length")
            return []
        if len(targets) > MAX_PORT_RANGE:
            self.p.error(path, f"a range of {len(targets)} ports is more than edgefed "
                         f"expands ({MAX_PORT_RANGE} at most)")
            return []
        out = []
        for target, published in zip(targets, hosts, strict=True):
            port: dict[str, Any] = {"containerPort": target}
            if published is not None:
                port["hostPort"] = published
            if protocol is not None:
                port["protocol"] = protocol
            out.append(port)
        return out

    def resources(self, value: Any, path: FieldPath) -> dict[str, Any]:
        """Reservations, or limits where nothing is reserved: edgefed reserves
        and limits to one value per resource."""
        doc = self.mapping(value, path)
        self.fields(doc, path, {"limits", "reservations"}, {"limits", "reservations"})
        limits = self.mapping(doc.get("limits"), (*path, "limits"))
        self.fields(limits, (*path, "limits"), _LIMITS, {"cpus", "memory"})
        reserved = self.mapping(doc.get("reservations"), (*path, "reservations"))
        self.fields(reserved, (*path, "reservations"), _RESERVATIONS,
                    {"cpus", "memory", "devices"})
        out: dict[str, Any] = {}
        for key, native, convert in (("cpus", "cpu", cpus), ("memory", "memory", memory)):
            chosen = "reservations" if reserved.get(key) is not None else "limits"
            source = reserved if chosen == "reservations" else limits
            if source.get(key) is None:
                continue
            amount = self.converted(convert, source[key], (*path, chosen, key))
            if amount is None:
                continue
            out[native] = amount
            self.origin((*_CONTAINER, "resources", native), (*path, chosen, key))
            if chosen == "reservations" and limits.get(key) is not None:
                limit = self.converted(convert, limits[key], (*path, "limits", key))
                if limit is not None and limit != amount:
                    self.p.warn((*path, "limits", key), f"differs from reservations.{key} "
                                f"({reserved[key]}); edgefed uses one value as both reservation "
                                "and limit: the reservation")
        devices = self.devices(reserved.get("devices"), (*path, "reservations", "devices"))
        if devices:
            out["devices"] = devices
        return out

    def devices(self, value: Any, path: FieldPath) -> dict[str, Any]:
        value = self.listed(value, path)
        gpus: int = 0
        for i, item in enumerate(value):
            ipath = (*path, i)
            doc = self.mapping(item, ipath)
            self.fields(doc, ipath, _DEVICE, {"capabilities", "count", "device_ids", "driver"})
            capabilities = doc.get("capabilities")
            if not isinstance(capabilities, list) or "gpu" not in capabilities:
                self.p.warn((*ipath, "capabilities"), "only gpu devices have an edgefed "
                            "equivalent yet; ignored")
                continue
            driver = doc.get("driver")
            if driver is not None and driver != "nvidia":
                self.p.warn((*ipath, "driver"), f"{_shown(driver)}: only nvidia GPUs have an "
                            "edgefed equivalent yet; ignored")
                continue
            count, ids = doc.get("count"), doc.get("device_ids")
            if isinstance(ids, list) and ids:
                self.p.warn((*ipath, "device_ids"), "naming devices has no edgefed equivalent "
                            f"yet; {len(ids)} of any GPUs are requested")
                count = len(ids) if count is None else count
            if count is None or count == "all":
                self.p.warn(ipath if count is None else (*ipath, "count"), "all GPUs of a node "
                            "has no edgefed equivalent yet; 1 is requested")
                count = 1
            if not _is_int(count) or count < 1:
                self.p.error((*ipath, "count"), f"expected a number of GPUs or 'all', found "
                             f"{_shown(count)}")
                continue
            gpus += count
            self.origin((*_CONTAINER, "resources", "devices", "nvidia.com/gpu"), ipath)
        return {"nvidia.com/gpu": gpus} if gpus else {}

    def health_check(self, value: Any, path: FieldPath) -> dict[str, Any]:
        doc = self.mapping(value, path)
        self.fields(doc, path, _HEALTHCHECK,
                    {"test", "interval", "timeout", "retries", "start_period", "disable"})
        if not doc or doc.get("disable") is True:
            return {}
        test = doc.get("test")
        if test is None:
            self.p.warn(path, "has no test: Compose takes it from the image's HEALTHCHECK, which "
                        "edgefed does not read; ignored")
            return {}
        command = self.health_command(test, (*path, "test"))
        if not command:
            return {}
        out: dict[str, Any] = {"command": command}
        self.origin((*_CONTAINER, "healthCheck"), path)
        self.origin((*_CONTAINER, "healthCheck", "command"), (*path, "test"))
        for key, native in (("interval", "interval"), ("timeout", "timeout"),
                            ("start_period", "startPeriod")):
            if doc.get(key) is not None:
                out[native] = self.converted(duration, doc[key], (*path, key))
                self.origin((*_CONTAINER, "healthCheck", native), (*path, key))
        if doc.get("retries") is not None:
            out["retries"] = doc["retries"]
            self.origin((*_CONTAINER, "healthCheck", "retries"), (*path, "retries"))
        return {k: v for k, v in out.items() if v is not None}

    def health_command(self, test: Any, path: FieldPath) -> list[Any]:
        """``CMD`` runs its words as they are; ``CMD-SHELL`` (and a plain string)
        through ``/bin/sh -c``, as Docker does; ``NONE`` turns the check off."""
        if isinstance(test, str) and test.strip():
            return ["/bin/sh", "-c", test]
        if not isinstance(test, list) or not test or test[0] not in ("CMD", "CMD-SHELL",
                                                                        "NONE"):
            first = test[0] if isinstance(test, list) and test else test
            self.p.error(path, "expected a command string or a list starting with CMD, "
                         f"CMD-SHELL or NONE, found {_shown(first)}")
            return []
        if test[0] == "NONE":
            return []
        if len(test) == 1:
            self.p.error(path, f"{test[0]} needs a command after it")
            return []
        if test[0] == "CMD":
            return test[1:]
        return ["/bin/sh", "-c", " ".join(str(word) for word in test[1:])]

    def volumes(self, value: Any, path: FieldPath) -> list[dict[str, Any]]:
        """Host paths only; each gets a name from its place in the list."""
        value = self.listed(value, path)
        out: list[dict[str, Any]] = []
        for i, item in enumerate(value):
            ipath = (*path, i)
            mount = self.long_volume(item, ipath) if isinstance(item, dict) \
                else self.short_volume(item, ipath)
            if mount is None:
                continue
            # A short volume is one string: its problems point at the string.
            for native, key in (("hostPath", "source"), ("mountPath", "target"),
                                ("readOnly", "read_only")):
                self.origin((*_CONTAINER, "volumes", len(out), native),
                            (*ipath, key) if isinstance(item, dict) else ipath)
            self.origin((*_CONTAINER, "volumes", len(out)), ipath)
            out.append({"name": f"volume-{i}", **mount})
        return out

    def short_volume(self, item: Any, path: FieldPath) -> dict[str, Any] | None:
        """``HOST:CONTAINER[:OPTIONS]`` with options ro, rw and others."""
        parts = item.split(":") if isinstance(item, str) else []
        if not 1 <= len(parts) <= 3 or not all(parts[:2]):
            self.p.error(path, f"{_shown(item)} is not a volume (expected HOST_PATH:"
                         "CONTAINER_PATH[:ro], like /srv/data:/data:ro)")
            return None
        if len(parts) == 1:
            self.p.warn(path, "an anonymous volume has no edgefed equivalent yet; ignored")
            return None
        read_only = False
        for option in parts[2].split(",") if len(parts) == 3 else []:
            if option in ("ro", "rw"):
                read_only = option == "ro"
            else:
                self.p.warn(path, f"the volume option {option!r} has no edgefed equivalent "
                            "yet; ignored")
        return self.bind(parts[0], parts[1], read_only, path)

    def long_volume(self, item: dict[str, Any], path: FieldPath) -> dict[str, Any] | None:
        self.fields(item, path, _VOLUME, {"type", "source", "target", "read_only"})
        kind, source, target = item.get("type"), item.get("source"), item.get("target")
        if kind is None:
            self.p.error((*path, "type"), "is required (bind, volume, tmpfs, ...)")
            return None
        if kind != "bind":
            self.p.warn((*path, "type"), f"a {_shown(kind)} volume has no edgefed equivalent "
                        "yet; ignored (only bind mounts of host paths are)")
            return None
        if not isinstance(source, str) or not isinstance(target, str) or not source \
                or not target:
            self.p.error(path, "a bind mount needs a source and a target path")
            return None
        read_only = item.get("read_only", False)
        if not isinstance(read_only, bool):
            self.p.error((*path, "read_only"), f"expected true or false, found {kind_of(read_only)}")
            return None
        return self.bind(source, target, read_only, path)

    def bind(self, source: str, target: str, read_only: bool,
             path: FieldPath) -> dict[str, Any] | None:
        if source.startswith((".", "~")):
            self.p.warn(path, f"the relative path {source!r} means nothing on the node that "
                        "runs the container; ignored (use an absolute host path)")
            return None
        if not source.startswith("/"):
            self.p.warn(path, f"the named volume {source!r} has no edgefed equivalent yet; "
                        "ignored (only host paths are mounted)")
            return None
        return {"hostPath": source, "mountPath": target, "readOnly": read_only}

    # -- placement and rollout ---------------------------------------------------

    def placement(self, value: Any, path: FieldPath) -> dict[str, Any]:
        doc = self.mapping(value, path)
        self.fields(doc, path, _PLACEMENT, _PLACEMENT)
        self.origin(("spec", "placement"), path)
        out: dict[str, Any] = {}
        selector = self.constraints(doc.get("constraints"), (*path, "constraints"))
        if selector:
            out["nodeSelector"] = selector
        spread = self.preferences(doc.get("preferences"), (*path, "preferences"))
        if spread:
            out["spread"] = spread
        if doc.get("max_replicas_per_node") is not None:
            out["maxPerNode"] = doc["max_replicas_per_node"]
            self.origin(("spec", "placement", "maxPerNode"), (*path, "max_replicas_per_node"))
        return out

    def constraints(self, value: Any, path: FieldPath) -> dict[str, Any]:
        """``node.labels.K`` and the attributes of :data:`_NODE_ATTRIBUTES` with
        ``==`` (a required label) or ``!=`` (NotIn); other attributes warn."""
        value = self.listed(value, path)
        if not value:
            return {}
        native: FieldPath = ("spec", "placement", "nodeSelector")
        self.origin(native, path)
        labels: dict[str, str] = {}
        where: dict[str, FieldPath] = {}
        expressions: list[dict[str, Any]] = []
        for i, item in enumerate(value):
            ipath = (*path, i)
            match = _CONSTRAINT.match(item) if isinstance(item, str) else None
            if match is None:
                self.p.error(ipath, f"{_shown(item)} is not a placement constraint (expected "
                             "like node.labels.region == eu)")
                continue
            attribute, operator, wanted = match.groups()
            key = (attribute.removeprefix("node.labels.")
                   if attribute.startswith("node.labels.") and attribute != "node.labels."
                   else _NODE_ATTRIBUTES.get(attribute))
            if key is None:
                self.p.warn(ipath, f"{item.strip()!r} has no edgefed equivalent yet; ignored "
                            "(edgefed places by node.labels.<key>, node.hostname, "
                            "node.platform.arch and node.platform.os)")
                continue
            if key == "arch":
                wanted = _ARCH.get(wanted, wanted)
            if operator == "!=":
                self.origin((*native, "matchExpressions", len(expressions)), ipath)
                expressions.append({"key": key, "operator": "NotIn", "values": [wanted]})
            elif key in labels and labels[key] != wanted:
                self.p.error(ipath, f"contradicts constraints[{where[key][-1]}] ({key} == "
                             f"{labels[key]}): no node can satisfy both")
            else:
                labels[key] = wanted
                where[key] = ipath
                self.origin((*native, "matchLabels", key), ipath)
        out: dict[str, Any] = {}
        if labels:
            out["matchLabels"] = labels
        if expressions:
            out["matchExpressions"] = expressions
        return out

    def preferences(self, value: Any, path: FieldPath) -> list[dict[str, Any]]:
        value = self.listed(value, path)
        out: list[dict[str, Any]] = []
        for i, item in enumerate(value):
            ipath = (*path, i)
            doc = self.mapping(item, ipath)
            self.fields(doc, ipath, {"spread"}, {"spread"})
            target = doc.get("spread")
            if not isinstance(target, str):
                self.p.error((*ipath, "spread"), "is required (expected like node.labels.site)")
                continue
            scope = target.removeprefix("node.labels.") if target.startswith("node.labels.") \
                else "node" if target in ("node.id", "node.hostname") else None
            if scope not in _SPREAD_SCOPES:
                self.p.warn((*ipath, "spread"), f"spreading over {target!r} has no edgefed "
                            "equivalent yet; ignored (edgefed spreads over node.labels.site, "
                            "region, provider or node)")
                continue
            # Swarm's spread is a preference that evens replicas out: skew 1, not required.
            self.origin(("spec", "placement", "spread", len(out)), (*ipath, "spread"))
            out.append({"scope": scope, "maxSkew": 1, "required": False})
        return out

    def rollout(self, value: Any, path: FieldPath, replicas: Any) -> dict[str, Any]:
        doc = self.mapping(value, path)
        self.fields(doc, path, _UPDATE, {"parallelism", "delay", "failure_action", "order"})
        self.origin(("spec", "rollout"), path)
        out: dict[str, Any] = {}
        parallelism = doc.get("parallelism")
        if parallelism is not None:
            if _is_int(parallelism) and parallelism == 0:
                # Swarm's 0 means "all at once": as many as there are replicas.
                parallelism = replicas if _is_int(replicas) and replicas > 0 else 1
            out["parallelism"] = parallelism
            self.origin(("spec", "rollout", "parallelism"), (*path, "parallelism"))
        if doc.get("delay") is not None:
            delay = self.converted(duration, doc["delay"], (*path, "delay"))
            if delay is not None:
                out["delay"] = delay
                self.origin(("spec", "rollout", "delay"), (*path, "delay"))
        if doc.get("failure_action") is not None:
            out["failureAction"] = doc["failure_action"]
            self.origin(("spec", "rollout", "failureAction"), (*path, "failure_action"))
        # A batch is `parallelism` tasks: with start-first their new instances all run
        # before the old ones stop (surge), with stop-first (Swarm's default) they all
        # stop first (unavailable).
        width = parallelism if isinstance(parallelism, int) and parallelism > 0 else 1
        order = doc.get("order")
        if order == "start-first":
            out.update(maxSurge=width, maxUnavailable=0)
        elif order == "stop-first":
            out["maxSurge"] = 0
        elif order is not None:
            self.p.error((*path, "order"), f"found {_shown(order)}, expected start-first or "
                         "stop-first")
        for native in ("maxSurge", "maxUnavailable"):
            self.origin(("spec", "rollout", native), (*path, "order"))
        if order != "start-first" and width > 1:
            out["maxUnavailable"] = width
            self.origin(("spec", "rollout", "maxUnavailable"), (*path, "parallelism"))
        return out
