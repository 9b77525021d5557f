"""The learned-charge Coulomb term (model/electrostatics.py) against analytic values."""

import math

import numpy as np
import pytest
import torch
from model_helpers import energy_forces, random_molecule

from openmmml_e2former.model.electrostatics import coulomb_energies, kernel, total_charge_shift

#: e^2/(4 pi eps0) in eV Angstrom, from CODATA 2018 (e = 1.602176634e-19 C, eps0 = 8.8541878128e-12 F/m)
K_EV_A = 14.3996454784


def test_point_charges_far_apart_follow_coulomb_law():
    pos = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 12.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    energy = coulomb_energies(pos, q, None, K_EV_A, sigma=1.0, cutoff=0.0).sum()
    expected = K_EV_A * (1.0 * -1.0 / 10.0 + 1.0 * 0.5 / 12.0 + -1.0 * 0.5 / math.hypot(10.0, 12.0))
    assert float(energy) == pytest.approx(expected, rel=1e-12)  # erf(10) = 1 to double precision


def test_screened_kernel_at_short_range_is_erf_over_r():
    r = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    sigma = 2.0
    expected = [math.erf(x / sigma) / x for x in r.tolist()]
    assert kernel(r, sigma, 0.0).tolist() == pytest.approx(expected, rel=1e-14)


def test_shifted_kernel_and_its_force_vanish_at_the_cutoff():
    sigma, cutoff, h = 2.0, 9.0, 1e-6
    r = torch.tensor([cutoff - h, cutoff, cutoff + h, 12.0], dtype=torch.float64, requires_grad=True)
    v = kernel(r, sigma, cutoff)
    (dv,) = torch.autograd.grad(v.sum(), r)
    v = v.detach()
    assert abs(float(v[0])) < 1e-12 and float(v[1]) == 0.0 and float(v[3]) == 0.0
    assert abs(float(dv[0])) < 1e-7 and float(dv[3]) == 0.0
    # inside, the shift is linear in r: the difference to erf(r/s)/r is a + b r
    x = torch.tensor([3.0, 5.0, 7.0], dtype=torch.float64)
    d = (kernel(x, sigma, cutoff) - torch.erf(x / sigma) / x).tolist()
    assert d[1] - d[0] == pytest.approx(d[2] - d[1], rel=1e-10)


def test_charges_add_up_to_the_total():
    raw = torch.tensor([0.3, -0.1, 0.25, 0.05], dtype=torch.float64)
    q = total_charge_shift(raw, torch.tensor(-2.0))
    assert float(q.sum()) == pytest.approx(-2.0, abs=1e-14)
    assert (q - raw).tolist() == pytest.approx([float(q[0] - raw[0])] * 4)  # an equal shift


def test_model_charges_sum_to_the_system_charge(cached_seeded_model):
    model = cached_seeded_model(torch.float64, electrostatics="coulomb")
    pos, z, frag = random_molecule(seed=4)
    features, _ = model.features(pos, z, frag, torch.tensor(1.0), None, None, False)
    q = model.atomic_charges(features, torch.tensor(1.0, dtype=torch.float64))
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(q.std()) > 0.0  # learned, not uniform


def test_two_distant_molecules_interact_through_coulomb_only(cached_seeded_model):
    """Beyond every cutoff, the energy of two molecules minus each alone is q_A q_B k / R for the
    learned net molecule charges: the Coulomb term reaches where the local and long-range blocks stop."""
    model = cached_seeded_model(torch.float64, electrostatics="coulomb", long_cutoff=8.0)
    a, za, fa = random_molecule(n_atoms=6, n_fragments=1, spread=1.5, seed=1)
    shift = torch.tensor([60.0, 0.0, 0.0], dtype=torch.float64)
    pos = torch.cat([a, a + shift])
    z = torch.cat([za, za])
    frag = torch.cat([fa, fa + 1])
    charge = torch.tensor(2.0, dtype=torch.float64)
    features, _ = model.features(pos, z, frag, charge, None, None, False)
    q = model.atomic_charges(features, charge)
    per_atom = model.electrostatic_energies(features, pos, charge, None)
    qa, qb = float(q[:6].sum()), float(q[6:].sum())
    inter = float(per_atom.sum()) - _self_energy(pos[:6], q[:6]) - _self_energy(pos[6:], q[6:])
    # dipole corrections fall off as 1/R^2: 1e-3 relative at 60 Å for molecules of 1.5 Å
    assert inter == pytest.approx(K_EV_A * qa * qb / 60.0, rel=2e-3)


