"""Protocol files, selections and the restart helpers (fast; no MD)."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import yaml

from openmmml_e2former.simulate import list_presets, load_protocol, protocol_from_dict, restart
from openmmml_e2former.simulate.protocol import protocols_dir, with_ligand_words
from openmmml_e2former.simulate.selection import select_atoms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_presets_exist_load_and_have_a_comment_header():
    assert {"quick-check", "protein-equilibration", "ligand-in-pocket"} <= set(list_presets())
    for name in list_presets():
        path = os.path.join(protocols_dir(), f"{name}.yaml")
        with open(path) as handle:
            assert handle.readline().startswith(f"# {name}:"), f"{path} needs a comment header"
        protocol = load_protocol(name)
        assert protocol.stages and protocol.description


def test_protein_equilibration_is_the_standard_scheme():
    stages = load_protocol("protein-equilibration").stages
    kinds = [(s["type"], s.get("ensemble")) for s in stages]
    assert kinds[:2] == [("minimize", None), ("minimize", None)]
    assert kinds[2:] == [("md", "nvt"), ("md", "npt"), ("md", "npt")]
    heat, npt, production = stages[2:]
    assert [r["k_kj_mol_nm2"] for r in heat["restraints"]] == [400, 40]
    assert all(r["k_end_kj_mol_nm2"] == 0 for r in npt["restraints"])
    assert production["restraints"] == []
    assert all(s["timestep_fs"] == 1.0 for s in stages[2:])


def test_protocols_symlink_of_a_clone_points_at_the_package_presets():
    link = os.path.join(REPO, "protocols")
    assert os.path.islink(link)
    assert os.path.samefile(link, protocols_dir())
    assert load_protocol("protocols/quick-check.yaml").name == "quick-check"


def _quick_check_dict():
    with open(os.path.join(protocols_dir(), "quick-check.yaml")) as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["stages"][1].update(stepz=5), "unknown key"),
        (lambda d: d["stages"][1].update(steps=0), "steps must be a positive integer"),
        (lambda d: d["stages"][1].update(ensemble="npe"), "ensemble must be"),
        (lambda d: d["stages"][1].update(temperature_K=[300, -1]), "temperature_K"),
        (lambda d: d["stages"][1]["restraints"].append({"selection": "backbone"}), "k_kj_mol_nm2"),
        (lambda d: d["prepare"].update(box_shape="sphere"), "box_shape"),
        (lambda d: d["system"].update(constraints="some"), "constraints"),
        (lambda d: d.update(stages=[]), "non-empty"),
        (lambda d: d["stages"].append(copy.deepcopy(d["stages"][1])), "unique"),
        (lambda d: d["potential"].update(randomInit="maybe"), "randomInit"),
        (lambda d: d["stages"][1].update(schedule_interval=-5), "schedule_interval must be a positive"),
        (lambda d: d["stages"][1].update(schedule_interval=0), "schedule_interval must be a positive"),
        (lambda d: d["stages"][1].update(schedule_interval=2.5), "schedule_interval must be a positive"),
        (lambda d: d["stages"][1].update(friction_per_ps=-1.0), "friction_per_ps must be a number >= 0"),
        (lambda d: d["stages"][1].update(pressure_bar=0), "pressure_bar must be a number > 0"),
        (lambda d: d["stages"][1].update(pressure_bar="high"), "pressure_bar must be a number > 0"),
        (lambda d: d.update(random_seed=-3), "random_seed must be an integer"),
        (lambda d: d.update(random_seed="lucky"), "random_seed must be an integer"),
        (lambda d: d["guard"].update(max_bond_change=0), "max_bond_change must be a fraction > 0"),
        (lambda d: d["guard"].update(max_bond_change="30%"), "max_bond_change must be a fraction > 0"),
        (lambda d: d["guard"].update(on_bond_change="ignore"), "on_bond_change must be stop or warn"),
        (lambda d: d["guard"].update(bond_limit=0.3), "unknown key"),
    ],
)
def test_bad_protocols_name_the_problem(edit, message):
    data = _quick_check_dict()
    edit(data)
    with pytest.raises(ValueError, match=message):
        protocol_from_dict(data)


def test_valid_schedule_friction_pressure_and_seed_are_accepted():
    from openmmml_e2former.simulate.engine import stage_seed

    data = _quick_check_dict()
    data["stages"][1].update(schedule_interval=7, friction_per_ps=0, pressure_bar=2)
    data["random_seed"] = 11
    protocol = protocol_from_dict(data)
    assert protocol.stages[1]["schedule_interval"] == 7 and protocol.stages[1]["friction_per_ps"] == 0.0
    assert protocol.to_dict()["random_seed"] == 11
    assert [stage_seed(protocol, s) for s in protocol.stages] == list(range(11, 11 + len(protocol.stages)))
    assert stage_seed(protocol_from_dict(_quick_check_dict()), protocol.stages[1]) is None  # null: random


def test_missing_protocol_file_lists_the_presets():
    with pytest.raises(FileNotFoundError, match="quick-check"):
        load_protocol("no-such-protocol.yaml")


# villin_pdb: OpenMM's test.pdb, read once per session (conftest.py)


def test_selections_and_the_within_extension(villin_pdb):
    top = villin_pdb.topology
    xyz = np.array(villin_pdb.getPositions(asNumpy=True)._value)
    assert len(select_atoms(top, "resid 0 to 4")) == 71
    assert select_atoms(top, "none") == []
    with pytest.raises(ValueError, match="matches no atoms"):
        select_atoms(top, "resname LIG", what="ML selection")
    with pytest.raises(ValueError, match="cannot parse"):
        select_atoms(top, "protein and", what="ML selection")
    centre = select_atoms(top, "resid 10")
    near = select_atoms(top, "within 0.5 of resid 10", positions_nm=xyz)
    # independent check: brute-force distances
    distances = np.linalg.norm(xyz[:, None] - xyz[None, centre], axis=-1).min(axis=1)
    assert near == list(np.flatnonzero(distances <= 0.5))
    residues = select_atoms(top, "protein and residues within 0.5 of resid 10", positions_nm=xyz)
    atoms = list(top.atoms())
    touched = {atoms[i].residue.index for i in near}
    expected = [a.index for a in atoms if a.residue.index in touched and a.residue.name not in ("HOH", "Cl")]
    assert residues == expected and len(residues) > len(centre)


def test_within_sees_periodic_images(villin_pdb):
    """An atom at the edge of the box is near atoms at the opposite edge: checked against an explicit
    sum over the 27 neighbouring images (test.pdb's box is rectangular)."""
    import itertools

    import openmm.unit as unit

    top = villin_pdb.topology
    xyz = np.array(villin_pdb.getPositions(asNumpy=True)._value)
    box = np.array(top.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    edge = int(np.argmin(xyz[:, 0] - xyz[:, 0].min() + np.abs(xyz[:, 1] - xyz[:, 1].mean())))
    near = select_atoms(top, f"within 0.6 of (index {edge})", positions_nm=xyz)
    shifts = [np.array(s) @ box for s in itertools.product((-1, 0, 1), repeat=3)]
    distances = np.min([np.linalg.norm(xyz + shift - xyz[edge], axis=1) for shift in shifts], axis=0)
    assert near == list(np.flatnonzero(distances <= 0.6))
    direct = np.linalg.norm(xyz - xyz[edge], axis=1)
    assert (direct[near] > 0.6).any()  # some of them only through the periodic boundary


def test_within_refuses_an_ambiguous_operand_and_accepts_parentheses(villin_pdb):
    top = villin_pdb.topology
    xyz = np.array(villin_pdb.getPositions(asNumpy=True)._value)
    atoms = list(top.atoms())
    water = {i for i, a in enumerate(atoms) if a.residue.name == "HOH"}
    with pytest.raises(ValueError, match="ambiguous: put the selection after 'of' in parentheses"):
        select_atoms(top, "residues within 0.6 of resid 10 and not water", positions_nm=xyz)
    with pytest.raises(ValueError, match="ambiguous"):
        select_atoms(top, "within 0.6 of resid 10 or resid 12", positions_nm=xyz)
    # independent check: brute-force distances to residue 10
    centre = [i for i, a in enumerate(atoms) if a.residue.index == 10]
    gaps = np.linalg.norm(xyz[:, None] - xyz[None, centre], axis=-1).min(axis=1)
    near = {atoms[i].residue.index for i in np.flatnonzero(gaps <= 0.6)}
    whole = [a.index for a in atoms if a.residue.index in near]
    assert water & set(whole)  # waters are close: the unrestricted clause picks them up
    dry = select_atoms(top, "(residues within 0.6 of resid 10) and not water", positions_nm=xyz)
    assert dry == [i for i in whole if i not in water]
    nested = select_atoms(top, "resid 0 or (not water and residues within 0.6 of resid 10)", positions_nm=xyz)
    assert nested == sorted(set(dry) | {a.index for a in atoms if a.residue.index == 0})
    inner = select_atoms(top, "within 0.3 of (resid 10 and name CA)", positions_nm=xyz)
    ca = [i for i in centre if atoms[i].name == "CA"]
    assert inner == list(np.flatnonzero(np.linalg.norm(xyz - xyz[ca[0]], axis=1) <= 0.3))


def test_ligand_in_pocket_ml_selection_is_the_ligand_and_protein_residues_only():
    """Villin with residue 10 renamed LIG (so it counts as a non-protein ligand, surrounded by
    protein and water): the preset's ML region is LIG plus whole protein residues within 0.6 nm."""
    import openmm.app as app

    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))  # a copy to edit
    top = pdb.topology
    xyz = np.array(pdb.getPositions(asNumpy=True)._value)
    residues = list(top.residues())
    residues[10].name = "LIG"
    protocol = load_protocol("ligand-in-pocket")
    protocol.ligand["resname"] = "LIG"
    _, selection = with_ligand_words(protocol, protocol.ml["selection"])
    chosen = select_atoms(top, selection, what="ML selection", positions_nm=xyz)
    atoms = list(top.atoms())
    ligand = [a.index for a in atoms if a.residue.name == "LIG"]
    gaps = np.linalg.norm(xyz[:, None] - xyz[None, ligand], axis=-1).min(axis=1)
    touched = {atoms[i].residue.index for i in np.flatnonzero(gaps <= 0.6)}
    assert any(atoms[i].residue.name == "HOH" for i in np.flatnonzero(gaps <= 0.6))  # water is near
    solvent = ("HOH", "Cl", "CL", "NA", "Na")
    expected = [
        a.index
        for a in atoms
        if a.residue.name == "LIG" or (a.residue.index in touched and a.residue.name not in solvent)
    ]
    assert chosen == expected
    assert {atoms[i].residue.name for i in chosen}.isdisjoint(solvent)
    assert len({atoms[i].residue.index for i in chosen}) > 1


