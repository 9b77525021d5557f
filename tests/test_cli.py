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
