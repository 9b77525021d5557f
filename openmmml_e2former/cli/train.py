"""``e2former train CONFIG``: train or fine-tune from a YAML config."""

from __future__ import annotations


def add_parser(sub) -> None:
    train = sub.add_parser("train", help="train or fine-tune E2Former-LSR from a YAML config")
    train.add_argument("config", help="YAML training config (see configs/)")
    train.add_argument("--nproc", type=int, default=1, help="data-parallel processes on this machine (gloo)")
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    train.add_argument("--output", default=None, help="override training.output")
    train.set_defaults(func=run_train)


def run_train(args) -> None:
    from ..train.config import load_config
    from ..train.run import run_training

    config = load_config(args.config)
    if args.output:
        config["training"]["output"] = args.output
    run_training(config, nproc=args.nproc, max_steps=args.max_steps)
