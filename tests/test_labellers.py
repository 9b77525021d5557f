"""Reference labellers against independent values, and the resumable labelling run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from openmmml_e2former.data.extxyz import read_structures, write_structures
from openmmml_e2former.data.labellers import (
    OpenMMLabeller,
    PySCFLabeller,
    XTBLabeller,
    make_labeller,
)
from openmmml_e2former.data.labelling import done_ids, label_dataset
from openmmml_e2former.data.structure import Structure

HERE = os.path.dirname(__file__)


def water(shift: float = 0.0, charge: int = 0, multiplicity: int = 1, name: str = "w") -> Structure:
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.757, 0.587], [0.0, -0.757, 0.587]]) + shift
    positions[1, 2] += 0.05 * shift  # a distorted geometry, so forces are not zero
    return Structure(name, "water", [8, 1, 1], positions, [0, 0, 0], charge, multiplicity)


def methanol_dimer(seed: int = 0) -> Structure:
    from openmmml_e2former.data.generators import random_cluster

    numbers, coords, frags, charge = random_cluster(["methanol", "methanol"], np.random.default_rng(seed))
    return Structure(f"md/{seed}", "methanol-dimer", numbers, coords, frags, charge)


def test_xtb_matches_tblite_ase_calculator():
    from ase import Atoms
    from tblite.ase import TBLite

    structure = methanol_dimer()
    label = XTBLabeller().label(structure)
    atoms = Atoms(numbers=structure.numbers, positions=structure.positions)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    # ASE converts with CODATA 2014 constants, we with CODATA 2018: they differ by ~1e-8 relative
    assert label.energy == pytest.approx(atoms.get_potential_energy(), rel=5e-8)
    np.testing.assert_allclose(label.forces, atoms.get_forces(), rtol=5e-8, atol=1e-6)
    assert label.metadata["method"] == "GFN2-xTB" and label.metadata["program"] == "tblite"
    assert label.metadata["program_version"] and label.metadata["charge"] == 0


def test_xtb_charged_and_open_shell():
    from ase import Atoms
    from tblite.ase import TBLite

    cation = water(charge=1, multiplicity=2)
    label = XTBLabeller().label(cation)
    atoms = Atoms(numbers=cation.numbers, positions=cation.positions)
    atoms.calc = TBLite(method="GFN2-xTB", charge=1, multiplicity=2, verbosity=0)
    assert label.energy == pytest.approx(atoms.get_potential_energy(), rel=5e-8)
    assert label.metadata["multiplicity"] == 2
    with pytest.raises(ValueError, match="multiplicity 1 is impossible"):
        XTBLabeller().label(water(charge=1))


def _ion_pair(gap: float) -> Structure:
    """Methylguanidinium + acetate at a closest-atom gap (Å); the 3.0 Å one (seed 0) is a
    gas-phase ion pair whose SCF does not converge with tblite's default mixer."""
    from openmmml_e2former.data.generators import random_cluster

    rng = np.random.default_rng(0)
    pair = ["methylguanidinium", "acetate"]
    numbers, coords, frags, charge = random_cluster(pair, rng, min_gap=gap, max_gap=gap + 0.01)
    return Structure(f"pair/{gap}", "guanidinium-acetate", numbers, coords, frags, charge)


def test_xtb_retries_an_unconverged_scf_with_a_slower_mixer_and_the_same_result():
    stubborn = _ion_pair(3.0)
    with pytest.raises(ValueError, match="SCF not converged"):
        XTBLabeller(fallback_damping=None).label(stubborn)
    label = XTBLabeller().label(stubborn)
    assert label.metadata["scf_damping"] == 0.1 and np.isfinite(label.forces).all()
    # where the default mixer converges, the slow one reaches the same solution
    easy = _ion_pair(4.5)
    default = XTBLabeller().label(easy)
    assert default.metadata["scf_damping"] == 0.4
    slow = XTBLabeller()
    slow_result = slow._singlepoint(easy, 0.1, 900)
    assert float(slow_result.get("energy")) * 27.211386245988 == pytest.approx(default.energy, abs=1e-5)
    # forces agree to the SCF tolerance at accuracy 1 (seen: 1.7e-3 eV/Å; model errors are ~0.06)
    np.testing.assert_allclose(
        -slow_result.get("gradient") * 27.211386245988 / 0.529177210903, default.forces, atol=5e-3
    )


