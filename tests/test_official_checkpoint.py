"""The authors' E2Former-LSR checkpoints: convert, evaluate, run in OpenMM, find in the cache.

Reference numbers come from the authors' fixture (tests/fixtures/PROVENANCE.md): energies in
kcal/mol (the released recipe's ``loss_unit``), forces in kcal/mol/Angstrom with fragment
centres held fixed. Unit constants are typed here independently of the package.
"""

import json
import os
import urllib.request

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

from openmmml_e2former.checkpoints import CheckpointError, load_checkpoint
from openmmml_e2former.cli import main

HERE = os.path.dirname(__file__)
FIXTURE = os.path.join(HERE, "fixtures", "ubio-e2former-lsr")
STATE_DICT = os.path.join(FIXTURE, "state_dict.pt")
KJ_PER_KCAL = 4.184  # thermochemical calorie
KJ_PER_EV = 96.48533212331  # CODATA 2018: e * N_A / 1000
HEAD = "deshaw_di_mol"


def reference(name="mol1.npz"):
    return np.load(os.path.join(FIXTURE, name))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "model.pt"
    assert main(["convert", STATE_DICT, "-o", str(out)]) == 0
    return str(out)


def run_eval(model, data, tmp_path, *options):
    out = tmp_path / "result.json"
    assert main(["eval", model, data, "--json", "-o", str(out), *options]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", ["mol1.npz", "mol1_rot_trans.npz"])
def test_convert_then_eval_reproduces_the_reference(converted, tmp_path, name):
    result = run_eval(converted, os.path.join(FIXTURE, name), tmp_path, "--fixed-centers")
    ref = reference(name)
    assert result["energy_unit"] == "kcal/mol" and result["fixed_centers"] is True
    (structure,) = result["structures"]
    energy, forces = structure["energy"], np.array(structure["forces"])
    assert abs(energy - float(ref["energy"][0])) <= 1e-5 * abs(float(ref["energy"][0]))
    assert np.abs(forces - ref["forces"]).max() <= 1e-4 * np.abs(ref["forces"]).max()


def test_eval_units_text_and_moving_centres(converted, tmp_path, capsys):
    ref = reference()
    result = run_eval(converted, os.path.join(FIXTURE, "mol1.npz"), tmp_path, "--units", "kJ/mol")
    energy = result["structures"][0]["energy"]
    assert energy == pytest.approx(float(ref["energy"][0]) * KJ_PER_KCAL, rel=1e-5)
    forces = np.array(result["structures"][0]["forces"])
    assert np.abs(forces.sum(axis=0)).max() < 1e-6 * np.abs(forces).max()  # moving centres: no net force
    assert main(["eval", converted, os.path.join(FIXTURE, "mol1.npz"), "--units", "eV"]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("structure 0"))
    expected_ev = float(ref["energy"][0]) * KJ_PER_KCAL / KJ_PER_EV
    assert float(line.split("energy")[1]) == pytest.approx(expected_ev, rel=1e-5)
    assert len(text.splitlines()) == 2 + 51  # header, energy line, one line per atom


def test_eval_extxyz_with_brics_fragments(converted, tmp_path):
    """An XYZ file without fragment ids gets BRICS fragments from its coordinates; for mol1
    these are the fixture's fragments, so the fixed-centre energy is the reference energy."""
    import ase

    ref = reference()
    path = tmp_path / "mol1.extxyz"
    atoms = ase.Atoms(numbers=ref["atomic_numbers"], positions=ref["positions"].astype(np.float64))
    atoms.info["charge"] = 0
    atoms.write(str(path), format="extxyz")
    (structure,) = run_eval(converted, str(path), tmp_path, "--fixed-centers")["structures"]
    assert structure["energy"] == pytest.approx(float(ref["energy"][0]), rel=1e-5)


def test_converted_checkpoint_states_units_and_reference(converted, capsys):
    model, metadata = load_checkpoint(converted)
    assert model.config.energy_unit == "kcal/mol"
    assert metadata["energy_unit"] == "kcal/mol" and metadata["force_unit"] == "kcal/mol/Angstrom"
    assert metadata["energy_reference"] == "relative" and metadata["head"] == HEAD
    assert len(metadata["source_sha256"]) == 64
    assert main(["info", converted]) == 0
    text = capsys.readouterr().out
    assert "energy kcal/mol" in text and "relative" in text and HEAD in text


def mol1_topology(ref):
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for k, z in enumerate(ref["atomic_numbers"]):
        topology.addAtom(f"A{k}", app.Element.getByAtomicNumber(int(z)), residue)
    return topology


def test_openmm_energy_in_kj_per_mol(converted, tmp_path, monkeypatch):
    """createSystem on the CPU platform, model found in the weights cache by name."""
    from openmmml import MLPotential

    cache = tmp_path / "cache"
    cache.mkdir()
    os.symlink(converted, cache / "ubio-e2former-lsr.pt")
    monkeypatch.setenv("OPENMMML_E2FORMER_CACHE", str(cache))
    ref = reference()
    topology = mol1_topology(ref)
    potential = MLPotential("e2former-lsr", modelPath="ubio-e2former-lsr")
    system = potential.createSystem(
        topology, fragmentIds=ref["cluster_ids"].tolist(), charge=0, precision="double"
    )
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(ref["positions"].astype(np.float64) / 10.0)  # Angstrom -> nm
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert energy == pytest.approx(float(ref["energy"][0]) * KJ_PER_KCAL, rel=1e-5)


def test_authors_weights_default_to_brics_fragments(converted, tmp_path):
    """Without fragmentIds, the authors' weights get BRICS fragments (their data's rule), which
    for mol1 are the fixture's own cluster ids: same energy as the reference, in kJ/mol; the
    potential states the unit it loaded."""
    from openmmml import MLPotential
    from test_molecule_fragments import topology_from_smiles

    ref = reference()
    topology, _ = topology_from_smiles("CC(C)Cc1ccc(cc1)C(C)C(=O)NCCc1ccc(O)cc1")
    potential = MLPotential("e2former-lsr", modelPath=str(converted))
    system = potential.createSystem(topology, charge=0, precision="double")
    assert potential._impl.metadata["energy_unit"] == "kcal/mol"
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(ref["positions"].astype(np.float64) / 10.0)  # Angstrom -> nm
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert energy == pytest.approx(float(ref["energy"][0]) * KJ_PER_KCAL, rel=1e-5)


def training_checkpoint(path, prefix=""):
    """An authors'-style training checkpoint: two heads, optimizer state, bookkeeping.

    The second head ("shifted") is the first with 1.0 added to its output bias, so its
    energy is the reference energy + 1.0 per atom.
    """
    state = torch.load(STATE_DICT)
    two_heads = dict(state)
    for key, value in state.items():
        if f"energy_heads.{HEAD}." in key:
            new = key.replace(HEAD, "shifted")
            two_heads[new] = value + 1.0 if key.endswith(".2.bias") else value.clone()
    params = [torch.nn.Parameter(torch.ones(3))]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    params[0].sum().backward()
    optimizer.step()
    torch.save(
        {
            "model": {prefix + k: v for k, v in two_heads.items()},
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": {"last_epoch": 10},
            "epoch": 7,
            "global_step": 12345,
        },
        path,
    )


def fixed_centre_energy(model, name="mol1.npz"):
    ref = reference(name)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        return float(
            model(
                torch.tensor(ref["positions"], dtype=dtype),
                torch.tensor(ref["atomic_numbers"]),
                torch.tensor(ref["cluster_ids"]),
                torch.tensor(0.0, dtype=dtype),
                None,
                torch.tensor(ref["cluster_centers"], dtype=dtype),
            )
        )


@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "ddp-prefix"])
def test_training_checkpoint_with_two_heads_loads_the_chosen_head(tmp_path, prefix):
    path = tmp_path / "checkpoint_best.pt"
    training_checkpoint(path, prefix)
    ref = float(reference()["energy"][0])
    n_atoms = len(reference()["atomic_numbers"])
    model, metadata = load_checkpoint(str(path), head="shifted")
    assert fixed_centre_energy(model) == pytest.approx(ref + n_atoms * 1.0, rel=1e-5)
    assert metadata["available_heads"] == [HEAD, "shifted"]
    assert metadata["training_state"] == {"epoch": 7, "global_step": 12345}
    model, _ = load_checkpoint(str(path), head=HEAD)
    assert fixed_centre_energy(model) == pytest.approx(ref, rel=1e-5)


