"""The shipped default potential: loads by name, reproduces its model card's test-subset error through
OpenMM, and bad checkpoints give clear errors.

The committed file ``datasets/test-subset.extxyz.gz`` holds every k-th structure of the held-out test
split (GFN2-xTB labels from tblite); ``scripts/ship_potential.py`` wrote it together with the
checkpoint, and stored the subset's force MAE (computed with the training code's batched PyTorch
evaluation in float32) in the checkpoint metadata and in ``potentials/e2former-lsr.md``. Here the same
MAE is recomputed through a different path: ``MLPotential('e2former-lsr').createSystem`` -> TorchScript
-> OpenMM forces in kJ/mol/nm, converted back to eV/Å (structures of one total charge side by
side in one system, 50 Å apart, beyond every cutoff). Tolerance: 2e-3 eV/Å (float32 vs the
OpenMM plug-in's single precision and unit round trips; the MAE itself is ~0.1 eV/Å).
"""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest

from openmmml_e2former.checkpoints import find_shipped_potential, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBSET = os.path.join(ROOT, "datasets", "test-subset.extxyz.gz")
KJ_PER_MOL_PER_NM_TO_EV_PER_A = 1.0 / 96.48533212331002 / 10.0
TOLERANCE = 2e-3  # eV/Å on the subset force MAE


def shipped() -> str:
    path = find_shipped_potential("e2former-lsr")
    assert path is not None, "openmmml_e2former/potentials/e2former-lsr.pt is missing"
    return path


def topology_for(structures):
    """An OpenMM topology with one residue per fragment of each structure (elements only, no bonds)."""
    from openmmml_e2former.data.structure import openmm_topology

    return openmm_topology(structures)