def test_separated_pairs_sit_at_their_stated_gaps_with_neutral_total_charge():
    import re

    from openmmml_e2former.data.generators import CHARGED_PAIRS, separated_pairs

    pairs = separated_pairs(per_pair=2, seed=3)
    assert len(pairs) == 2 * len(CHARGED_PAIRS)
    for s in pairs:
        a, b = s.positions[s.fragment_ids == 0], s.positions[s.fragment_ids == 1]
        gap = np.linalg.norm(a[:, None] - b[None], axis=-1).min()
        stated = float(re.search(r"gap ([\d.]+) Å", s.source).group(1))
        assert 3.5 <= stated <= 10.1 and gap == pytest.approx(stated, abs=0.006)
        assert s.charge == 0 and s.molecule.endswith(":separated")


def test_pyscf_forces_match_finite_differences_of_its_energies():
    labeller = PySCFLabeller(xc=None, basis="sto-3g")
    structure = water()
    label = labeller.label(structure)
    h = 1e-3  # Å
    for atom, axis in ((0, 2), (1, 1), (2, 2)):
        energies = []
        for sign in (1, -1):
            moved = water()
            moved.positions[atom, axis] += sign * h
            energies.append(labeller.label(moved).energy)
        fd_force = -(energies[0] - energies[1]) / (2 * h)
        assert label.forces[atom, axis] == pytest.approx(fd_force, abs=2e-4)
    assert abs(label.forces).max() > 0.1
    assert label.metadata["method"] == "HF/sto-3g" and label.metadata["basis"] == "sto-3g"


def test_pyscf_dft_forces_match_finite_differences_and_labels_survive_a_file(tmp_path):
    """Kohn-Sham forces include the grid response, so they are derivatives of the energy on the
    integration grid, which moves with the atoms."""
    labeller = PySCFLabeller(xc="pbe", basis="sto-3g", gpu=False)
    label = labeller.label(water())
    h = 1e-3  # Å
    for atom, axis in ((0, 2), (1, 1)):
        energies = []
        for sign in (1, -1):
            moved = water()
            moved.positions[atom, axis] += sign * h
            energies.append(labeller.label(moved).energy)
        # without the grid response, O z is off by 5.5e-4 eV/Å here; with it, by < 3e-5
        assert label.forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=1e-4)
    write_structures(str(tmp_path / "w.extxyz"), [labeller.apply(water())])
    (back,) = read_structures(str(tmp_path / "w.extxyz"))
    assert back.labels["method"] == "pbe/sto-3g" and back.labels["gpu4pyscf"] is False


def test_pyscf_hf_energy_matches_a_direct_pyscf_run():
    from pyscf import gto, scf

    label = PySCFLabeller(xc=None, basis="sto-3g").label(water())
    mol = gto.M(atom=[(8, (0, 0, 0)), (1, (0, 0.757, 0.587)), (1, (0, -0.757, 0.587))], basis="sto-3g")
    mol.verbose = 0
    assert label.energy == pytest.approx(scf.RHF(mol).kernel() * 27.211386245988, abs=1e-6)


