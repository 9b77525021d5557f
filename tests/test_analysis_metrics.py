"""Analysis functions on trajectories whose answers are known analytically."""

from __future__ import annotations

import mdtraj
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from openmmml_e2former.analysis import metrics
from openmmml_e2former.analysis.run_data import read_state_csv


@pytest.fixture(scope="module")
def villin(villin_traj):
    """Villin's protein atoms (582) from OpenMM's test.pdb, one frame."""
    return villin_traj.atom_slice(villin_traj.topology.select("protein"))


def _frames(base, xyz_list):
    out = mdtraj.Trajectory(np.array(xyz_list, dtype=np.float32), base.topology)
    return out


def test_rigid_rotation_has_zero_rmsd_after_superposition(villin):
    xyz = villin.xyz[0].astype(float)
    centre = xyz.mean(axis=0)
    frames = [xyz]
    for seed in range(3):
        rotation = Rotation.random(random_state=seed).as_matrix()
        frames.append((xyz - centre) @ rotation.T + centre + np.array([0.3, -0.2, 0.5]))
    traj = _frames(villin, frames)
    atoms = traj.topology.select("backbone")
    fitted = metrics.rmsd(traj, traj, atoms)
    assert np.all(fitted < 1e-3)  # float32 coordinates: ~1e-4 nm
    raw = metrics.rmsd(traj, traj, atoms, superpose=False)
    assert np.all(raw[1:] > 0.1)  # the same frames really differ before the fit


def test_translation_gives_its_length_as_rmsd_before_superposition(villin):
    xyz = villin.xyz[0]
    shift = np.array([0.3, 0.4, 0.0])  # 0.5 nm
    traj = _frames(villin, [xyz, xyz + shift, xyz + 2 * shift])
    atoms = np.arange(traj.n_atoms)
    np.testing.assert_allclose(metrics.rmsd(traj, traj, atoms, superpose=False), [0.0, 0.5, 1.0], atol=1e-5)
    np.testing.assert_allclose(metrics.rmsd(traj, traj, atoms), 0.0, atol=1e-3)


def test_rmsf_of_a_known_oscillation(villin):
    """Atom 0 alternates +-a along x, everything else still: RMSF = a for atom 0, 0 elsewhere."""
    xyz = villin.xyz[0]
    a = 0.05
    frames = []
    for sign in (1, -1, 1, -1):
        moved = xyz.copy()
        moved[0, 0] += sign * a
        frames.append(moved)
    traj = _frames(villin, frames)
    values = metrics.rmsf(traj, np.arange(traj.n_atoms))
    assert values[0] == pytest.approx(a, rel=1e-4)
    np.testing.assert_allclose(values[1:], 0.0, atol=1e-6)


def test_image_and_superpose_undoes_rotation_and_periodic_shift(villin):
    xyz = villin.xyz[0].astype(float)
    rotation = Rotation.from_euler("z", 40, degrees=True).as_matrix()
    moved = (xyz - xyz.mean(0)) @ rotation.T + xyz.mean(0)
    traj = _frames(villin, [xyz, moved])
    box = 6.0
    traj.unitcell_vectors = np.tile(np.eye(3) * box, (2, 1, 1)).astype(np.float32)
    traj.xyz[1, :10] += box  # a periodic image of ten atoms: same structure
    fitted = metrics.image_and_superpose(traj, traj.topology.select("backbone"))
    assert metrics.rmsd(fitted, fitted, np.arange(traj.n_atoms), superpose=False)[1] < 1e-3


def test_radius_of_gyration_of_a_known_geometry(villin):
    """Two atoms of equal mass at +-d: Rg = d.  Use the two oxygens of the first residue pair."""
    oxygens = villin.topology.select("name O")[:2]
    sub = villin.atom_slice(oxygens)
    sub.xyz[0] = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.6]])
    assert metrics.radius_of_gyration(sub)[0] == pytest.approx(0.3, rel=1e-5)