def test_ml_summary_counts_the_fragments_the_potential_uses(villin_pdb):
    import openmm

    from openmmml_e2former.simulate.selection import ml_region_summary

    top = villin_pdb.topology
    ml = select_atoms(top, "resid 0 to 4")
    empty = openmm.System()
    assert ml_region_summary(top, ml, empty)["n_fragments"] == 5  # one per residue by default
    explicit = {"fragmentIds": [0] * 30 + [1] * (len(ml) - 30)}
    assert ml_region_summary(top, ml, empty, explicit)["n_fragments"] == 2


def _write_xtc(path, n_frames, n_atoms=20):
    """An XTC whose frame k holds the value k + 0.25 (nm) in every coordinate, time k ps, step 10 k."""
    from mdtraj.formats import XTCTrajectoryFile

    rng = np.random.default_rng(0)
    with XTCTrajectoryFile(path, "w") as writer:
        for k in range(n_frames):
            xyz = (k + 0.25 + 0.01 * rng.random((1, n_atoms, 3))).astype(np.float32)
            box = (np.eye(3, dtype=np.float32) * 3.0)[None]
            writer.write(xyz, time=np.float32([k]), step=np.int32([10 * k]), box=box)


def test_trim_xtc_keeps_frames_and_tolerates_a_frame_cut_by_a_kill(tmp_path):
    import mdtraj
    from mdtraj.formats import XTCTrajectoryFile

    whole, path = str(tmp_path / "whole.xtc"), str(tmp_path / "t.xtc")
    _write_xtc(whole, 6)
    data = open(whole, "rb").read()
    open(path, "wb").write(data[:-25])  # the last frame cut short
    with pytest.raises(RuntimeError):  # what the old mdtraj.load-based trimming ran into
        mdtraj.load(path, top=mdtraj.load_topology(_one_residue_pdb(tmp_path, 20)))
    restart.trim_xtc(path, 4)
    with XTCTrajectoryFile(path) as reader:
        xyz, time, step, box = reader.read()
    with XTCTrajectoryFile(whole) as reader:
        ref_xyz, _, _, _ = reader.read()
    assert len(xyz) == 4
    np.testing.assert_array_equal(xyz, ref_xyz[:4])  # frames copied, not re-rounded
    np.testing.assert_allclose(time, [0, 1, 2, 3]) and np.testing.assert_array_equal(step, [0, 10, 20, 30])
    np.testing.assert_allclose(box[:, 0, 0], 3.0)
    open(path, "wb").write(data[:-25])
    with pytest.raises(ValueError, match="holds 5 readable frames, fewer than the 6"):
        restart.trim_xtc(path, 6)