def test_pyscf_gpu_setting_follows_the_machine(monkeypatch):
    """``gpu='auto'`` uses GPU4PySCF exactly when it is usable; ``True`` without it is a clear error;
    the labels record which ran."""
    from openmmml_e2former.data import labellers
    from openmmml_e2former.data.labellers import gpu4pyscf_available, resolve_gpu

    usable = gpu4pyscf_available()
    assert PySCFLabeller(gpu="auto").gpu is usable
    assert PySCFLabeller(gpu=False).gpu is False
    if usable:
        assert resolve_gpu(True) is True
    else:
        with pytest.raises(ValueError, match="gpu4pyscf"):
            PySCFLabeller(gpu=True)
    with pytest.raises(ValueError, match="auto, true or false"):
        resolve_gpu("sometimes")
    monkeypatch.setattr(labellers, "gpu4pyscf_available", lambda: True)  # as on a GPU machine
    assert PySCFLabeller(gpu="auto").gpu is True
    label = PySCFLabeller(xc=None, basis="sto-3g", gpu=False).label(water())
    assert label.metadata["gpu4pyscf"] is False


def test_openmm_oracle_matches_openmm_directly():
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(os.path.join(HERE, "data", "ace_ala_nme.pdb"))
    positions = np.array(pdb.positions.value_in_unit(unit.angstrom))
    numbers = [a.element.atomic_number for a in pdb.topology.atoms()]
    structure = Structure("p", "p", numbers, positions, np.zeros(len(numbers)))
    label = OpenMMLabeller(pdb.topology).label(structure)

    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    context = openmm.Context(system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(pdb.positions)
    state = context.getState(getEnergy=True, getForces=True)
    ev_per_kj_mol = 0.0103642688  # 1 kJ/mol in eV (NIST: 1 eV = 96.4853 kJ/mol)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * ev_per_kj_mol
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom)
    assert label.energy == pytest.approx(energy, rel=1e-6, abs=1e-4)
    np.testing.assert_allclose(label.forces, np.asarray(forces) * ev_per_kj_mol, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="does not match"):
        OpenMMLabeller(pdb.topology).label(water())


def test_unknown_labeller_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown labeller 'mp2'"):
        make_labeller("mp2")


def test_extxyz_round_trip_with_gzip(tmp_path):
    s = XTBLabeller().apply(methanol_dimer())
    for name in ("a.extxyz", "a.extxyz.gz"):
        write_structures(str(tmp_path / name), [s])
        (back,) = read_structures(str(tmp_path / name))
        assert back.id == s.id and back.molecule == s.molecule and back.charge == s.charge
        np.testing.assert_array_equal(back.fragment_ids, s.fragment_ids)
        np.testing.assert_allclose(back.forces, s.forces, rtol=0, atol=1e-7)  # 8 decimals in the file
        assert back.energy == pytest.approx(s.energy, rel=1e-12)
        assert back.labels["method"] == "GFN2-xTB"


def test_labelling_resumes_and_parallel_equals_serial(tmp_path):
    structures = [methanol_dimer(seed) for seed in range(6)]
    out = str(tmp_path / "labels")
    first = label_dataset(structures[:4], out, chunk_size=3, progress=False)
    assert first["labelled"] == 4
    # a crash mid-write leaves only a temporary file, which readers ignore
    (tmp_path / "labels" / "chunk-00001.extxyz.gz.tmp-99").write_text("garbage")
    assert sorted(os.listdir(out)) == [
        "chunk-00000.extxyz.gz",
        "chunk-00001.extxyz.gz",
        "chunk-00001.extxyz.gz.tmp-99",
    ]
    # chunks written before 2026-12-05 are plain text: a folder may hold both, and resumes over both
    plain = read_structures(os.path.join(out, "chunk-00001.extxyz.gz"))
    os.remove(os.path.join(out, "chunk-00001.extxyz.gz"))
    write_structures(os.path.join(out, "chunk-00001.extxyz"), plain)
    second = label_dataset(structures, out, chunk_size=3, progress=False)
    assert second["already_done"] == 4 and second["labelled"] == 2
    assert os.path.exists(os.path.join(out, "chunk-00002.extxyz.gz"))
    labelled = read_structures(out)
    assert sorted(s.id for s in labelled) == sorted(s.id for s in structures)
    assert done_ids(out) == {s.id for s in structures}

    parallel = label_dataset(structures, str(tmp_path / "par"), workers=2, progress=False)
    assert parallel["labelled"] == 6
    by_id = {s.id: s for s in read_structures(str(tmp_path / "par"))}
    for s in labelled:
        assert by_id[s.id].energy == pytest.approx(s.energy, abs=1e-8)