def openmm_forces(structures, gap: float = 50.0, platform: str = "CPU") -> list[np.ndarray]:
    """Forces (eV/Å) of structures of one total charge, evaluated side by side (``gap`` Å apart,
    beyond every cutoff) in a single OpenMM system built by ``MLPotential('e2former-lsr')``."""
    import openmm
    import openmm.unit as unit
    from openmmml import MLPotential

    charges = {int(s.charge) for s in structures}
    assert len(charges) == 1
    positions, fragments, offset, first = [], [], 0.0, 0
    for s in structures:
        shift = np.array([offset - s.positions[:, 0].min(), 0.0, 0.0])
        positions.append(s.positions + shift)
        offset += np.ptp(s.positions[:, 0]) + gap
        fragments.extend(int(f) + first for f in s.fragment_ids)
        first += int(s.fragment_ids.max()) + 1
    system = MLPotential("e2former-lsr").createSystem(
        topology_for(structures), charge=charges.pop(), fragmentIds=fragments
    )
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform)
    )
    context.setPositions(np.concatenate(positions) * 0.1)
    forces = context.getState(getForces=True).getForces(asNumpy=True)
    forces = (
        np.asarray(forces.value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        * KJ_PER_MOL_PER_NM_TO_EV_PER_A
    )
    return np.split(forces, np.cumsum([s.num_atoms for s in structures])[:-1])


def test_shipped_metadata_states_data_units_and_errors():
    model, meta = load_checkpoint(shipped())
    assert meta["energy_unit"] == "eV" and meta["length_unit"] == "Angstrom"
    assert "GFN2-xTB" in meta["level_of_theory"]
    assert meta["test_errors"]["force_mae"] > 0 and meta["test_subset"]["count"] >= 8
    assert set(model.supported.nonzero().flatten().tolist()) >= {1, 6, 7, 8, 16}


def test_shipped_potential_reproduces_card_force_mae_through_openmm():
    from openmmml_e2former.data.extxyz import read_structures

    _, meta = load_checkpoint(shipped())
    structures = read_structures(SUBSET)
    assert len(structures) == meta["test_subset"]["count"]
    errors = []
    for charge in sorted({s.charge for s in structures}):
        group = [s for s in structures if s.charge == charge]
        errors += [np.abs(f - s.forces).ravel() for f, s in zip(openmm_forces(group), group, strict=True)]
    mae = float(np.concatenate(errors).mean())
    assert mae == pytest.approx(meta["test_subset"]["force_mae"], abs=TOLERANCE)
    with open(os.path.join(os.path.dirname(shipped()), "e2former-lsr.md")) as handle:
        card = handle.read()
    stated = card_subset_statement(card)
    assert stated is not None, "the model card does not state the committed test subset's force MAE"
    count, card_mae = stated
    assert count == len(structures)
    assert card_mae == pytest.approx(mae, abs=TOLERANCE)  # the card's number is the one OpenMM gives


def card_subset_statement(card: str) -> tuple[int, float] | None:
    """(structure count, force MAE in eV/Å) from the card's sentence on the committed test subset."""
    found = re.search(
        r"test subset \(`datasets/test-subset\.extxyz\.gz`,\s+(\d+)\s+structures\):\s+"
        r"force MAE \*\*([0-9.]+)\*\* eV/Å",
        card,
    )
    return None if found is None else (int(found.group(1)), float(found.group(2)))


def test_card_subset_statement_parser():
    text = (
        "Committed test subset (`datasets/test-subset.extxyz.gz`, 16\nstructures): force MAE **0.080** eV/Å"
    )
    assert card_subset_statement(text) == (16, 0.080)
    assert card_subset_statement(text.replace("**0.080**", "0.080")) is None


def _cuda_available() -> bool:
    import openmm
    import torch

    try:
        openmm.Platform.getPlatformByName("CUDA")
    except Exception:  # OpenMMException: no such platform
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs OpenMM's CUDA platform and a CUDA device")
def test_shipped_potential_on_cuda_matches_cpu():
    """The shipped checkpoint loads and runs as a TorchForce on the CUDA platform (same forces as
    the CPU platform, single precision on both)."""
    from openmmml_e2former.data.extxyz import read_structures

    structures = [s for s in read_structures(SUBSET) if s.charge == 0][:4]
    for cpu, gpu in zip(openmm_forces(structures), openmm_forces(structures, platform="CUDA"), strict=True):
        np.testing.assert_allclose(gpu, cpu, atol=1e-3)  # eV/Å; forces are ~1 eV/Å


def test_truncated_shipped_checkpoint_is_a_clear_error(tmp_path):
    from openmmml import MLPotential

    from openmmml_e2former.data.extxyz import read_structures

    bad = tmp_path / "e2former-lsr.pt"
    data = open(shipped(), "rb").read()
    bad.write_bytes(data[: len(data) // 2])
    structure = read_structures(SUBSET)[0]
    with pytest.raises(ValueError, match="e2former-lsr.pt") as info:
        MLPotential("e2former-lsr", modelPath=str(bad)).createSystem(topology_for([structure]))
    assert "corrupt" in str(info.value) or "truncated" in str(info.value)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    import torch

    from openmmml_e2former.checkpoints import CheckpointError

    payload = torch.load(shipped(), weights_only=False)
    payload["config"]["channels"] = 16  # shapes no longer fit the weights
    payload["config"]["num_heads"] = 4
    path = tmp_path / "mismatched.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="shape|does not fit"):
        load_checkpoint(str(path))
    from openmmml import MLPotential

    from openmmml_e2former.data.extxyz import read_structures

    topology = topology_for(read_structures(SUBSET)[:1])
    with pytest.raises(ValueError, match="mismatched.pt"):  # the user's path names the file at fault
        MLPotential("e2former-lsr", modelPath=str(path)).createSystem(topology)


def test_local_only_name_has_no_shipped_weights(tmp_path):
    from openmmml import MLPotential

    from openmmml_e2former.data.extxyz import read_structures

    assert find_shipped_potential("e2former") is None
    with pytest.raises(ValueError, match="modelPath"):
        MLPotential("e2former").createSystem(topology_for(read_structures(SUBSET)[:1]))
    shutil.rmtree(tmp_path)


def test_evaluate_command_selects_a_split_side_and_reports_each_molecule(tmp_path, capsys):
    """``e2former evaluate CKPT DATA --split S --side test --by-molecule``: only the side's ids are
    scored, and each molecule's force MAE matches forces computed through OpenMM."""
    import json

    from openmmml_e2former.cli import main
    from openmmml_e2former.data.extxyz import read_structures
    from openmmml_e2former.data.splits import group_key

    structures = read_structures(SUBSET)
    by_group: dict[str, list] = {}
    for s in structures:
        by_group.setdefault(group_key(s), []).append(s)
    chosen = [group[:2] for group in by_group.values() if len(group) >= 2][:2]
    test = [s for group in chosen for s in group]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [s.id for s in structures if s not in test], "val": [],
                                 "test": [s.id for s in test]}))  # fmt: skip
    out = tmp_path / "errors.json"
    args = ["evaluate", shipped(), SUBSET, "--split", str(split), "--by-molecule", "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["overall"]["count"] == len(test)
    assert "| molecule | structures |" in capsys.readouterr().out
    for row, group in zip(result["by_molecule"], sorted(chosen, key=lambda g: group_key(g[0])), strict=True):
        assert row["molecule"] == group_key(group[0]) and row["count"] == len(group)
        forces = [f for s in group for f in openmm_forces([s])]
        mae = float(
            np.concatenate([np.abs(f - s.forces).ravel() for f, s in zip(forces, group, strict=True)]).mean()
        )
        assert row["force_mae"] == pytest.approx(mae, abs=TOLERANCE)
    split.write_text(json.dumps({"train": [], "val": [], "test": ["no-such-id"]}))
    assert main(args) == 2


def test_load_network_gives_the_shipped_or_the_named_weights(tmp_path):
    """``potential.load_network`` (used by the stability scripts): without a path, the shipped file
    as a float32 network in eval mode; with one, that file (a float64 copy comes back float32)."""
    import torch

    from openmmml_e2former.checkpoints import save_checkpoint
    from openmmml_e2former.potential import load_network

    model, path = load_network()
    assert path == find_shipped_potential("e2former-lsr")
    assert not model.training and next(model.parameters()).dtype == torch.float32
    copy = str(tmp_path / "copy.pt")
    save_checkpoint(load_checkpoint(path)[0].double(), copy)
    other, other_path = load_network(copy)
    assert other_path == copy and next(other.parameters()).dtype == torch.float32
