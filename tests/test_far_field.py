"""The far-field floor of the size-scaling benchmark (bench/far_field.py) against OpenMM's own forces."""

from __future__ import annotations

import numpy as np
import pytest

from openmmml_e2former.bench.far_field import (
    far_field_forces,
    fraction_and_error,
    missed_fraction,
    nonbonded_parameters,
    paired_difference,
    residues_of,
)
from openmmml_e2former.data import scaling


@pytest.fixture(scope="module")
def charged_pair():
    """The ACE-LYS-NME / ACE-ASP-NME decay-curve member 8 Å beyond contact."""
    made = scaling.charged_pairs(scaling.AmberOracle(), seed=0, train_per_pair=0)
    curve = [s for s, _ in made if s.id.startswith("pair:ammonium-carboxylate/curve/d")]
    curve.sort(key=lambda s: float(s.id.rsplit("/d", 1)[1]))
    return curve[scaling.DECAY_GAPS.index(8.0)]


def test_far_field_of_two_molecules_is_their_whole_interaction(charged_pair):
    """Summed over a molecule, the far-field force beyond a radius smaller than every
    intermolecular distance is the force the other molecule exerts (intramolecular pairs cancel
    by Newton's third law): it must equal OpenMM's total force summed over that molecule."""
    oracle = scaling.AmberOracle()
    from openmmml_e2former.data.peptides import build_capped_peptide

    top_a, _ = build_capped_peptide(["LYS"])
    top_b, _ = build_capped_peptide(["ASP"])
    topology = scaling._combine(top_a, top_b)
    xyz = charged_pair.positions
    na = top_a.getNumAtoms()
    between = np.linalg.norm(xyz[:na, None] - xyz[None, na:], axis=-1)
    assert between.min() > 5.0
    _, openmm_forces = oracle(topology, xyz)
    np.testing.assert_allclose(openmm_forces, charged_pair.forces, atol=1e-8)  # same structure

    far = far_field_forces(
        xyz, *nonbonded_parameters(oracle.system(topology)), radii=(5.0, between.max() + 0.01, 100.0)
    )
    for molecule in (slice(0, na), slice(na, None)):
        net = openmm_forces[molecule].sum(axis=0)
        assert np.linalg.norm(net) > 0.05  # a real signal: about 14.4 / 12^2 eV/Å
        # OpenMM's CPU platform sums in single precision: ~1e-7 eV/Å of noise on a net 0.1 eV/Å
        np.testing.assert_allclose(far[0][molecule].sum(axis=0), net, rtol=1e-4, atol=1e-5)
    # beyond the farthest intermolecular distance only intramolecular pairs could remain (net zero)
    for molecule in (slice(0, na), slice(na, None)):
        np.testing.assert_allclose(far[1][molecule].sum(axis=0), 0.0, atol=1e-9)
    assert np.abs(far[2]).max() == 0.0  # nothing is 100 Å apart


def test_members_are_found_from_their_ids():
    class Residue:
        def __init__(self, index, name, number):
            self.index, self.name, self.id = index, name, number

        def atoms(self):
            return [Atom(self.index, "CA", self)]

    class Atom:
        def __init__(self, index, name, residue):
            self.index, self.name, self.residue = index, name, residue

    class Topology:
        residues_ = [Residue(0, "ALA", "1"), Residue(1, "LYS", "2"), Residue(2, "GLY", "3")]

        def residues(self):
            return self.residues_

        def atoms(self):
            return [a for r in self.residues_ for a in r.atoms()]

    frames = [np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [9.0, 0.0, 0.0]])] * 5
    assert residues_of("1bhl-seg:2-3/f4", Topology(), frames) == ([1, 2], 4)
    assert residues_of("1bhl-sphere:LYS2/r4/f3", Topology(), frames) == ([0, 1], 3)
    assert residues_of("pair:ammonium-carboxylate/curve/+10", Topology(), frames) is None


