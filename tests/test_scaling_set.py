"""The size-scaling set (data/scaling.py): capped pieces AMBER14 can parametrise, and an oracle
whose long-range part is checked against a direct Coulomb + Lennard-Jones sum."""

import os

import numpy as np
import pytest

from openmmml_e2former.data import scaling
from openmmml_e2former.data.cutting import protein_only
from openmmml_e2former.data.generators import villin_topology

CHARGED = {"LYS": 1, "ARG": 1, "HIP": 1, "ASP": -1, "GLU": -1}


@pytest.fixture(scope="module")
def villin():
    return protein_only(*villin_topology()[:2])


@pytest.fixture(scope="module")
def oracle():
    return scaling.AmberOracle()


def test_capped_piece_has_ace_nme_caps_and_the_residues_charge(villin, oracle):
    top, pos = villin
    piece, xyz = scaling.capped_piece(top, pos, range(4, 9))  # residues 5-9, cut on both sides
    names = [r.name for r in piece.residues()]
    assert names[0] == "ACE" and names[-1] == "NME" and len(names) == 7
    original = [r.name for r in list(top.residues())[4:9]]
    assert names[1:-1] == original
    expected = sum(CHARGED.get(n, 0) for n in original)
    assert oracle.charge(piece) == expected
    atoms = list(piece.atoms())
    for residue in (list(piece.residues())[0], list(piece.residues())[-1]):
        carbon = next(a for a in residue.atoms() if a.name == ("CH3" if residue.name == "ACE" else "C"))
        hs = [a for a in residue.atoms() if a.name in ("H1", "H2", "H3")]
        d = [np.linalg.norm(xyz[h.index] - xyz[carbon.index]) for h in hs]
        assert d == pytest.approx([scaling.CH_BOND] * 3)
    assert len(atoms) == len(xyz)


def test_pieces_with_gaps_become_capped_runs_and_single_gaps_are_filled(villin):
    top, _ = villin
    runs = scaling.residue_runs(top, [2, 3, 5, 10, 11])
    assert [[r.index for r in run] for run in runs] == [[2, 3, 4, 5], [10, 11]]


def test_oracle_interaction_at_long_range_is_plain_coulomb_plus_lennard_jones(oracle):
    """E(AB) - E(A) - E(B) of a charged pair 20 Å apart equals a direct sum over the AMBER charges
    and LJ parameters of the two molecules (no cutoff, no screening)."""
    import openmm
    import openmm.app as app

    made = scaling.charged_pairs(oracle, seed=0, train_per_pair=0)
    by_id = {s.id: s for s, _ in made}
    name = "ammonium-carboxylate"
    far = max((s for s in by_id.values() if s.id.startswith(f"pair:{name}/curve/")), key=lambda s: s.id)
    mono = [by_id[f"pair:{name}/monomer-A"], by_id[f"pair:{name}/monomer-B"]]
    inter = far.energy - mono[0].energy - mono[1].energy
    # independent sum from the force-field parameters
    from openmmml_e2former.data.peptides import build_capped_peptide

    ff = app.ForceField("amber14-all.xml")
    params = []
    for residue in ("LYS", "ASP"):
        top, _ = build_capped_peptide([residue])
        system = ff.createSystem(top, nonbondedMethod=app.NoCutoff)
        nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
        params.append([nb.getParticleParameters(i) for i in range(system.getNumParticles())])
    na = len(params[0])
    xyz = far.positions
    total = 0.0
    for i, (qi, si, ei) in enumerate(params[0]):
        for j, (qj, sj, ej) in enumerate(params[1]):
            r = np.linalg.norm(xyz[i] - xyz[na + j]) / 10.0  # nm
            sigma = 0.5 * (si._value + sj._value)
            eps = np.sqrt(ei._value * ej._value)
            total += 138.935458 * qi._value * qj._value / r + 4 * eps * ((sigma / r) ** 12 - (sigma / r) ** 6)
    assert inter == pytest.approx(total / 96.48533212331002, rel=1e-5)
    assert inter < -0.5  # about -14.4/20 eV: the long-range signal the benchmark is about


def test_roles_small_members_train_and_held_out_frames_evaluate(villin, oracle):
    top, pos = villin
    frames = [pos, pos + 0.01, pos - 0.01, pos + 0.02]
    made = scaling.segments(
        oracle, top, frames, "villin", (3, 12), train_frames=2, train_stride=16, eval_starts=2
    )
    roles = {}
    for s, role in made:
        roles.setdefault(role, []).append(s.num_atoms)
    assert max(roles["train"]) <= scaling.SMALL_ATOMS and max(roles["val"]) <= scaling.SMALL_ATOMS
    assert max(roles["eval"]) > scaling.SMALL_ATOMS  # every size is evaluated
    assert all(s.id.endswith("/f3") for s, r in made if r == "eval")