def test_secondary_structure_of_villin_is_mostly_helix(villin):
    """Villin headpiece is three short helices (PDB 1VII): DSSP finds helix and no strand."""
    codes = metrics.secondary_structure(villin)
    fractions = metrics.secondary_structure_fractions(codes)
    assert codes.shape == (1, 35)
    assert 0.4 < fractions["helix"][0] < 0.9
    assert fractions["strand"][0] == 0
    assert fractions["helix"][0] + fractions["coil"][0] == pytest.approx(1.0)


def test_hbonds_and_sasa_respond_to_unfolding(villin):
    """Pulling every residue far apart (each residue shifted by 2 nm along x per index) removes
    all inter-residue hydrogen bonds and increases the solvent-accessible area."""
    xyz = villin.xyz[0].copy()
    for residue in villin.topology.residues:
        idx = [a.index for a in residue.atoms]
        xyz[idx, 0] += 2.0 * residue.index
    traj = _frames(villin, [villin.xyz[0], xyz])
    counts = metrics.hydrogen_bond_counts(traj)
    area = metrics.sasa(traj)
    assert counts[0] > 10 and counts[1] < counts[0]
    assert area[1] > 1.5 * area[0]


@pytest.mark.parametrize("symbol", ["C", "N", "O", "S"])
def test_sasa_of_an_isolated_atom_is_its_probe_sphere(symbol):
    """One atom alone: the accessible surface is a sphere of radius r_vdW + 0.14 nm (probe),
    area 4 pi (r + 0.14)^2, with r mdtraj's radius for the element (Bondi's van der Waals
    radii: C 0.17, N 0.155, O 0.152, S 0.18 nm).  Two atoms 5 nm apart add up."""
    from mdtraj.geometry.sasa import _ATOMIC_RADII

    radius = {"C": 0.17, "N": 0.155, "O": 0.152, "S": 0.18}[symbol]
    assert _ATOMIC_RADII[symbol] == pytest.approx(radius)
    top = mdtraj.Topology()
    residue = top.add_residue("UNK", top.add_chain())
    for _ in range(2):
        top.add_atom(symbol, mdtraj.element.get_by_symbol(symbol), residue)
    one = mdtraj.Trajectory(np.zeros((1, 1, 3), dtype=np.float32), top.subset([0]))
    expected = 4 * np.pi * (radius + 0.14) ** 2
    assert metrics.sasa(one, n_sphere_points=960)[0] == pytest.approx(expected, rel=0.01)
    two = mdtraj.Trajectory(np.array([[[0, 0, 0], [5, 0, 0]]], dtype=np.float32), top)
    assert metrics.sasa(two, n_sphere_points=960)[0] == pytest.approx(2 * expected, rel=0.01)


def test_read_state_csv(tmp_path):
    path = tmp_path / "state.csv"
    path.write_text(
        '#"Step","Time (ps)","Potential Energy (kJ/mole)","Temperature (K)","Density (g/mL)"\n'
        "5,0.005,-100.5,290.0,1.01\n10,0.010,-101.5,300.0,0.99\n"
    )
    table = read_state_csv(str(path))
    np.testing.assert_array_equal(table["step"], [5, 10])
    np.testing.assert_allclose(table["temperature_K"], [290.0, 300.0])
    np.testing.assert_allclose(table["density_g_ml"], [1.01, 0.99])


@pytest.mark.parametrize("tail", ["15,0.01", "15,0.015,-102.5,310.0,1.0", "15,0.015,-1e", "\n"])
def test_read_state_csv_drops_a_partial_last_line(tmp_path, tail):
    """A run killed (or still running) mid-write leaves a line without its newline, or cut
    after a few fields: only the complete rows are read."""
    path = tmp_path / "state.csv"
    path.write_text(
        '#"Step","Time (ps)","Potential Energy (kJ/mole)","Temperature (K)","Density (g/mL)"\n'
        "5,0.005,-100.5,290.0,1.01\n10,0.010,-101.5,300.0,0.99\n" + tail
    )
    table = read_state_csv(str(path))
    np.testing.assert_array_equal(table["step"], [5, 10])
    np.testing.assert_allclose(table["potential_kj_mol"], [-100.5, -101.5])