def _one_residue_pdb(tmp_path, n_atoms):
    lines = [
        f"ATOM  {i + 1:5d}  C{i % 10}  UNK A   1       0.000   0.000   0.000  1.00  0.00           C"
        for i in range(n_atoms)
    ]
    path = tmp_path / "top.pdb"
    path.write_text("\n".join(lines) + "\nEND\n")
    return str(path)


def test_overwrite_refuses_to_delete_the_current_directory(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    manifest = {"protocol": {"a": 1}, "structure_sha256": "x", "ml_selection": "protein"}
    restart.open_run_folder(str(folder), manifest, overwrite=False)
    (folder / "notes.txt").write_text("keep")
    monkeypatch.chdir(folder)
    with pytest.raises(ValueError, match="--overwrite would delete .* holds the current directory"):
        restart.open_run_folder(".", manifest, overwrite=True)
    (folder / "sub").mkdir()
    monkeypatch.chdir(folder / "sub")
    with pytest.raises(ValueError, match="holds the current directory"):
        restart.open_run_folder("..", manifest, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep" and (folder / "run.json").exists()
    monkeypatch.chdir(tmp_path)
    assert restart.open_run_folder("run", manifest, overwrite=True) is False  # from outside: allowed
    assert not (folder / "notes.txt").exists()


def _write_dcd(path, n_frames, n_atoms=4, append=False):
    """An OpenMM DCD with frame k holding the value k in every coordinate."""
    import openmm.app as app
    import openmm.unit as unit

    top = app.Topology()
    chain = top.addChain()
    residue = top.addResidue("X", chain)
    for _ in range(n_atoms):
        top.addAtom("C", app.element.carbon, residue)
    top.setPeriodicBoxVectors(np.eye(3) * 3.0 * unit.nanometer)
    with open(path, "r+b" if append else "wb") as handle:
        dcd = app.DCDFile(handle, top, 0.001, 0, 5, append=append)
        start = dcd._modelCount
        for k in range(start, start + n_frames):
            dcd.writeModel(np.full((n_atoms, 3), float(k)) * unit.nanometer)
    return top


def test_trim_dcd_keeps_frames_and_allows_appending(tmp_path):
    import mdtraj

    path = str(tmp_path / "t.dcd")
    _write_dcd(path, 7)
    with open(path, "ab") as handle:
        handle.write(b"\0" * 30)  # a frame cut short by a kill
    assert restart.dcd_frame_count(path) == 7
    restart.trim_dcd(path, 4)
    assert restart.dcd_frame_count(path) == 4
    _write_dcd(path, 3, append=True)  # OpenMM's DCDFile continues the trimmed file
    xyz = mdtraj.load_dcd(path, top=mdtraj.Topology.from_openmm(_write_dcd(str(tmp_path / "x.dcd"), 1))).xyz
    np.testing.assert_allclose(xyz[:, 0, 0], np.arange(7) * 1.0, atol=1e-5)  # 0..3 kept, 4..6 appended
    with pytest.raises(ValueError, match="fewer"):
        restart.trim_dcd(path, 8)


def test_trim_csv_drops_rows_after_the_checkpoint_and_partial_lines(tmp_path):
    path = tmp_path / "state.csv"
    path.write_text('#"Step","Time (ps)"\n5,0.005\n10,0.01\n15,0.015\n20,0.0')
    restart.trim_csv(str(path), 2)
    assert path.read_text() == '#"Step","Time (ps)"\n5,0.005\n10,0.01\n'


def test_run_folder_refuses_a_different_run_and_foreign_folders(tmp_path):
    folder = str(tmp_path / "run")
    manifest = {"protocol": {"a": 1}, "structure_sha256": "x", "ml_selection": "protein"}
    assert restart.open_run_folder(folder, manifest, overwrite=False) is False
    assert restart.open_run_folder(folder, manifest, overwrite=False) is True
    with pytest.raises(ValueError, match="different ML selection"):
        restart.open_run_folder(folder, {**manifest, "ml_selection": "none"}, overwrite=False)
    assert restart.open_run_folder(folder, {**manifest, "ml_selection": "none"}, overwrite=True) is False
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    with pytest.raises(ValueError, match="not an e2former run folder"):
        restart.open_run_folder(str(foreign), manifest, overwrite=True)
    assert (foreign / "precious.txt").read_text() == "keep"


def test_random_init_auto_is_explicit(monkeypatch, tmp_path):
    from openmmml_e2former import checkpoints
    from openmmml_e2former.simulate.system import keep_ml_constraints, resolve_potential

    base = {"name": "e2former-lsr", "seed": 3, "precision": "single"}
    monkeypatch.setattr(checkpoints, "find_shipped_potential", lambda name: None)
    monkeypatch.setenv("OPENMMML_E2FORMER_CACHE", str(tmp_path))
    name, kwargs, random = resolve_potential({**base, "randomInit": "auto"})
    assert random and kwargs == {"precision": "single", "randomInit": True, "seed": 3}
    _, kwargs, random = resolve_potential({**base, "randomInit": "auto", "modelPath": "w.pt"})
    assert not random and kwargs == {"precision": "single", "modelPath": "w.pt"}
    _, kwargs, random = resolve_potential({**base, "randomInit": "false"})
    assert not random and "randomInit" not in kwargs  # MLPotential then demands weights
    (tmp_path / "e2former-lsr.pt").write_bytes(b"weights in the cache count as weights")
    assert resolve_potential({**base, "randomInit": "auto"})[2] is False
    (tmp_path / "e2former-lsr.pt").unlink()
    monkeypatch.setattr(checkpoints, "find_shipped_potential", lambda name: f"/x/{name}.pt")
    assert resolve_potential({**base, "randomInit": "auto"})[2] is False
    assert resolve_potential({**base, "randomInit": True})[2] is True
    assert keep_ml_constraints("auto") and keep_ml_constraints("true") and keep_ml_constraints(True)
    assert not keep_ml_constraints("false") and not keep_ml_constraints(False)


def test_ramps_reach_their_end_values_in_the_last_chunk():
    from openmmml_e2former.simulate.engine import _fraction

    total, chunk = 100, 10
    values = [_fraction(step, total, chunk) for step in range(0, total, chunk)]
    assert values[0] == 0.0 and values[-1] == 1.0
    np.testing.assert_allclose(np.diff(values), 1 / 9)  # linear in between


def test_classical_system_options(villin_pdb):
    """charmm36 + hydrogen mass repartitioning, and X-H constraints kept or removed in the ML region."""
    import openmm.unit as unit

    from openmmml_e2former.simulate.system import (
        build_mixed_system,
        build_mm_system,
        forcefield_files,
        load_forcefield,
    )

    top = villin_pdb.topology
    options = {
        "forcefield": "charmm36",
        "nonbonded_cutoff_nm": 1.0,
        "constraints": "hbonds",
        "hydrogen_mass_amu": 3.0,
        "rigid_water": True,
        "ml_constraints": "auto",
    }
    assert forcefield_files(options, "tip3p") == ["charmm36.xml", "charmm36/water.xml"]
    mm = build_mm_system(load_forcefield(forcefield_files(options, "tip3p")), top, options)
    atoms = list(top.atoms())
    masses = [mm.getParticleMass(i).value_in_unit(unit.dalton) for i in range(mm.getNumParticles())]
    solute_h = [i for i, a in enumerate(atoms) if a.element.symbol == "H" and a.residue.name != "HOH"]
    assert all(abs(masses[i] - 3.0) < 1e-6 for i in solute_h)
    plain = build_mm_system(
        load_forcefield(forcefield_files(options, "tip3p")), top, {**options, "hydrogen_mass_amu": None}
    )
    total = sum(plain.getParticleMass(i).value_in_unit(unit.dalton) for i in range(plain.getNumParticles()))
    assert sum(masses) == pytest.approx(total, rel=1e-12)  # mass moved from heavy atoms, not added

    amber = {**options, "forcefield": "amber14", "hydrogen_mass_amu": None}
    mm = build_mm_system(load_forcefield(forcefield_files(amber, "tip3p")), top, amber)
    ml = select_atoms(top, "resid 0 to 4")
    ml_h = sum(
        1
        for b in top.bonds()
        if b[0].index in ml and b[1].index in ml and "H" in (b[0].element.symbol, b[1].element.symbol)
    )
    potential = {"name": "e2former-lsr", "randomInit": "true", "seed": 0}
    kept = build_mixed_system(top, mm, ml, potential, ml_constraints=True)
    removed = build_mixed_system(top, mm, ml, potential, ml_constraints=False)
    assert kept.getNumConstraints() == mm.getNumConstraints()
    assert mm.getNumConstraints() - removed.getNumConstraints() == ml_h


def test_box_smaller_than_twice_the_cutoff_is_refused(villin_pdb):
    from openmmml_e2former.simulate.system import build_mm_system, forcefield_files, load_forcefield

    options = {
        "forcefield": "amber14",
        "nonbonded_cutoff_nm": 2.0,
        "constraints": "hbonds",
        "hydrogen_mass_amu": None,
        "rigid_water": True,
    }
    with pytest.raises(ValueError, match="periodic box too small.*twice the 2.0 nm nonbonded cutoff"):
        build_mm_system(load_forcefield(forcefield_files(options, "tip3p")), villin_pdb.topology, options)