def test_far_field_from_zero_is_openmms_nonbonded_force_on_every_atom(charged_pair):
    """R = 0: every non-excluded pair, atom by atom, against OpenMM's NonbondedForce alone (the
    same System with its 1-2/1-3/1-4 exception terms zeroed, since the far field leaves them out)."""
    import copy

    import openmm
    import openmm.unit as unit

    from openmmml_e2former.data.peptides import build_capped_peptide

    oracle = scaling.AmberOracle()
    topology = scaling._combine(build_capped_peptide(["LYS"])[0], build_capped_peptide(["ASP"])[0])
    source = oracle.system(topology)
    nonbonded = copy.deepcopy(next(f for f in source.getForces() if isinstance(f, openmm.NonbondedForce)))
    for k in range(nonbonded.getNumExceptions()):
        i, j = nonbonded.getExceptionParameters(k)[:2]
        nonbonded.setExceptionParameters(k, i, j, 0.0, 1.0, 0.0)
    system = openmm.System()
    for i in range(source.getNumParticles()):
        system.addParticle(source.getParticleMass(i))
    system.addForce(nonbonded)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(charged_pair.positions * 0.1)
    forces = (
        context.getState(getForces=True)
        .getForces(asNumpy=True)
        .value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    )
    expected = forces * 0.1 / 96.48533212331002  # eV/Å, written out
    (far,) = far_field_forces(charged_pair.positions, *nonbonded_parameters(source), radii=(0.0,))
    np.testing.assert_allclose(far, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert np.abs(expected).max() > 0.5


def test_missed_fraction_is_the_share_of_the_far_field_left_in_the_errors():
    rng = np.random.default_rng(3)
    far = rng.normal(size=(40, 3))

    def share(*errors):  # one structure per error array, all with the same far field
        return fraction_and_error([missed_fraction(far, e) for e in errors])

    assert share(-far, -far) == pytest.approx((1.0, 0.0))  # blind beyond R: errors are minus the far field
    assert share(0 * far, 0 * far) == pytest.approx((0.0, 0.0))  # reproduces it
    # two structures leaving out 0.2 and 0.6 of the same far field F:
    # 0.4 +- sqrt(2 (0.2 |F|^2)^2) / (2 |F|^2)
    beta, error = share(-0.2 * far, -0.6 * far)
    assert beta == pytest.approx(0.4)
    assert error == pytest.approx(0.2 * np.sqrt(2) / 2)
    # a structure with twice the far field weighs four times as much: (1 * 1 + 0 * 4) / 5
    both = [missed_fraction(far, -far), missed_fraction(2 * far, np.zeros_like(far))]
    assert fraction_and_error(both)[0] == pytest.approx(1 / 5)
    assert missed_fraction(far, -far)[:2] == pytest.approx(((far**2).sum(), (far**2).sum()))
    assert fraction_and_error([missed_fraction(np.zeros_like(far), far)] * 2) == (None, None)
    assert fraction_and_error([missed_fraction(far, -far)]) == (None, None)  # one structure: no error


def test_paired_difference_cancels_what_two_models_share():
    """Two models whose errors share a structure-dependent part: each model's own share has a
    large standard error, their difference (the same far fields, paired) none."""
    rng = np.random.default_rng(4)
    fars = [rng.normal(size=(30, 3)) * scale for scale in (1.0, 2.0, 0.5)]
    # the same error in both models, part of it along each structure's own far field
    shared = [k * f + rng.normal(size=(30, 3)) for k, f in zip((0.4, -0.3, 0.2), fars, strict=True)]
    a = [missed_fraction(f, -0.8 * f + n) for f, n in zip(fars, shared, strict=True)]
    b = [missed_fraction(f, -0.5 * f + n) for f, n in zip(fars, shared, strict=True)]
    assert fraction_and_error(a)[1] > 0.1 and fraction_and_error(b)[1] > 0.1
    difference, error = paired_difference(a, b)
    assert difference == pytest.approx(0.3)
    assert error == pytest.approx(0.0, abs=1e-12)
    # structures that leave out 0.3 and 0.1 more of equal far fields: 0.2 +- 0.1 / sqrt(2)
    c = [missed_fraction(fars[0], -0.3 * fars[0]), missed_fraction(fars[0], -0.1 * fars[0])]
    zero = [missed_fraction(fars[0], 0 * fars[0])] * 2
    assert paired_difference(c, zero) == pytest.approx((0.2, 0.1 / np.sqrt(2)))
    with pytest.raises(ValueError, match="same far fields"):
        paired_difference(a, b[::-1])


def test_paired_difference_bins_by_size():
    from openmmml_e2former.bench.accuracy import paired_difference_bins

    rng = np.random.default_rng(5)
    rows = []
    for atoms in (400, 500, 1500, 1600):
        far = rng.normal(size=(atoms, 3))
        gap = 0.2 if atoms < 1000 else 0.05
        rows.append(
            {
                "atoms": atoms,
                "missed": {
                    "x": {"10": missed_fraction(far, -(0.5 + gap) * far)},
                    "y": {"10": missed_fraction(far, -0.5 * far)},
                },
            }
        )
    bins = paired_difference_bins(rows, "x", "y")
    assert [b["bin"] for b in bins] == ["321-640", "1281-2560"]
    assert [b["difference"]["10"] for b in bins] == pytest.approx([0.2, 0.05])