def test_gfn2_queue_orders_evaluation_first_and_drops_oracle_labels(tmp_path):
    """The committed set's queue: evaluation members first (smallest first), then the curves,
    monomers, validation and training members; no structure above max_atoms; no labels carried."""
    import json

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets", "scaling")
    roles = json.load(open(os.path.join(root, "roles.json")))
    queue = scaling.gfn2_queue(root, max_atoms=300)
    order = [scaling.LABEL_ORDER.index(roles[s.id]) for s in queue]
    assert order == sorted(order) and order[0] == 0
    evaluated = [s.num_atoms for s in queue if roles[s.id] == "eval"]
    assert evaluated == sorted(evaluated) and max(s.num_atoms for s in queue) <= 300
    assert all(s.energy is None and s.forces is None for s in queue)
    assert len({s.id for s in queue}) == len(queue)
    assert np.isfinite(queue[0].positions).all()


def test_train_large_members_come_from_training_frames_and_train_only_when_asked(tmp_path):
    import json

    from openmmml_e2former.bench import accuracy
    from openmmml_e2former.data.extxyz import write_structures

    made = scaling.large_training_members(str(tmp_path), per_family=2, quick=True)
    kinds = [s.id.split(":", 1)[0] for s, _ in made]
    assert kinds.count("villin-seg") == 2 and kinds.count("villin-sphere") == 2 and "shell" in kinds
    assert len({s.id for s, _ in made}) == len(made)
    for s, role in made:
        assert role == "train-large" and scaling.SMALL_ATOMS < s.num_atoms <= scaling.LARGE_TRAIN_ATOMS
        # protein pieces from the (single, quick) training frame; shells from their own MD
        assert s.id.endswith("/f0") or "/large-f" in s.id
    # a set holding one small training member, one validation member and the large ones
    small, val = made[0][0], made[1][0]
    small.id, val.id = "tiny/f0", "tiny/f1"
    small.numbers, small.positions, small.forces = small.numbers[:20], small.positions[:20], small.forces[:20]
    small.fragment_ids = small.fragment_ids[:20]
    val.numbers, val.positions, val.forces = val.numbers[:20], val.positions[:20], val.forces[:20]
    val.fragment_ids = val.fragment_ids[:20]
    large = [s for s, _ in made[2:]]
    roles = {"tiny/f0": "train", "tiny/f1": "val", **{s.id: "train-large" for s in large}}
    (tmp_path / "roles.json").write_text(json.dumps(roles))
    write_structures(str(tmp_path / "oracle" / "all.extxyz.gz"), [small, val, *large])
    runs = str(tmp_path / "runs")
    base = accuracy.training_config("local-5A", str(tmp_path), "oracle", runs, quick=True)
    plus = accuracy.training_config("local-5A", str(tmp_path), "oracle", runs, quick=True, large=True)
    large_ids = {s.id for s in large}
    small_large = sorted(s.id for s in large if s.num_atoms <= accuracy.MAX_TRAINING_ATOMS)
    for config, train, test in (
        (base, ["tiny/f0"], small_large),  # loaded (<= 200 atoms) but not trained on: the test side
        (plus, sorted(["tiny/f0", *large_ids]), []),
    ):
        split = json.loads(open(config["data"]["split_file"]).read())
        assert split["train"] == train and split["val"] == ["tiny/f1"] and split["test"] == test
    assert plus["training"]["output"].endswith("oracle-local-5A+large")
    assert plus["data"]["max_atoms"] == scaling.LARGE_TRAIN_ATOMS
    assert accuracy.run_name("lsr-5A", 10, True, 30) == "lsr-5A-e10-from-e30+large"
    # every run name leads back to its model; names of other checkpoints lead nowhere
    for model in accuracy.MODELS:
        for args in ((None, False, None), (30, False, None), (10, True, 30), (None, True, None)):
            assert accuracy.model_of_run(accuracy.run_name(model, *args)) == model
    assert accuracy.model_of_run("shipped") is None
    assert accuracy.model_of_run("lsr-5A-ewald") is None
    with pytest.raises(FileNotFoundError, match="oracle-lsr-5A-e30/best.pt is missing"):
        accuracy.training_config("lsr-5A", str(tmp_path), "oracle", runs, epochs=10, init_epochs=30)
