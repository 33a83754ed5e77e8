"""``edgefed``: the operator's command line.

``edgefed controller`` and ``edgefed agent`` hand their arguments untouched to
the programs they start; every other subcommand is a client of the
controller's REST API (see :mod:`federation.client`).

Exit codes: 0 ok, 1 the controller or the system failed, 2 usage or a policy
that does not validate. Expected failures print one ``error: ...`` line (plus
details) to stderr and never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from federation.client import DEFAULT_SERVER, SERVER_ENV, ApiClient, ApiError, quote
from federation.output import FORMATS, resource_kind

if TYPE_CHECKING:
    from policies.loader import LoadResult
    from policies.model import Deployment, PlacementPolicy

OK, FAILED, USAGE = 0, 1, 2
# Subcommands that are whole programs with their own argparse.
_DELEGATED = {"controller": "federation.controller_cli", "agent": "edge_agent.cli",
              "drill": "federation.drill.cli"}
_DEPLOYMENT_KINDS = ("deployment", "deployments", "deploy")
_POLICY_KINDS = ("placementpolicy", "placementpolicies", "pp")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in _DELEGATED:
        return _delegate(args_list[0], args_list[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(args_list)
    if args.command in _DELEGATED:  # reached only with global options before it
        return _delegate(args.command, args_list[args_list.index(args.command) + 1:])
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE
    try:
        return int(args.run(args))
    except ApiError as exc:
        return _fail(exc.message)
    except UsageError as exc:
        return _fail(str(exc), code=USAGE)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (head, less) went away: stop quietly, as other CLIs do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAILED


def _delegate(command: str, rest: list[str]) -> int:
    module_name = _DELEGATED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        return _fail(f"`edgefed {command}` cannot start: no module named {exc.name!r}")
    return int(module.main(rest) or 0)


# -- arguments ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefed",
        description="Run containers across edge sites and clouds as one federation.",
        epilog="example:\n  edgefed apply -f web.yaml && edgefed get pods\n\n"
        f"The controller is found at --server, else ${SERVER_ENV}, else {DEFAULT_SERVER}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_globals(parser, argparse_default=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (("controller", "run the federation controller (see its --help)"),
                       ("agent", "run an agent on this node (see its --help)"),
                       ("drill", "rehearse failures: edgefed drill run FILE|NAME, "
                        "edgefed drill list")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str,
                example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                           epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(run=run)
        _add_globals(p, argparse_default=False)
        return p

    p = command("apply", _apply, "create or update the deployments and placement policies in "
                "policy files (the policies first)", "edgefed apply -f web.yaml -f db.yaml")
    _add_files(p)
    p.add_argument("--allow-pending", action="store_true",
                   help="store deployments even if some replicas cannot be placed yet")
    p = command("plan", _plan, "show where the deployments in files would be placed, what "
                "would move, and why (dry run)", "edgefed plan -f web.yaml")
    _add_files(p)
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p = command("validate", _validate, "check policy files without contacting the controller",
                "edgefed validate -f web.yaml")
    _add_files(p)
    p = command("get", _get, "list nodes, sites, deployments, pods or placement policies",
                "edgefed get pods web -o wide")
    p.add_argument("kind", type=_kind, metavar="KIND", help="nodes, sites, deployments, pods or "
                   "placementpolicies (also node, site, deployment/deploy, pod/po, "
                   "placementpolicy/pp); rtt for round-trip times from landmarks and sites")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="show only this one (for pods: a pod or a deployment name)")
    p.add_argument("-o", "--output", choices=FORMATS, default="table")
    p.add_argument("--from", dest="source", metavar="SOURCE",
                   help="for `get rtt`: only the RTT from this landmark or site")
    p = command("describe", _describe, "show a deployment in detail: where each replica runs "
                "and why", "edgefed describe deployment web")
    p.add_argument("kind", choices=_DEPLOYMENT_KINDS, metavar="deployment")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-o", "--output", choices=("json", "yaml"),
                   help="print the controller's answer instead of the description")
    p = command("delete", _delete, "delete deployments (their replicas are stopped) or "
                "placement policies", "edgefed delete deployment web")
    p.add_argument("kind", choices=_DEPLOYMENT_KINDS + _POLICY_KINDS,
                   metavar="{deployment,placementpolicy}")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = command("logs", _logs, "print the output of a pod's container",
                "edgefed logs web/0 --tail 50")
    p.add_argument("pod", type=_pod, metavar="POD", help="DEPLOYMENT/SLOT, e.g. web/0 (or web-0)")
    p.add_argument("--tail", type=_count, metavar="N", help="only the last N lines")
    p = command("rollout", _rollout_usage, "list the revisions of a deployment, go back to one, "
                "or follow its rollout", "edgefed rollout history web\n  edgefed rollout undo "
                "web --to-revision 2\n  edgefed rollout status web")
    _add_rollout(p)
    p = command("confirm-lost", _confirm_lost, "confirm that a node out of contact is gone: "
                "its replicas, singletons included, are replaced now instead of after their "
                "grace", "edgefed confirm-lost pi-berlin-3")
    p.add_argument("node", metavar="NODE")
    return parser


def _add_rollout(parent: argparse.ArgumentParser) -> None:
    sub = parent.add_subparsers(dest="action", metavar="ACTION")
    for name, run, text, example in (
        ("history", _rollout_history, "list the revisions of a deployment and what each changed",
         "edgefed rollout history web -o yaml"),
        ("undo", _rollout_undo, "apply an earlier revision again, as a new revision (default: "
         "the revision before the current one)", "edgefed rollout undo web --to-revision 2"),
        ("status", _rollout_status, "show a deployment's rollout and wait until it is done "
         "(exit 1 if it paused or was rolled back)", "edgefed rollout status web --timeout 120"),
    ):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                           epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(run=run)
        _add_globals(p, argparse_default=False)
        p.add_argument("name", type=_deployment_name, metavar="NAME",
                       help="the deployment (also deployment/NAME)")
        if name == "history":
            p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
        elif name == "status":
            p.add_argument("--no-wait", dest="wait", action="store_false",
                           help="print the status once and return")
            p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                           help="give up waiting after this long (default 600)")
        else:
            p.add_argument("--to-revision", type=_revision, metavar="N",
                           help="the revision to go back to (see `edgefed rollout history`)")
            p.add_argument("--allow-pending", action="store_true",
                           help="go back even if some replicas cannot be placed yet")


def _add_globals(parser: argparse.ArgumentParser, *, argparse_default: bool) -> None:
    # Accepted before and after the subcommand; after wins. The subcommand's
    # copies must not overwrite a value given before it with their default.
    default: Any = None if argparse_default else argparse.SUPPRESS
    parser.add_argument("--server", metavar="URL", default=default,
                        help=f"the controller (default: ${SERVER_ENV}, else {DEFAULT_SERVER})")
    parser.add_argument("-v", "--verbose", action="store_true",
                        default=False if argparse_default else argparse.SUPPRESS,
                        help="show each request sent to the controller")


def _add_files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", dest="files", action="append", required=True,
                        metavar="FILE", help="a policy file (repeatable)")


def _kind(text: str) -> str:
    if text.lower() == "rtt":  # the RTT matrix: rows of (source, node), not named items
        return "rtt"
    try:
        return resource_kind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pod(text: str) -> tuple[str, int]:
    """``web/0`` or ``web-0`` -> ("web", 0)."""
    for sep in ("/", "-"):
        deployment, _, slot = text.rpartition(sep)
        if deployment and slot.isdigit():
            return deployment, int(slot)
    raise argparse.ArgumentTypeError(f"{text!r}: expected DEPLOYMENT/SLOT, e.g. web/0")


def _deployment_name(text: str) -> str:
    """``web`` or, as kubectl writes it, ``deployment/web``."""
    kind, sep, name = text.partition("/")
    if sep and kind in _DEPLOYMENT_KINDS and name:
        return name
    return text


def _revision(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a revision number, e.g. 2")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of lines, e.g. 100")
    return int(text)


def _client(args: argparse.Namespace) -> ApiClient:
    server = args.server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    trace = (lambda line: print(line, file=sys.stderr)) if args.verbose else None
    try:
        return ApiClient(server, trace=trace)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


class UsageError(Exception):
    """A bad argument found after parsing; exits 2 like argparse's own errors."""


