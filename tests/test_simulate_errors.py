"""Guard rails: each bad input fails with its own message before any stage runs, and an
exploding system stops naming its stage and step with a loadable checkpoint."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from simulate_helpers import md_stage, small_protocol

from openmmml_e2former.simulate import protocol_from_dict, run_protocol

MINIMIZE = {"name": "min", "type": "minimize", "forces": "mm", "max_iterations": 50}


@pytest.fixture(scope="module")
def peptide(tmp_path_factory, villin_piece):
    """Villin residues 0-2 without solvent (its C-terminus lacks OXT: preparation adds it)."""
    return villin_piece(str(tmp_path_factory.mktemp("pep") / "peptide.pdb"), "resid 0 to 2")


def _run(tmp_path, pdb, ml, protocol=None, **kw):
    data = protocol or small_protocol([MINIMIZE, md_stage("md", 10)], padding_nm=1.6)
    return run_protocol(
        protocol_from_dict(data), pdb, str(tmp_path / "run"), ml_selection=ml, progress=False, **kw
    )


def _nothing_ran(tmp_path):
    return not os.path.exists(tmp_path / "run" / "stages")


def test_missing_and_unreadable_structures(tmp_path):
    with pytest.raises(FileNotFoundError, match="structure file not found"):
        _run(tmp_path, str(tmp_path / "nope.pdb"), "protein")
    garbage = tmp_path / "garbage.pdb"
    garbage.write_text("this is not a PDB file\x00\x01\n")
    with pytest.raises(ValueError, match="cannot read structure"):
        _run(tmp_path, str(garbage), "protein")
    assert _nothing_ran(tmp_path)


def test_residue_without_template(tmp_path, peptide):
    lines = [line for line in open(peptide) if line.startswith("ATOM")]
    ligand = "HETATM 9999  C1  LIG X 900      30.000  30.000  30.000  1.00  0.00           C\n"
    path = tmp_path / "with_ligand.pdb"
    path.write_text("".join(lines) + ligand + "END\n")
    data = small_protocol([MINIMIZE], padding_nm=1.6, keep_heterogens=["LIG"])
    with pytest.raises(ValueError, match="no template for a residue.*LIG"):
        _run(tmp_path, str(path), "protein", protocol=data)
    assert _nothing_ran(tmp_path)


def test_ml_selection_matching_nothing(tmp_path, peptide):
    with pytest.raises(ValueError, match="ML selection 'resname LIG' matches no atoms"):
        _run(tmp_path, peptide, "resname LIG")
    assert _nothing_ran(tmp_path)


def test_element_the_potential_does_not_support(tmp_path, peptide):
    data = small_protocol([MINIMIZE], padding_nm=1.6, positive_ion="K+")
    with pytest.raises(ValueError, match=r"does not support the element.*\(K\)"):
        _run(tmp_path, peptide, "resid 0 or element K", protocol=data)
    assert _nothing_ran(tmp_path)


def test_box_too_small_for_the_model(tmp_path, peptide):
    """With the automatic minimum box switched off, a small padding is refused before any step."""
    data = small_protocol([MINIMIZE], padding_nm=0.6, min_box_nm=0)
    with pytest.raises(ValueError, match="periodic box too small"):
        _run(tmp_path, peptide, "resid 0 to 1", protocol=data)
    assert _nothing_ran(tmp_path)


def test_small_padding_is_raised_to_fit_the_model(tmp_path, peptide):
    """The same padding with the default ``min_box_nm: auto``: preparation widens the box to
    twice the LSR model's 18 Å cutoff (+5 %) and says so; the run goes on."""
    import json

    _run(tmp_path, peptide, "resid 0 to 1", protocol=small_protocol([MINIMIZE], padding_nm=0.6))
    report = json.load(open(tmp_path / "run" / "prepare.json"))
    assert report["padding_requested_nm"] == 0.6 and report["padding_nm"] > 0.6
    assert report["min_box_nm"] == pytest.approx(2 * 1.8 * 1.05)
    assert min(report["box_vectors_nm"][k][k] for k in range(3)) >= report["min_box_nm"]
    assert "padding raised from 0.6" in open(tmp_path / "run" / "prepare.txt").read()


def test_preparation_reports_what_it_changed(tmp_path, peptide):
    """Stopped by the empty ML selection, preparation has already written its report."""
    with pytest.raises(ValueError):
        _run(tmp_path, peptide, "resname LIG")
    import json

    report = json.load(open(tmp_path / "run" / "prepare.json"))
    assert report["missing_heavy_atoms_added"] == 1  # the C-terminal OXT
    # LEU-SER-ASP, charged termini: +1 (NH3+) - 1 (Asp side chain) - 1 (COO-)
    assert report["solute_net_charge"] == -1
    assert report["waters_added"] > 500
    assert report["ions_added"]["NA"] - report["ions_added"]["CL"] == 1  # neutralised


