"""The `e2former` command line: export, info, and errors."""

import json
import os

import numpy as np
import openmm
import openmm.app as app
import torch

from openmmml_e2former.checkpoints import load_checkpoint
from openmmml_e2former.cli import main
from openmmml_e2former.export import OpenMMModule
from openmmml_e2former.fragments import fragment_ids_from_topology

HERE = os.path.dirname(__file__)
CHECKPOINT = os.path.join(HERE, "fixtures", "ubio-e2former-lsr", "state_dict.pt")
DIPEPTIDE = os.path.join(HERE, "data", "ace_ala_nme.pdb")


def test_export_writes_torchscript_equal_to_the_wrapped_model(tmp_path):
    out = tmp_path / "model.pt"
    assert main(["export", CHECKPOINT, DIPEPTIDE, "-o", str(out), "--precision", "double"]) == 0
    pdb = app.PDBFile(DIPEPTIDE)
    positions = torch.tensor(pdb.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer))
    loaded = torch.jit.load(str(out))
    model, _ = load_checkpoint(CHECKPOINT)
    numbers = [a.element.atomic_number for a in pdb.topology.atoms()]
    direct = OpenMMModule(model, numbers, fragment_ids_from_topology(pdb.topology), dtype=torch.float64)
    assert np.isclose(float(loaded(positions)), float(direct(positions)), rtol=1e-10)


def test_export_selection_and_errors(tmp_path, capsys):
    out = tmp_path / "ala.pt"
    assert main(["export", CHECKPOINT, DIPEPTIDE, "-o", str(out), "--select", "resname ALA"]) == 0
    assert torch.jit.load(str(out)).atom_indices.numel() < app.PDBFile(DIPEPTIDE).topology.getNumAtoms()
    assert main(["export", CHECKPOINT, DIPEPTIDE, "-o", str(out), "--select", "resname XYZ"]) == 2
    assert "matches no atom" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pt"), DIPEPTIDE, "-o", str(out)]) == 2
    assert "not found" in capsys.readouterr().err


def test_info_prints_the_inferred_configuration(capsys):
    assert main(["info", CHECKPOINT]) == 0
    text = capsys.readouterr().out
    assert "32 channels" in text and "2 long-range blocks" in text and "energy kcal/mol" in text
    assert main(["info", CHECKPOINT, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["channels"] == 32 and data["config"]["num_long_layers"] == 2


def test_info_describes_the_shipped_potential_by_name(capsys):
    from openmmml_e2former.checkpoints import find_shipped_potential

    assert main(["info", "e2former-lsr"]) == 0
    text = capsys.readouterr().out
    _, meta = load_checkpoint(find_shipped_potential("e2former-lsr"))
    assert "GFN2-xTB" in text and f"{meta['test_errors']['force_mae']:.4f} eV/Å" in text


def test_fragments_of_a_user_pdb_without_hydrogens_match_the_villin_windows(tmp_path):
    """``label generate fragments --pdb FILE``: villin with every hydrogen, water and ion deleted
    gets its hydrogens back from OpenMM (AMBER14, pH 7), and its H-capped windows have the same
    atoms, charges and heavy-atom positions as the windows cut from OpenMM's complete test.pdb."""
    import openmm.app as app
    import openmm.unit as unit

    from openmmml_e2former.data.extxyz import read_structures
    from openmmml_e2former.data.generators import villin_topology, villin_windows

    top, pos, _ = villin_topology()
    modeller = app.Modeller(top, pos * unit.angstrom)
    modeller.delete([a for a in top.atoms() if a.element.symbol == "H"])
    modeller.delete([r for r in modeller.topology.residues() if r.name in ("HOH", "NA", "CL", "Na", "Cl")])
    pdb = tmp_path / "bare.pdb"
    with open(pdb, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle)
    out = tmp_path / "fragments.extxyz"
    args = ["label", "generate", "fragments", "--pdb", str(pdb), "--frames", "1", "--window", "5"]
    assert main(args + ["--stride", "10", "-o", str(out)]) == 0
    mine = read_structures(str(out))
    reference = villin_windows(window=5, num_frames=1, stride=10, progress=False)
    assert [s.molecule for s in mine] == ["bare:1-5", "bare:11-15", "bare:21-25", "bare:31-35"]
    for a, b in zip(mine, reference, strict=True):
        assert a.charge == b.charge and sorted(a.numbers) == sorted(b.numbers)
        heavy = lambda s: np.sort(np.round(s.positions[s.numbers > 1], 3), axis=0)  # noqa: E731
        np.testing.assert_allclose(heavy(a), heavy(b), atol=2e-3)
    assert main(["label", "generate", "fragments", "-o", str(out)]) == 2  # no --pdb
    assert main(["label", "generate", "fragments", "--pdb", str(tmp_path / "none.pdb"), "-o", str(out)]) == 2


def test_ctrl_c_is_one_line_with_a_resume_hint_and_exit_code_130(monkeypatch, capsys):
    """A KeyboardInterrupt inside a command (Ctrl-C, or `timeout -s INT`) gives exit code 130 and
    one line on stderr saying how to continue, not a traceback."""
    import types

    from openmmml_e2former import cli

    def interrupted(args):
        raise KeyboardInterrupt

    real = cli.build_parser()

    def parse_args(argv):
        args = real.parse_args(argv)
        args.func = interrupted
        return args

    monkeypatch.setattr(cli, "build_parser", lambda: types.SimpleNamespace(parse_args=parse_args))
    assert cli.main(["run", "protein-equilibration", "--pdb", "x.pdb", "-o", "out"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("e2former run: interrupted; run the same command again") and "\n" not in err
    assert cli.main(["info", "x.pt"]) == 130
    assert capsys.readouterr().err.strip() == "e2former info: interrupted"
    assert cli.main(["label", "run", "in.extxyz", "-o", "labels"]) == 130
    assert "finished chunks are kept" in capsys.readouterr().err
    assert cli.main(["label", "generate", "dipeptides", "-o", "x.extxyz"]) == 130
    assert capsys.readouterr().err.strip() == "e2former label: interrupted"  # nothing to resume


def test_one_module_per_command_and_python_dash_m_works():
    """``openmmml_e2former/cli/`` holds one module per sub-command (``_``-prefixed helpers and
    ``__main__`` aside), each one registered; ``python -m openmmml_e2former.cli`` runs the command
    (the Makefile's ``demo`` target and torchrun use it), and ``eval`` is ``evaluate``'s old name."""
    import argparse
    import subprocess
    import sys

    from openmmml_e2former import cli

    folder = os.path.dirname(cli.__file__)
    modules = {f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_")}
    (action,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = set(action.choices)
    assert commands == modules | {"eval"} and action.choices["eval"] is action.choices["evaluate"]
    done = subprocess.run(
        [sys.executable, "-m", "openmmml_e2former.cli", "evaluate", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "--json [PATH]" in done.stdout and "--fixed-centers" in done.stdout