def _self_energy(pos, q):
    return float(coulomb_energies(pos, q, None, K_EV_A, 2.0, 0.0).sum())


def test_periodic_model_without_coulomb_cutoff_is_refused(cached_seeded_model):
    model = cached_seeded_model(torch.float64, electrostatics="coulomb")
    pos, z, frag = random_molecule()
    with pytest.raises(ValueError, match="no cutoff"):
        energy_forces(model, pos, z, frag, torch.eye(3, dtype=torch.float64) * 60.0)


def test_minimum_image_coulomb_with_cutoff_matches_a_direct_sum():
    rng = np.random.default_rng(0)
    box = torch.diag(torch.tensor([20.0, 22.0, 24.0], dtype=torch.float64))
    pos = torch.tensor(rng.uniform(0, 20, size=(12, 3)), dtype=torch.float64)
    q = torch.tensor(rng.normal(size=12), dtype=torch.float64)
    energy = float(coulomb_energies(pos, q, box, K_EV_A, 1.0, 9.0).sum())
    lengths = np.array([20.0, 22.0, 24.0])
    p, qq = pos.numpy(), q.numpy()
    expected = 0.0
    erf_c = math.erf(9.0)
    v_c, dv_c = erf_c / 9.0, (2 / math.sqrt(math.pi) * math.exp(-81.0) * 9.0 - erf_c) / 81.0
    for i in range(12):
        for j in range(i + 1, 12):
            d = p[i] - p[j]
            d -= lengths * np.round(d / lengths)
            r = float(np.linalg.norm(d))
            if r < 9.0:
                expected += K_EV_A * qq[i] * qq[j] * (math.erf(r) / r - v_c - (r - 9.0) * dv_c)
    assert energy == pytest.approx(expected, rel=1e-12)


def test_static_openmm_module_matches_the_network(cached_seeded_model):
    from openmmml_e2former.export import OpenMMModule

    model = cached_seeded_model(torch.float64, electrostatics="coulomb")
    pos, z, frag = random_molecule(seed=9)
    atoms = list(range(len(z)))
    module = OpenMMModule(model, z.tolist(), frag.tolist(), 1.0, atoms, [], False, torch.float64)
    nm = (pos / 10.0).clone().requires_grad_(True)
    energy = module(nm)
    (grad,) = torch.autograd.grad(energy, nm)
    e_ref, f_ref = energy_forces(model, pos, z, frag, charge=1.0)
    kj = 96.48533212331002
    assert float(energy) == pytest.approx(float(e_ref) * kj, rel=1e-10)
    torch.testing.assert_close(-grad / 10.0, f_ref * kj, rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="no cutoff"):
        OpenMMModule(model, z.tolist(), frag.tolist(), 1.0, list(range(len(z))), [], True, torch.float64)


def test_sigmoid_weights_add_up_where_softmax_averages():
    """k equal-score edges into one receiver: the softmax gives each ~1/k (the sum stays ~1, an
    average), the sigmoid weights do not depend on k (the sum grows with k)."""
    from openmmml_e2former.model.attention import segment_softmax, sigmoid_weights

    for k in (2, 8, 32):
        scores = torch.zeros((k, 1), dtype=torch.float64)
        envelope = torch.ones(k, dtype=torch.float64)
        inside = torch.ones(k, dtype=torch.bool)
        receivers = torch.zeros(k, dtype=torch.long)
        soft = segment_softmax(scores, envelope, inside, receivers, 1, 1e-3, False)
        sig = sigmoid_weights(scores, envelope, inside)
        assert float(soft.sum()) == pytest.approx(1.0, abs=1e-3)
        assert float(sig.sum()) == pytest.approx(0.5 * k)
    inside[0] = False  # a masked slot contributes nothing
    assert float(sigmoid_weights(scores, envelope, inside)[0]) == 0.0