def test_exploding_system_names_stage_and_step_and_keeps_a_checkpoint(tmp_path, peptide, capsys):
    """Through the CLI: exit status 3 and one line naming the stage, the steps and the checkpoint."""
    import openmm
    import openmm.unit as unit
    import yaml

    from openmmml_e2former.cli import main

    data = small_protocol(
        [MINIMIZE, md_stage("boom", 200, timestep_fs=20.0, checkpoint_interval=20)], padding_nm=0.8
    )
    data["random_seed"] = 1234  # the same velocities and noise every time
    (tmp_path / "boom.yaml").write_text(yaml.safe_dump(data))
    argv = ["run", str(tmp_path / "boom.yaml"), "--pdb", peptide, "--ml", "none", "-o", str(tmp_path / "run")]
    assert main(argv + ["--no-progress", "--platform", "CPU"]) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # OpenMM's own exception ("between steps A and B") or the guard's NaN/temperature check ("at step N")
    stage_and_step = r"stage 'boom' blew up (between steps \d+ and \d+|at step \d+): "
    assert re.match(r"e2former run: stopped: " + stage_and_step, err), err
    assert "last good checkpoint" in err
    stage_dir = tmp_path / "run" / "stages" / "02-boom"
    assert not (stage_dir / "done.json").exists()
    with open(tmp_path / "run" / "system.xml") as handle:
        system = openmm.XmlSerializer.deserialize(handle.read())
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.loadCheckpoint((stage_dir / "checkpoint.chk").read_bytes())
    positions = context.getState(getPositions=True).getPositions(asNumpy=True)._value
    assert np.isfinite(positions).all()


