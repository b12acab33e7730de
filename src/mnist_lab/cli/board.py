"""`mnist-lab board`: the experiments page on 127.0.0.1, or its static export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_lab.cli.arguments import check_port_free, port_number
from mnist_lab.core.errors import MnistLabError


def _cmd_board(args: argparse.Namespace) -> None:
    from mnist_lab.system.workspace import repository_root

    root = repository_root()
    if args.compare is not None and not args.export:
        raise MnistLabError("--compare names what a static export compares: give --export DIR too")
    if args.export:
        from mnist_lab.board.export import export_board

        compare = [i for i in (args.compare or "").split(",") if i] or None
        if compare is not None and len(set(compare)) < 2:
            raise MnistLabError(f"--compare {args.compare}: name two experiments or more (a,b,...)")
        if args.export.exists() and not args.export.is_dir():
            raise MnistLabError(f"--export {args.export}: a file is there; name a folder (new, or to update)")
        ids = export_board(root, args.export, compare)
        page = (args.export / "index.html").resolve()
        print(f"wrote the board to {args.export}/: open file://{page}")
        if len(ids) >= 2:
            print(f"  its comparison: file://{page}#/compare?ids={','.join(ids)}")
        return
    from mnist_lab.board.app import LOOPBACK, serve

    check_port_free(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address in a URL is bracketed
    print(f"mnist-lab board on http://{host}:{args.port} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    if args.host not in LOOPBACK and not args.host.startswith("127."):
        print(
            f"note: bound to {args.host}, the board has no log-in: anyone who can reach this port can read "
            "the experiments and queue, commit and promote from the page",
            file=sys.stderr,
            flush=True,
        )
    serve(root, args.host, args.port, args.allow_host)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The board command."""
    board = commands.add_parser(
        "board",
        help="the experiments page: table, query, compare, digit pad (offline; --export for static files)",
    )
    board.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines")
    board.add_argument("--port", type=port_number, default=8050)
    board.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name others open the page by (a DNS name, a proxy's); repeatable. Requests naming "
        "another host are refused (DNS rebinding), but for localhost, the bound address, any IP address "
        "and, bound to 0.0.0.0, this machine's name",
    )
    board.add_argument(
        "--export", type=Path, metavar="DIR", help="write static files there instead of serving"
    )
    board.add_argument(
        "--compare", metavar="IDS", help="with --export: the experiments its compare view holds (a,b,...)"
    )
    board.set_defaults(handler=_cmd_board)
