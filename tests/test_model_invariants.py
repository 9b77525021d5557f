"""Symmetries, smoothness, locality and TorchScript of the network, in float64 and float32.

Every check compares the model with itself under a transformation whose exact effect is
known (rotation, permutation, lattice translation) or with finite differences.
"""

import math

import pytest
import torch
from model_helpers import energy_forces, random_molecule, seeded_model, villin_protein

TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


def random_rotation(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.fixture(scope="module")
def villin():
    return villin_protein()


#: the architectures every symmetry test runs over (small_config() changes)
VARIANTS = {
    "lsr": {},
    "local-only": {"num_long_layers": 0},
    "lsr+coulomb": {"electrostatics": "coulomb"},
    "lsr-sigmoid": {"long_attention": "sigmoid"},
    "local+coulomb-cutoff": {"num_long_layers": 0, "electrostatics": "coulomb", "coulomb_cutoff": 9.0},
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rotation_translation_invariance_and_force_equivariance(dtype, variant):
    model = seeded_model(dtype, **VARIANTS[variant])
    pos, z, frag = random_molecule()
    pos = pos.to(dtype)
    e0, f0 = energy_forces(model, pos, z, frag)
    rot = random_rotation().to(dtype)
    shift = torch.tensor([3.1, -7.4, 12.9], dtype=dtype)
    e1, f1 = energy_forces(model, pos @ rot.T + shift, z, frag)
    scale = float(f0.abs().max())
    assert abs(float(e1 - e0)) <= TOL[dtype] * max(1.0, abs(float(e0))) * 10
    assert float((f1 - f0 @ rot.T).abs().max()) <= TOL[dtype] * max(1.0, scale) * 10


def test_invariances_on_villin(villin):
    model = seeded_model(torch.float64)
    pos, z, frag = villin
    e0, f0 = energy_forces(model, pos, z, frag)
    rot = random_rotation(1)
    e1, f1 = energy_forces(model, pos @ rot.T + 5.0, z, frag)
    assert abs(float(e1 - e0)) <= 1e-9 * abs(float(e0))
    assert float((f1 - f0 @ rot.T).abs().max()) <= 1e-8 * float(f0.abs().max())
    assert float(f0.sum(dim=0).abs().max()) <= 1e-8 * float(f0.abs().max())  # no net force


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_permutation_invariance(dtype, variant):
    model = seeded_model(dtype, **VARIANTS[variant])
    pos, z, frag = random_molecule(seed=3)
    pos = pos.to(dtype)
    e0, f0 = energy_forces(model, pos, z, frag)
    perm = torch.randperm(pos.shape[0], generator=torch.Generator().manual_seed(5))
    # relabel fragments too, so ids stay arbitrary labels
    relabel = torch.tensor([2, 0, 3, 1])
    e1, f1 = energy_forces(model, pos[perm], z[perm], relabel[frag[perm]])
    assert abs(float(e1 - e0)) <= TOL[dtype] * max(1.0, abs(float(e0))) * 10
    assert float((f1 - f0[perm]).abs().max()) <= TOL[dtype] * 10 * max(1.0, float(f0.abs().max()))


@pytest.mark.parametrize(
    ("molecule", "variant"),
    [("random", v) for v in VARIANTS] + [("villin", "lsr"), ("villin", "lsr+coulomb")],
)
def test_forces_match_central_finite_differences(molecule, variant, villin):
    model = seeded_model(torch.float64, **VARIANTS[variant])
    pos, z, frag = random_molecule(seed=7) if molecule == "random" else villin
    _, forces = energy_forces(model, pos, z, frag)
    h = 1e-5
    for atom, axis in [(0, 0), (5, 1), (pos.shape[0] - 1, 2)]:
        plus, minus = pos.clone(), pos.clone()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        with torch.no_grad():
            e_plus = model(plus, z, frag, torch.tensor(0.0), None, None)
            e_minus = model(minus, z, frag, torch.tensor(0.0), None, None)
        numeric = -(float(e_plus) - float(e_minus)) / (2 * h)
        assert abs(numeric - float(forces[atom, axis])) <= 1e-6 * max(1.0, float(forces.abs().max()))


def energy_along(model, pos, z, frag, atoms, direction, distances):
    """Energies as ``atoms`` are translated by ``direction * d`` for each d."""
    values = []
    for d in distances:
        moved = pos.clone()
        moved[atoms] += direction * d
        with torch.no_grad():
            values.append(float(model(moved, z, frag, torch.tensor(0.0), None, None)))
    return values


def crossing_shift(moving, fixed, direction, radius):
    """Shift d along ``direction`` (unit) that puts ``moving`` at ``radius`` from ``fixed``."""
    rel = moving - fixed
    b = float(rel @ direction)
    return -b + math.sqrt(b * b - (float(rel @ rel) - radius * radius))


def two_molecules(gap):
    """Fragment 0 (4 atoms around the origin) and a single atom (fragment 1) at x = gap."""
    pos = torch.tensor(
        [[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [-0.4, 1.0, 0.0], [-0.4, -0.5, 0.9], [gap, 0.3, 0.2]],
        dtype=torch.float64,
    )
    return pos, torch.tensor([6, 1, 1, 8, 8]), torch.tensor([0, 0, 0, 0, 1])


def test_energy_continuous_when_atom_crosses_local_cutoff():
    """The lone atom 4 crosses the 5 A cutoff of atom 1 (nearest); energy and force are
    continuous across it in the smooth (default) mode, but not in the authors' slot mode."""
    pos, z, frag = two_molecules(6.0)
    direction = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    d_cross = crossing_shift(pos[4], pos[1], direction, 5.0)  # |r4 - r1| = 5 A
    smooth = seeded_model(torch.float64, num_long_layers=0)
    eps = 1e-7
    e = energy_along(smooth, pos, z, frag, [4], direction, [d_cross - eps, d_cross + eps])
    assert abs(e[1] - e[0]) < 1e-9
    # force continuity: finite-difference slopes on both sides agree
    h = 1e-4
    left = energy_along(smooth, pos, z, frag, [4], direction, [d_cross - 2 * h, d_cross - h])
    right = energy_along(smooth, pos, z, frag, [4], direction, [d_cross + h, d_cross + 2 * h])
    assert abs((left[1] - left[0]) - (right[1] - right[0])) / h < 1e-5


def test_reference_slot_mode_is_discontinuous_at_the_cutoff():
    """Why the smooth mode exists: the authors' slot semantics jump when the slot count changes."""
    pos, z, frag = two_molecules(6.0)
    direction = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    d_cross = crossing_shift(pos[4], pos[1], direction, 5.0)
    reference = seeded_model(torch.float64, num_long_layers=0, local_mode="reference")
    e = energy_along(reference, pos, z, frag, [4], direction, [d_cross - 1e-7, d_cross + 1e-7])
    assert abs(e[1] - e[0]) > 1e-6


def test_energy_continuous_when_fragment_crosses_long_cutoff():
    """A two-atom fragment's centroid crosses 18 A from atom 0, far outside the local cutoff."""
    pos = torch.tensor(
        [[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [0.0, 1.1, 0.0], [18.5, 0.0, 0.0], [19.6, 0.0, 0.0]],
        dtype=torch.float64,
    )
    z = torch.tensor([6, 8, 1, 7, 1])
    frag = torch.tensor([0, 0, 0, 1, 1])
    model = seeded_model(torch.float64)
    centroid = float(pos[3:, 0].mean())
    direction = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64)
    d_cross = centroid - 18.0  # move left until the centroid is 18 A from atom 0
    eps = 1e-7
    e = energy_along(model, pos, z, frag, [3, 4], direction, [d_cross - eps, d_cross + eps])
    assert abs(e[1] - e[0]) < 1e-9
    far = energy_along(model, pos, z, frag, [3, 4], direction, [0.0, d_cross + 1.0])
    assert abs(far[1] - far[0]) > 1e-8  # the fragment does interact once inside 18 A


def isolated_energy(model, pos, z, frag, atoms):
    sub = torch.tensor(atoms)
    ids = torch.unique(frag[sub], return_inverse=True)[1]
    with torch.no_grad():
        return float(model(pos[sub], z[sub], ids, torch.tensor(0.0), None, None))


def test_locality_local_only_model():
    """Beyond every cutoff the local-only model's interaction energy is exactly zero."""
    model = seeded_model(torch.float64, num_long_layers=0)
    pos, z, frag = two_molecules(6.2)  # lone atom just beyond 5 A of everything
    assert float(torch.linalg.vector_norm(pos[:4] - pos[4], dim=1).min()) > 5.0
    with torch.no_grad():
        total = float(model(pos, z, frag, torch.tensor(0.0), None, None))
    parts = isolated_energy(model, pos, z, frag, [0, 1, 2, 3]) + isolated_energy(model, pos, z, frag, [4])
    assert total == pytest.approx(parts, abs=1e-12)


def test_locality_long_range_acts_only_through_long_blocks():
    """A fragment between 5 A and 18 A changes the energy, but not the local-stage features."""
    model = seeded_model(torch.float64)
    pos, z, frag = two_molecules(10.0)
    with torch.no_grad():
        total = float(model(pos, z, frag, torch.tensor(0.0), None, None))
        _, with_b = model.features(pos, z, frag, torch.tensor(0.0), None, None, True)
        sub = torch.arange(4)
        _, without_b = model.features(pos[sub], z[sub], frag[sub], torch.tensor(0.0), None, None, True)
    parts = isolated_energy(model, pos, z, frag, [0, 1, 2, 3]) + isolated_energy(model, pos, z, frag, [4])
    assert abs(total - parts) > 1e-8
    # equal to float64 rounding (node-wise matmuls of 4 or 5 rows may round differently);
    # any coupling through the local stage would be many orders of magnitude larger
    torch.testing.assert_close(with_b["norm_final_out"][:4], without_b["norm_final_out"], rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("variant", ["lsr", "local+coulomb-cutoff"])
def test_periodic_image_invariance(dtype, variant):
    model = seeded_model(dtype, **VARIANTS[variant])
    pos, z, frag = random_molecule(n_atoms=16, n_fragments=4, spread=5.0, seed=11)
    pos = pos.to(dtype)
    box = torch.tensor([[40.0, 0.0, 0.0], [3.0, 39.0, 0.0], [-2.0, 4.0, 38.0]], dtype=dtype)
    e0, f0 = energy_forces(model, pos, z, frag, box)
    shifted = pos.clone()
    shifted[frag == 2] += box[1] - box[2]  # one fragment moved by a lattice vector
    e1, f1 = energy_forces(model, shifted, z, frag, box)
    scale = max(1.0, float(f0.abs().max()))
    assert abs(float(e1 - e0)) <= TOL[dtype] * max(1.0, abs(float(e0))) * 10
    assert float((f1 - f0).abs().max()) <= TOL[dtype] * scale * 10
    e_free, _ = energy_forces(model, pos, z, frag, None)  # box large enough: no image within cutoffs
    assert abs(float(e_free - e0)) <= TOL[dtype] * max(1.0, abs(float(e0))) * 10


def test_box_too_small_is_refused():
    model = seeded_model(torch.float64)
    pos, z, frag = random_molecule()
    with pytest.raises(ValueError, match="box too small"):
        model(pos, z, frag, torch.tensor(0.0), torch.eye(3, dtype=torch.float64) * 30.0, None)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_torchscript_matches_eager(dtype, variant):
    model = seeded_model(dtype, **VARIANTS[variant])
    scripted = torch.jit.script(model)
    pos, z, frag = random_molecule(seed=2)
    pos = pos.to(dtype)
    box = torch.eye(3, dtype=dtype) * 40.0
    periodic_ok = not (model.electrostatic and model.coulomb_cutoff <= 0)
    for b in (None, box) if periodic_ok else (None,):
        e_eager, f_eager = energy_forces(model, pos, z, frag, b)
        e_script, f_script = energy_forces(scripted, pos, z, frag, b)
        assert abs(float(e_eager - e_script)) <= TOL[dtype] * max(1.0, abs(float(e_eager)))
        assert float((f_eager - f_script).abs().max()) <= TOL[dtype] * max(1.0, float(f_eager.abs().max()))


def test_bad_inputs_name_the_cause():
    model = seeded_model(torch.float64)
    pos, z, frag = random_molecule()
    nan_pos = pos.clone()
    nan_pos[3, 1] = math.nan
    with pytest.raises(ValueError, match=r"NaN or infinite at atom indices \[3\]"):
        model(nan_pos, z, frag, torch.tensor(0.0), None, None)
    bad_z = z.clone()
    bad_z[2] = 30  # zinc is not in the protein element set
    with pytest.raises(ValueError, match=r"unsupported element.*\[30\].*indices \[2\]"):
        model(pos, bad_z, frag, torch.tensor(0.0), None, None)