def test_head_errors_list_the_available_heads(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    training_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"several energy heads \['deshaw_di_mol', 'shifted'\]"):
        load_checkpoint(str(path))
    with pytest.raises(
        CheckpointError, match=r"unknown energy head 'nope'; available: \['deshaw_di_mol', 'shifted'\]"
    ):
        load_checkpoint(str(path), head="nope")
    assert main(["convert", str(path), "-o", str(tmp_path / "out.pt"), "--head", "nope"]) == 2
    assert "unknown energy head 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()


def test_truncated_file_is_reported_and_nothing_is_written(tmp_path, capsys):
    data = open(STATE_DICT, "rb").read()
    path = tmp_path / "partial.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(str(path))
    out = tmp_path / "model.pt"
    out.write_bytes(b"previous good file")
    assert main(["convert", str(path), "-o", str(out)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert out.read_bytes() == b"previous good file"


def test_missing_key_is_named_in_the_authors_terms(tmp_path):
    state = torch.load(STATE_DICT)
    missing = "decoder.decoder.blocks.1.ffn_s3.slinear_2.weight"
    del state[missing]
    path = tmp_path / "incomplete.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"missing keys.*{missing.replace('.', '[.]')}"):
        load_checkpoint(str(path))


class TrainingArgs:
    """Stands for the authors' config object pickled into a training checkpoint."""

    def __init__(self, loss_unit):
        self.loss_unit = loss_unit
        self.lr = 1e-4


def save_with_foreign_args(path, loss_unit, monkeypatch):
    """Save a checkpoint whose ``args`` is an instance of a class from a module that does
    not exist when the file is read (as the authors' molfm config classes here)."""
    import sys
    import types

    module = types.ModuleType("molfm_stand_in")
    TrainingArgs.__module__ = "molfm_stand_in"
    module.TrainingArgs = TrainingArgs
    monkeypatch.setitem(sys.modules, "molfm_stand_in", module)
    torch.save({"model": torch.load(STATE_DICT), "args": TrainingArgs(loss_unit)}, path)
    monkeypatch.delitem(sys.modules, "molfm_stand_in")


def test_pickled_training_config_is_read_for_the_energy_unit(tmp_path, monkeypatch):
    path = tmp_path / "ev.pt"
    save_with_foreign_args(path, "ev", monkeypatch)
    model, metadata = load_checkpoint(str(path))
    assert model.config.energy_unit == "eV" and "loss_unit=ev" in metadata["energy_unit_origin"]
    save_with_foreign_args(path, "normev", monkeypatch)
    with pytest.raises(CheckpointError, match="loss_unit='normev'"):
        load_checkpoint(str(path))
    model, metadata = load_checkpoint(str(path), energy_unit="kcal/mol")  # explicit override
    assert metadata["energy_unit"] == "kcal/mol"


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="neither an openmmml-e2former"):
        load_checkpoint(str(path))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(str(tmp_path / "absent.pt"))


def test_reference_energies_make_energies_absolute(converted):
    """The per-element references of the deshaw_di_mol profile (src/molfm/data/utils.py of
    IQuestLab/UBio-MolFM at tag E2Former-LSR), typed here: H, C, N, O in kcal/mol."""
    counts = np.bincount(reference()["atomic_numbers"], minlength=9)
    shift = (
        counts[1] * -376.562592 + counts[6] * -23895.0918 + counts[7] * -34311.7773 + counts[8] * -47134.4609
    )
    relative, _ = load_checkpoint(converted)
    absolute, metadata = load_checkpoint(converted, reference_energies=True)
    assert metadata["energy_reference"] == "absolute"
    difference = fixed_centre_energy(absolute.double()) - fixed_centre_energy(relative.double())
    assert difference == pytest.approx(shift, rel=1e-9)


def test_cache_lookup_and_offline_message(tmp_path, monkeypatch):
    from openmmml_e2former.weights import cache_dir, resolve_weights

    cache = tmp_path / "cache"
    monkeypatch.setenv("OPENMMML_E2FORMER_CACHE", str(cache))
    monkeypatch.delenv("OPENMMML_E2FORMER_URL", raising=False)
    assert cache_dir() == str(cache)
    with pytest.raises(FileNotFoundError) as error:
        resolve_weights("ubio-e2former-lsr")
    message = str(error.value)
    assert "'ubio-e2former-lsr.pt'" in message
    assert f"Put the file at {cache / 'ubio-e2former-lsr.pt'}" in message
    assert "OPENMMML_E2FORMER_CACHE" in message
    cache.mkdir()
    (cache / "ubio-e2former-lsr.pt").write_bytes(b"x")
    (cache / "mine.pt").write_bytes(b"y")
    assert resolve_weights("ubio-e2former-lsr") == str(cache / "ubio-e2former-lsr.pt")
    assert resolve_weights("mine.pt") == str(cache / "mine.pt")
    local = tmp_path / "local.pt"
    local.write_bytes(b"z")
    assert resolve_weights(str(local)) == str(local)
    with pytest.raises(FileNotFoundError, match="weight file not found: /nowhere/model.pt"):
        resolve_weights("/nowhere/model.pt")


def test_configured_download_checks_the_checksum(tmp_path, monkeypatch):
    """Download mechanics with a file:// URL (no network here): progress, checksum, atomic move."""
    import hashlib

    from openmmml_e2former.weights import resolve_weights

    server = tmp_path / "server"
    server.mkdir()
    payload = os.urandom(3000)
    (server / "remote.pt").write_bytes(payload)
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPENMMML_E2FORMER_CACHE", str(cache))
    monkeypatch.setenv("OPENMMML_E2FORMER_URL", "file://" + urllib.request.pathname2url(str(server)))
    monkeypatch.setenv("OPENMMML_E2FORMER_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="checksum mismatch"):
        resolve_weights("remote.pt", progress=False)
    assert not cache.exists() or os.listdir(cache) == []
    monkeypatch.setenv("OPENMMML_E2FORMER_SHA256", hashlib.sha256(payload).hexdigest())
    monkeypatch.setenv("OPENMMML_E2FORMER_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="Put the file at"):
        resolve_weights("remote.pt", progress=False)
    monkeypatch.delenv("OPENMMML_E2FORMER_OFFLINE")
    path = resolve_weights("remote.pt", progress=False)
    assert path == str(cache / "remote.pt") and open(path, "rb").read() == payload
    with pytest.raises(FileNotFoundError, match="Downloading .*absent.pt failed"):
        resolve_weights("absent.pt", progress=False)


def test_unverified_download_warns_with_its_digest(tmp_path, monkeypatch, capsys):
    import hashlib

    from openmmml_e2former.weights import resolve_weights

    server = tmp_path / "server"
    server.mkdir()
    payload = os.urandom(1000)
    (server / "remote.pt").write_bytes(payload)
    monkeypatch.setenv("OPENMMML_E2FORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENMMML_E2FORMER_URL", "file://" + urllib.request.pathname2url(str(server)))
    monkeypatch.delenv("OPENMMML_E2FORMER_SHA256", raising=False)
    resolve_weights("remote.pt", progress=False)
    err = capsys.readouterr().err
    assert "not verified" in err and hashlib.sha256(payload).hexdigest() in err
