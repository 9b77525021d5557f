"""``e2former info CHECKPOINT``: architecture, data, units and errors of a checkpoint."""

from __future__ import annotations


def add_parser(sub) -> None:
    info = sub.add_parser("info", help="describe a checkpoint: architecture, data, units, errors")
    info.add_argument("checkpoint", help="checkpoint file, or the name of a shipped potential (e2former-lsr)")
    info.add_argument("--json", action="store_true", help="print the configuration and metadata as JSON")
    info.set_defaults(func=run_info)


def run_info(args) -> None:
    import json
    import os

    from ..checkpoints import find_shipped_potential, load_checkpoint

    path = args.checkpoint
    if not os.path.exists(path) and find_shipped_potential(path):
        path = find_shipped_potential(path)
    model, metadata = load_checkpoint(path)
    if args.json:
        print(json.dumps({"config": model.config.to_dict(), "metadata": metadata}, indent=1, default=str))
        return
    print("\n".join(describe(path, model, metadata)))


def _elements(numbers: list[int]) -> str:
    import openmm.app as app

    if len(numbers) > 20:
        return f"{len(numbers)} elements, atomic numbers {min(numbers)}-{max(numbers)}"
    return " ".join(app.Element.getByAtomicNumber(int(z)).symbol for z in numbers)


def describe(path: str, model, metadata: dict) -> list[str]:
    """Readable lines about a loaded checkpoint (``e2former info``)."""
    import os

    from ..checkpoints import file_sha256

    c = model.config
    params = sum(p.numel() for p in model.parameters())
    lines = [
        f"file        {path} ({os.path.getsize(path) / 1e6:.2f} MB, sha256 {file_sha256(path)[:16]}...)",
        f"model       E2Former{'-LSR' if c.num_long_layers else ''}, {params} parameters: {c.channels} "
        f"channels, l <= {c.lmax}, {c.num_local_layers} local blocks ({c.local_cutoff} Å, {c.local_mode}), "
        f"{c.num_long_layers} long-range blocks ({c.long_cutoff} Å, fragments: {c.fragment_selection})",
        f"elements    {_elements(c.elements)}",
        f"units       positions Å, energy {c.energy_unit} inside the network (OpenMM: nm, kJ/mol)",
    ]
    if metadata.get("energy_reference"):
        head = f"; head {metadata['head']}" if metadata.get("head") else ""
        lines.append(f"energies    {metadata['energy_reference']} (reference convention){head}")
    if metadata.get("level_of_theory"):
        lines.append(f"trained on  {', '.join(metadata['level_of_theory'])}; data {metadata.get('data')}")
    if metadata.get("split_sizes"):
        lines.append("splits      " + ", ".join(f"{k} {v}" for k, v in metadata["split_sizes"].items()))
    for label, key in (("validation", "validation_errors"), ("test", "test_errors")):
        e = metadata.get(key) or (metadata.get("validation") if key == "validation_errors" else None)
        if e:
            lines.append(
                f"{label:<11} energy MAE {1000 * e['energy_mae']:.1f} meV/atom, force MAE "
                f"{e['force_mae']:.4f} eV/Å ({e['count']} structures)"
            )
    if metadata.get("fine_tuned_from"):
        lines.append(f"fine-tuned  from {metadata['fine_tuned_from']}")
    if metadata.get("source"):
        lines.append(f"source      {metadata['source']}")
    return lines
