"""``e2former protocols``: list the shipped protocol presets."""

from __future__ import annotations


def add_parser(sub) -> None:
    presets = sub.add_parser("protocols", help="list the shipped protocol presets")
    presets.set_defaults(func=run_protocols)


def run_protocols(args) -> None:
    from ..simulate.protocol import list_presets, load_protocol, protocols_dir

    print(f"presets in {protocols_dir()}:")
    for name in list_presets():
        print(f"  {name:24s} {load_protocol(name).description}")