def _fail(message: str, *details: str, code: int = FAILED) -> int:
    print(f"error: {message}", file=sys.stderr)
    for line in details:
        print(f"  {line}", file=sys.stderr)
    return code


def _width() -> int:
    return shutil.get_terminal_size(fallback=(120, 24)).columns


# -- policy files ---------------------------------------------------------------


@dataclass
class _Loaded:
    """Everything in the files, in order, each with the file it came from."""

    deployments: list[tuple[str, Deployment]] = field(default_factory=list)
    policies: list[tuple[str, PlacementPolicy]] = field(default_factory=list)


def _load(paths: Sequence[str]) -> _Loaded | None:
    """The deployments and placement policies of the files; None after printing
    every problem if any file does not load or a name is defined twice."""
    loaded = _Loaded()
    ok = True
    for path in paths:
        result = _load_one(path)
        if result is None:
            ok = False
            continue
        for warning in result.warnings:
            print(warning, file=sys.stderr)
        loaded.deployments += [(path, d) for d in result.deployments]
        loaded.policies += [(path, p) for p in result.policies]
    for kind, items in (("deployment", loaded.deployments), ("placement policy", loaded.policies)):
        seen: dict[str, str] = {}
        for path, item in items:
            if item.name in seen:
                ok = False
                print(f"{path}: error: {kind} {item.name} is also defined in {seen[item.name]}",
                      file=sys.stderr)
            seen.setdefault(item.name, path)
    return loaded if ok else None


