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
from typing import TYPE_CHECKING, Any

from federation.client import DEFAULT_SERVER, SERVER_ENV, ApiClient, ApiError, quote
from federation.output import FORMATS, resource_kind

if TYPE_CHECKING:
    from policies.loader import LoadResult
    from policies.model import Deployment

OK, FAILED, USAGE = 0, 1, 2
# Subcommands that are whole programs with their own argparse.
_DELEGATED = {"controller": "federation.controller", "agent": "edge_agent.cli"}
_DEPLOYMENT_KINDS = ("deployment", "deployments", "deploy")


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
                       ("agent", "run an agent on this node (see its --help)")):
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

    p = command("apply", _apply, "create or update the deployments in policy files",
                "edgefed apply -f web.yaml -f db.yaml")
    _add_files(p)
    p.add_argument("--allow-pending", action="store_true",
                   help="store deployments even if some replicas cannot be placed yet")
    p = command("plan", _plan, "show where the deployments in files would be placed, and why"
                " (dry run)", "edgefed plan -f web.yaml")
    _add_files(p)
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p = command("validate", _validate, "check policy files without contacting the controller",
                "edgefed validate -f web.yaml")
    _add_files(p)
    p = command("get", _get, "list nodes, sites, deployments or pods",
                "edgefed get pods web -o wide")
    p.add_argument("kind", type=_kind, metavar="KIND", help="nodes, sites, deployments or pods "
                   "(also node, site, deployment/deploy, pod/po)")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="show only this one (for pods: a pod or a deployment name)")
    p.add_argument("-o", "--output", choices=FORMATS, default="table")
    p = command("describe", _describe, "show a deployment in detail: where each replica runs "
                "and why", "edgefed describe deployment web")
    p.add_argument("kind", choices=_DEPLOYMENT_KINDS, metavar="deployment")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-o", "--output", choices=("json", "yaml"),
                   help="print the controller's answer instead of the description")
    p = command("delete", _delete, "delete deployments (their replicas are stopped)",
                "edgefed delete deployment web")
    p.add_argument("kind", choices=_DEPLOYMENT_KINDS, metavar="deployment")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = command("logs", _logs, "print the output of a pod's container",
                "edgefed logs web/0 --tail 50")
    p.add_argument("pod", type=_pod, metavar="POD", help="DEPLOYMENT/SLOT, e.g. web/0 (or web-0)")
    p.add_argument("--tail", type=_count, metavar="N", help="only the last N lines")
    return parser


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


def _load(paths: Sequence[str]) -> list[tuple[str, Deployment]] | None:
    """(file, deployment) for every deployment in the files, in order; None after
    printing every problem if any file does not load."""
    loaded: list[tuple[str, Deployment]] = []
    ok = True
    for path in paths:
        result = _load_one(path)
        if result is None:
            ok = False
            continue
        for warning in result.warnings:
            print(warning, file=sys.stderr)
        loaded += [(path, d) for d in result.deployments]
    seen: dict[str, str] = {}
    for path, deployment in loaded:
        if deployment.name in seen:
            ok = False
            print(f"{path}: error: deployment {deployment.name} is also defined in "
                  f"{seen[deployment.name]}", file=sys.stderr)
        seen.setdefault(deployment.name, path)
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
    for path, deployment in loaded:
        name = deployment.name
        try:
            resp = client.put(f"/api/v1/deployments/{quote(name)}", _document(deployment), query)
        except ApiError as exc:
            if exc.status == 409:
                worst = max(worst, _unschedulable(exc))
            elif exc.status == 422:
                worst = max(worst, _print_problems(exc, path))
            else:
                raise
            continue
        resp = resp if isinstance(resp, dict) else {}
        state = "configured" if resp.get("changed") else "unchanged"
        print(f"deployment.edgefed.io/{resp.get('name', name)} {state} "
              f"(revision {resp.get('revision', '?')})")
    return worst


def _unschedulable(exc: ApiError) -> int:
    body = exc.body if isinstance(exc.body, dict) else {}
    lines = [f"{s.get('slot')}: {s.get('message')}"
             for s in body.get("unschedulable") or [] if isinstance(s, dict)]
    return _fail(exc.message, *lines)


def _plan(args: argparse.Namespace) -> int:
    loaded = _load(args.files)
    if loaded is None:
        return USAGE
    body = {"documents": [_document(d) for _, d in loaded]}
    try:
        resp = _client(args).post("/api/v1/plan", body)
    except ApiError as exc:
        if exc.status == 422:
            return _print_problems(exc, ", ".join(args.files))
        raise
    from federation.output import render_data, render_plan

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
        print(f"{path}: {len(result.deployments)} deployment(s) valid")
    return code


def _get(args: argparse.Namespace) -> int:
    from federation.output import render_items, select

    resp = _client(args).get(f"/api/v1/{args.kind}")
    items = resp.get("items") if isinstance(resp, dict) else None
    if not isinstance(items, list):
        return _fail(f"unexpected answer to GET /api/v1/{args.kind}: no list of items")
    shown = select(args.kind, [i for i in items if isinstance(i, dict)], args.name)
    if args.name is not None and not shown:
        return _fail(f"{args.kind.removesuffix('s')} {args.name} not found")
    if not shown and args.output in ("table", "wide"):
        print(f"no {args.kind} found", file=sys.stderr)
        return OK
    sys.stdout.write(render_items(args.kind, shown, args.output))
    return OK


def _describe(args: argparse.Namespace) -> int:
    from federation.output import describe_deployment, render_data

    try:
        resp = _client(args).get(f"/api/v1/deployments/{quote(args.name)}")
    except ApiError as exc:
        if exc.status == 404:
            return _fail(f"deployment {args.name} not found")
        raise
    if args.output:
        sys.stdout.write(render_data(resp, args.output))
    else:
        resp = resp if isinstance(resp, dict) else {}
        sys.stdout.write(describe_deployment(resp, now=time.time(), width=_width()))
    return OK


def _delete(args: argparse.Namespace) -> int:
    client = _client(args)
    code = OK
    for name in args.names:
        try:
            client.delete(f"/api/v1/deployments/{quote(name)}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            code = _fail(f"deployment {name} not found")
            continue
        print(f"deployment.edgefed.io/{name} deleted")
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


if __name__ == "__main__":
    sys.exit(main())