def test_cli_prints_one_line_errors_and_lists_presets(tmp_path, capsys):
    from openmmml_e2former.cli import main

    assert (
        main(["run", "quick-check", "--pdb", str(tmp_path / "missing.pdb"), "-o", str(tmp_path / "r")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"e2former run: error: structure file not found: {tmp_path / 'missing.pdb'}"]
    assert not (tmp_path / "r").exists()
    assert main(["run", "no-such-preset", "--pdb", "x.pdb", "-o", str(tmp_path / "r")]) == 2
    assert "protocol 'no-such-preset' not found" in capsys.readouterr().err
    assert main(["protocols"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("quick-check", "protein-equilibration", "ligand-in-pocket"))


def test_cli_overwrite_of_the_current_directory_is_refused(tmp_path, monkeypatch, capsys):
    """`e2former run ... -o . --overwrite` inside a run folder: one-line error, nothing deleted."""
    from openmmml_e2former.cli import main

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    (folder / "structure.pdb").write_text("END\n")
    monkeypatch.chdir(folder)
    assert main(["run", "quick-check", "--pdb", "structure.pdb", "-o", ".", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite would delete" in err[0] and "current directory" in err[0]
    assert sorted(os.listdir(folder)) == ["run.json", "structure.pdb"]


def test_resuming_with_other_weights_is_refused(tmp_path, peptide, capsys):
    """The run manifest records the weights file's SHA-256: after the weights change (a new
    shipped potential, an edited modelPath file) the old run is not silently continued."""
    import torch

    from openmmml_e2former.checkpoints import save_checkpoint
    from openmmml_e2former.model import E2FormerLSR, small_config

    weights = tmp_path / "weights.pt"
    torch.manual_seed(0)
    save_checkpoint(E2FormerLSR(small_config()), str(weights))
    data = small_protocol([MINIMIZE], padding_nm=1.9)
    data["potential"] = {"name": "e2former-lsr", "modelPath": str(weights), "randomInit": False}
    _run(tmp_path, peptide, "resid 0", protocol=data)
    manifest = (tmp_path / "run" / "run.json").read_text()
    assert _run(tmp_path, peptide, "resid 0", protocol=data) is not None  # same weights: resumes

    torch.manual_seed(1)
    save_checkpoint(E2FormerLSR(small_config()), str(weights))
    with pytest.raises(ValueError, match="different weights file"):
        _run(tmp_path, peptide, "resid 0", protocol=data)
    assert (tmp_path / "run" / "run.json").read_text() == manifest

    legacy = json.loads(manifest)  # a folder written before the digest existed: resumed, with a warning
    del legacy["weights_sha256"]
    (tmp_path / "run" / "run.json").write_text(json.dumps(legacy))
    capsys.readouterr()
    _run(tmp_path, peptide, "resid 0", protocol=data)
    assert "predates weight checksums" in capsys.readouterr().out


def test_a_broken_ml_bond_stops_the_stage_or_is_reported_once(tmp_path, peptide, capsys):
    """guard.max_bond_change: a tiny limit that thermal motion exceeds within a few steps stands
    in for a broken bond. 'stop' ends the stage naming the bond and never checkpoints the bad
    state; the guard is not part of the run's identity, so 'warn' resumes it to the end and
    reports each bond once."""
    from openmmml_e2former.simulate.reporters import SimulationError

    data = small_protocol([MINIMIZE, md_stage("md", 20, checkpoint_interval=5)], padding_nm=1.9)
    data["potential"] = {"name": "e2former-lsr", "randomInit": False}
    data["guard"] = {"max_bond_change": 0.002, "on_bond_change": "stop"}
    message = r"ML-region bond\(s\) changed by more than 0\.2% of their prepared length: LEU1:"
    with pytest.raises(SimulationError, match=message):
        _run(tmp_path, peptide, "resid 0", protocol=data)
    stage_dir = tmp_path / "run" / "stages" / "02-md"
    assert not (stage_dir / "done.json").exists()
    assert _checkpoint_bonds_within(tmp_path / "run", stage_dir / "checkpoint.chk", 0.002)

    data["guard"]["on_bond_change"] = "warn"
    capsys.readouterr()
    _run(tmp_path, peptide, "resid 0", protocol=data)
    out = capsys.readouterr().out
    assert (stage_dir / "done.json").exists()
    assert (
        json.loads((tmp_path / "run" / "run.json").read_text())["protocol"]["guard"]["on_bond_change"]
        == "warn"
    )
    warnings = [line for line in out.splitlines() if "warning:" in line and "ML-region bond" in line]
    assert warnings
    named = [bond for line in warnings for bond in re.findall(r"(\w+:\w+-\w+:\w+) \d", line)]
    assert named and len(named) == len(set(named)), warnings  # each bond reported once


def _checkpoint_bonds_within(run, checkpoint, limit: float) -> bool:
    """No checkpoint, or one whose ML-region bonds are all within ``limit`` of prepared.pdb."""
    import openmm
    import openmm.app as app

    from openmmml_e2former.simulate.reporters import BondWatch

    if not checkpoint.exists():
        return True
    with open(run / "system.xml") as handle:
        system = openmm.XmlSerializer.deserialize(handle.read())
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.loadCheckpoint(checkpoint.read_bytes())
    pdb = app.PDBFile(str(run / "prepared.pdb"))
    atoms = json.loads((run / "ml_region.json").read_text())["atoms"]
    reference = pdb.getPositions(asNumpy=True)._value
    watch = BondWatch(pdb.topology, atoms, reference, limit, "stop")
    state = context.getState(getPositions=True)
    return watch.problem(state) is None


def test_bond_watch_uses_the_nearest_image_and_reports_each_bond_once():
    import openmm.app as app

    from openmmml_e2former.simulate.reporters import BondWatch

    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    a = topology.addAtom("C1", app.element.carbon, residue)
    b = topology.addAtom("H1", app.element.hydrogen, residue)
    c = topology.addAtom("H2", app.element.hydrogen, residue)
    topology.addBond(a, b)
    topology.addBond(a, c)
    reference = np.array([[0.5, 0.5, 0.5], [0.6, 0.5, 0.5], [0.5, 0.6, 0.5]])
    messages = []
    watch = BondWatch(topology, [0, 1, 2], reference, 0.3, "warn", messages.append)
    box = np.diag([2.0, 2.0, 2.0])
    wrapped = reference.copy()
    wrapped[1, 0] -= 2.0  # the same bond across the periodic boundary
    assert watch.broken(wrapped, box) == [] and watch.broken(wrapped) == [0]
    stretched = reference.copy()
    stretched[1, 0] = 0.64  # 0.14 nm: +40 %
    assert watch.broken(stretched, box) == [0]
    shrunk = reference.copy()
    shrunk[2, 1] = 0.56  # 0.06 nm: -40 %
    assert watch.broken(shrunk, box) == [1]

    class State:
        def __init__(self, positions):
            self.positions = positions

        def getPositions(self, asNumpy=True):
            return type("Q", (), {"_value": self.positions})()

        def getPeriodicBoxVectors(self):
            return type("Q", (), {"_value": box})()

    assert watch.problem(State(stretched)) is None and len(messages) == 1
    assert "MOL1:C1-MOL1:H1 1.40 Å (prepared 1.00 Å)" in messages[0]
    watch.problem(State(stretched))
    assert len(messages) == 1  # the same bond again: not repeated
    both = stretched.copy()
    both[2, 1] = 0.56
    watch.problem(State(both))
    assert len(messages) == 2 and "MOL1:C1-MOL1:H2" in messages[1] and "H1" not in messages[1]
    stop = BondWatch(topology, [0, 1, 2], reference, 0.3, "stop", messages.append)
    assert "MOL1:C1-MOL1:H1" in stop.problem(State(stretched)) and len(messages) == 2  # raised, not said
    assert BondWatch(topology, [0, 1], reference, 0.3, "stop").pairs.tolist() == [[0, 1]]