def _load_one(path: str) -> LoadResult | None:
    """The file's deployments and warnings, or None after printing its problems
    (the loader reports unreadable files as problems too)."""
    from policies.errors import PolicyError
    from policies.loader import load_path

    try:
        return load_path(path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _document(deployment: Deployment) -> dict[str, Any]:
    from policies.model import deployment_to_document

    return deployment_to_document(deployment)


def _policy_document(policy: PlacementPolicy) -> dict[str, Any]:
    from policies.model import policy_to_document

    return policy_to_document(policy)


def _print_problems(exc: ApiError, where: str) -> int:
    body = exc.body if isinstance(exc.body, dict) else {}
    lines = []
    for p in body.get("problems") or []:
        field = p.get("field") if isinstance(p, dict) else None
        message = p.get("message") if isinstance(p, dict) else p
        lines.append(f"{field}: {message}" if field and field != "(document)" else str(message))
    return _fail(f"{where}: {exc.message}", *lines, code=USAGE)


# -- commands -------------------------------------------------------------------


def _apply(args: argparse.Namespace) -> int:
    loaded = _load(args.files)
    if loaded is None:
        return USAGE
    client = _client(args)
    query = {"allow_pending": True} if args.allow_pending else None
    worst = OK
    # Policies first: the deployments of the same files are then checked and placed by them.
    for path, policy in loaded.policies:
        try:
            resp = client.put(f"/api/v1/placementpolicies/{quote(policy.name)}",
                              _policy_document(policy), query)
        except ApiError as exc:
            if exc.status == 409:
                _warn(f"placementpolicy {policy.name}", exc.body)
                worst = max(worst, _unschedulable(exc))
            elif exc.status == 422:
                worst = max(worst, _print_problems(exc, path))
            else:
                raise
            continue
        _warn(f"placementpolicy {policy.name}", resp)
        state = "configured" if isinstance(resp, dict) and resp.get("changed") else "unchanged"
        print(f"placementpolicy.edgefed.io/{policy.name} {state}")
    for path, deployment in loaded.deployments:
        name = deployment.name
        try:
            resp = client.put(f"/api/v1/deployments/{quote(name)}", _document(deployment), query)
        except ApiError as exc:
            if exc.status == 409:
                _warn(name, exc.body)
                worst = max(worst, _unschedulable(exc))
            elif exc.status == 422:
                worst = max(worst, _print_problems(exc, path))
            else:
                raise
            continue
        resp = resp if isinstance(resp, dict) else {}
        _warn(name, resp)
        state = "configured" if resp.get("changed") else "unchanged"
        print(f"deployment.edgefed.io/{resp.get('name', name)} {state} "
              f"(revision {resp.get('revision', '?')})")
    return worst


def _warn(name: str, answer: object) -> None:
    """The controller's warnings for what it does not enforce: never silently ignored."""
    warnings = answer.get("warnings") if isinstance(answer, dict) else None
    for warning in warnings if isinstance(warnings, list) else []:
        print(f"warning: {name}: {warning}", file=sys.stderr)


def _unschedulable(exc: ApiError) -> int:
    body = exc.body if isinstance(exc.body, dict) else {}
    lines = [f"{s.get('slot')}: {s.get('message')}"
             for s in body.get("unschedulable") or [] if isinstance(s, dict)]
    return _fail(exc.message, *lines)


def _plan(args: argparse.Namespace) -> int:
    loaded = _load(args.files)
    if loaded is None:
        return USAGE
    body = {"documents": [_policy_document(p) for _, p in loaded.policies]
            + [_document(d) for _, d in loaded.deployments]}
    try:
        resp = _client(args).post("/api/v1/plan", body)
    except ApiError as exc:
        if exc.status == 422:
            return _print_problems(exc, ", ".join(args.files))
        raise
    from federation.output import render_data, render_plan

    for policy in resp.get("policies") or [] if isinstance(resp, dict) else []:
        if isinstance(policy, dict):
            _warn(f"placementpolicy {policy.get('name')}", policy)
    for deployment in resp.get("deployments") or [] if isinstance(resp, dict) else []:
        if isinstance(deployment, dict):
            _warn(str(deployment.get("name")), deployment)
    if args.output in ("json", "yaml"):
        sys.stdout.write(render_data(resp, args.output))
    else:
        sys.stdout.write(render_plan(resp if isinstance(resp, dict) else {}, width=_width()))
    return OK


def _validate(args: argparse.Namespace) -> int:
    code = OK
    for path in args.files:
        result = _load_one(path)
        if result is None:
            code = USAGE
            continue
        for warning in result.warnings:
            print(warning, file=sys.stderr)
        policies = (f", {len(result.policies)} placement polic"
                    f"{'y' if len(result.policies) == 1 else 'ies'}" if result.policies else "")
        print(f"{path}: {len(result.deployments)} deployment(s){policies} valid")
    return code


def _words(kind: str) -> tuple[str, str]:
    """How messages name one and several of ``kind``."""
    if kind == "placementpolicies":
        return "placement policy", "placement policies"
    return kind.removesuffix("s"), kind


def _get(args: argparse.Namespace) -> int:
    from federation.output import render_data, render_items, select

    if args.kind == "rtt":
        return _get_rtt(args)
    if args.source is not None:
        return _fail("--from applies to `edgefed get rtt` only", code=USAGE)
    if args.kind == "deployments" and args.name is not None and args.output in ("json", "yaml"):
        return _get_document(args)
    resp = _client(args).get(f"/api/v1/{args.kind}")
    items = resp.get("items") if isinstance(resp, dict) else None
    if not isinstance(items, list):
        return _fail(f"unexpected answer to GET /api/v1/{args.kind}: no list of items")
    shown = select(args.kind, [i for i in items if isinstance(i, dict)], args.name)
    if args.name is not None and not shown:
        return _fail(f"{_words(args.kind)[0]} {args.name} not found")
    if args.kind == "placementpolicies" and args.name is not None and args.output in (
            "json", "yaml"):
        # Its document, as for a deployment: `edgefed apply -f` of it changes nothing.
        sys.stdout.write(render_data(shown[0].get("document"), args.output))
        return OK
    if not shown and args.output in ("table", "wide"):
        print(f"no {_words(args.kind)[1]} found", file=sys.stderr)
        return OK
    sys.stdout.write(render_items(args.kind, shown, args.output))
    return OK


def _get_rtt(args: argparse.Namespace) -> int:
    """`edgefed get rtt [NODE] [--from SOURCE]`: RTT from each landmark and site to
    each node, measured or estimated (-o json: the rows as the API gives them)."""
    from federation.output import render_data, render_rtt

    try:
        resp = _client(args).get("/api/v1/rtt",
                                 query={"from": args.source} if args.source else None)
    except ApiError as exc:
        if exc.status == 404:
            return _fail(exc.message)
        raise
    rows = resp.get("sources") if isinstance(resp, dict) else None
    if not isinstance(rows, list):
        return _fail("unexpected answer to GET /api/v1/rtt: no list of sources")
    rows = [r for r in rows if isinstance(r, dict)
            and (args.name is None or r.get("node") == args.name)]
    if args.output in ("json", "yaml"):
        sys.stdout.write(render_data(rows, args.output))
    elif not rows:
        print("no rtt data yet (agents report it with their capacity)", file=sys.stderr)
    else:
        sys.stdout.write(render_rtt(rows, resp, wide=args.output == "wide"))
    return OK


def _fetch_deployment(args: argparse.Namespace) -> Any:
    """GET one deployment; a missing one is a clean error, not a traceback."""
    try:
        return _client(args).get(f"/api/v1/deployments/{quote(args.name)}")
    except ApiError as exc:
        if exc.status == 404:
            raise _NotFound(f"deployment {args.name} not found") from None
        raise


class _NotFound(Exception):
    pass


def _get_document(args: argparse.Namespace) -> int:
    """The deployment's own native document: `edgefed apply -f` of it changes nothing."""
    from federation.output import render_data

    try:
        resp = _fetch_deployment(args)
    except _NotFound as exc:
        return _fail(str(exc))
    document = resp.get("document") if isinstance(resp, dict) else None
    if not isinstance(document, dict):
        return _fail(f"unexpected answer to GET /api/v1/deployments/{args.name}: no document")
    sys.stdout.write(render_data(document, args.output))
    return OK


def _describe(args: argparse.Namespace) -> int:
    from federation.output import describe_deployment, render_data

    try:
        resp = _fetch_deployment(args)
    except _NotFound as exc:
        return _fail(str(exc))
    if args.output:
        sys.stdout.write(render_data(resp, args.output))
    else:
        resp = resp if isinstance(resp, dict) else {}
        sys.stdout.write(describe_deployment(resp, now=time.time(), width=_width()))
    return OK


def _delete(args: argparse.Namespace) -> int:
    client = _client(args)
    policy = args.kind in _POLICY_KINDS
    path, kind, what = (("placementpolicies", "placementpolicy", "placement policy") if policy
                        else ("deployments", "deployment", "deployment"))
    code = OK
    for name in args.names:
        try:
            client.delete(f"/api/v1/{path}/{quote(name)}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            code = _fail(f"{what} {name} not found")
            continue
        print(f"{kind}.edgefed.io/{name} deleted")
    return code


def _logs(args: argparse.Namespace) -> int:
    deployment, slot = args.pod
    query = {"tail": args.tail} if args.tail is not None else None
    resp = _client(args).get(f"/api/v1/pods/{quote(deployment)}/{slot}/logs", query)
    logs = resp.get("logs") if isinstance(resp, dict) else None
    if not isinstance(logs, str):
        return _fail(f"unexpected answer for the logs of {deployment}/{slot}: no logs text")
    sys.stdout.write(logs)
    return OK


def _rollout_usage(args: argparse.Namespace) -> int:
    raise UsageError("expected `edgefed rollout history|undo|status NAME`")


def _rollout_status(args: argparse.Namespace) -> int:
    """Print the rollout's progress each time it changes, until it completes, pauses or
    is rolled back (or ``--timeout``)."""
    from federation.output import format_rollout

    deadline = time.monotonic() + args.timeout
    shown = ""
    while True:
        try:
            resp = _fetch_deployment(args)
        except _NotFound as exc:
            return _fail(str(exc))
        rollout = resp.get("rollout") if isinstance(resp, dict) else None
        if not isinstance(rollout, dict):
            print(f"deployment {args.name} has had no rollout (revision "
                  f"{resp.get('revision', '?') if isinstance(resp, dict) else '?'})")
            return OK
        # A new line when the rollout moves on, not for each second of a countdown.
        key = repr([rollout.get(k) for k in ("phase", "batch", "updated", "failed", "paused",
                                             "rolled_back", "to_revision")])
        if key != shown:
            print(format_rollout(rollout), flush=True)
            shown = key
        if rollout.get("paused"):
            return _fail(f"rollout of {args.name} paused: {rollout['paused']}")
        if rollout.get("done"):
            if rollout.get("rolled_back"):
                return _fail(f"rollout of {args.name}: {rollout['rolled_back']}")
            return OK
        if not args.wait:
            return OK
        if time.monotonic() > deadline:
            return _fail(f"rollout of {args.name} not done after {args.timeout:g}s")
        time.sleep(1.0)  # polling the controller's API: the one way the CLI can wait


def _rollout_history(args: argparse.Namespace) -> int:
    try:
        resp = _client(args).get(f"/api/v1/deployments/{quote(args.name)}/revisions")
    except ApiError as exc:
        if exc.status == 404:
            return _fail(f"deployment {args.name} not found")
        raise
    items = resp.get("items") if isinstance(resp, dict) else None
    if not isinstance(items, list):
        return _fail(f"unexpected answer for the revisions of {args.name}: no list of items")
    from federation.output import render_data, render_history

    if args.output in ("json", "yaml"):
        sys.stdout.write(render_data(items, args.output))
    else:
        sys.stdout.write(render_history([i for i in items if isinstance(i, dict)],
                                        now=time.time(), width=_width()))
    return OK


def _rollout_undo(args: argparse.Namespace) -> int:
    query = {"allow_pending": True} if args.allow_pending else None
    try:
        resp = _client(args).post(f"/api/v1/deployments/{quote(args.name)}/rollback",
                                  {"revision": args.to_revision}, query)
    except ApiError as exc:
        if exc.status == 409 and isinstance(exc.body, dict) and exc.body.get("unschedulable"):
            _warn(args.name, exc.body)
            return _unschedulable(exc)
        raise
    resp = resp if isinstance(resp, dict) else {}
    _warn(args.name, resp)
    name, revision = resp.get("name", args.name), resp.get("revision", "?")
    if resp.get("changed"):
        print(f"deployment.edgefed.io/{name} rolled back to revision "
              f"{resp.get('rolled_back_to', '?')} (revision {revision})")
    else:
        print(f"deployment.edgefed.io/{name} unchanged: "
              f"{resp.get('message') or 'nothing to change'} (revision {revision})")
    return OK


def _confirm_lost(args: argparse.Namespace) -> int:
    resp = _client(args).confirm_lost(args.node)
    resp = resp if isinstance(resp, dict) else {}
    print(f"node/{args.node} {resp.get('state', 'Lost')}: "
          f"{resp.get('reason') or 'confirmed lost'}")
    return OK


if __name__ == "__main__":
    sys.exit(main())