def test_failed_structures_are_recorded_skipped_and_retried_on_request(tmp_path):
    out = tmp_path / "labels"
    good, bad = water(name="good"), water(charge=1, name="bad")  # H2O+ as a singlet is impossible
    first = label_dataset([good, bad], str(out), progress=False)
    assert first["labelled"] == 1 and first["failed"] == 1
    (record,) = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]
    assert record["id"] == bad.id and "multiplicity 1 is impossible" in record["error"]
    assert label_dataset([good, bad], str(out), progress=False)["already_done"] == 2
    with open(out / "failed.jsonl", "a") as handle:  # as a run killed mid-line leaves it
        handle.write('{"id": "w/tru')
    with pytest.warns(UserWarning, match="line 2 is unreadable"):
        assert done_ids(str(out)) == {good.id, bad.id}
    retry = label_dataset([good, bad], str(out), progress=False, retry_failed=True)
    assert retry["already_done"] == 1 and retry["failed"] == 1
    assert [s.id for s in read_structures(str(out))] == [good.id]


def test_a_labeller_that_cannot_be_created_fails_before_any_output(tmp_path, monkeypatch):
    """--gpu true without GPU4PySCF (or any bad option) is one clear error from the parent process;
    before, the Pool kept restarting workers whose initializer raised, and the command hung."""
    import signal

    from openmmml_e2former.data import labellers

    monkeypatch.setattr(labellers, "gpu4pyscf_available", lambda: False)  # as on a CPU-only machine
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("label_dataset hung"))
    signal.alarm(120)
    try:
        with pytest.raises(ValueError, match="gpu4pyscf"):
            label_dataset([water()], str(tmp_path / "out"), "pyscf", {"gpu": True}, workers=2, progress=False)
    finally:
        signal.alarm(0)
    assert not (tmp_path / "out").exists()


def test_a_killed_dask_labelling_keeps_what_was_written_and_a_rerun_completes_it(tmp_path):
    """The labelling job is killed (SIGKILL) while 2 Dask workers label: every chunk on disk is
    readable, what it holds is kept, and the same command completes the set without duplicates
    and with the labels of labelling in one process."""
    import signal
    import subprocess
    import sys
    import time

    from openmmml_e2former.data.extxyz import write_structures

    structures = [methanol_dimer(seed) for seed in range(24)]
    source = str(tmp_path / "in.extxyz")
    write_structures(source, structures)
    out = tmp_path / "labels"
    command = [sys.executable, "-m", "openmmml_e2former.cli", "label", "run", source, "-o", str(out)]
    command += ["--workers", "2", "--chunk-size", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (out.exists() and len(done_ids(str(out))) >= 3):
        if process.poll() is not None or time.time() > deadline:
            pytest.fail(f"labelling ended before it could be killed:\n{process.stdout.read()}")
        time.sleep(0.05)
    import psutil

    workers = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGKILL)  # the whole job, as a batch system kills it
    for child in workers:
        child.kill()
    process.wait()
    kept = {s.id: s.energy for s in read_structures(str(out))}
    assert 3 <= len(kept) < len(structures), "nothing was in flight: nothing to test"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    labelled = read_structures(str(out))
    assert sorted(s.id for s in labelled) == sorted(s.id for s in structures)  # none twice, none missing
    reference = label_dataset(structures[:4], str(tmp_path / "serial"), progress=False)
    assert reference["labelled"] == 4
    by_id = {s.id: s.energy for s in labelled}
    for s in read_structures(str(tmp_path / "serial")):  # other thread counts: SCF-converged alike
        assert by_id[s.id] == pytest.approx(s.energy, abs=1e-6)
    assert all(by_id[k] == v for k, v in kept.items())  # what was written before the kill is kept
