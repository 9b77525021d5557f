"""bench/environments.py: neighbour counts on a lattice, and the split of the large structures'
error at the training atoms' crowding on made-up errors whose answer is known."""

import numpy as np
import pytest

from openmmml_e2former.bench import environments as env
from openmmml_e2former.data.structure import Structure


def _lattice(n: int, spacing: float = 3.0) -> np.ndarray:
    grid = np.arange(n) * spacing
    return np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)


def test_neighbour_counts_on_a_cubic_lattice():
    xyz = _lattice(5)  # 125 atoms, 3 Å apart
    centre = int(np.argmin(np.linalg.norm(xyz - xyz.mean(0), axis=1)))
    assert env.neighbour_counts(xyz, 3.1)[centre] == 6  # the six nearest
    assert env.neighbour_counts(xyz, 4.3)[centre] == 18  # + the twelve face diagonals (4.24 Å)
    assert env.neighbour_counts(xyz, 3.1)[0] == 3  # a corner
    far = env.neighbour_counts(xyz, 1000.0)
    assert (far == len(xyz) - 1).all()


def _structure(sid: str, xyz: np.ndarray) -> Structure:
    n = len(xyz)
    return Structure(
        id=sid, molecule=sid, numbers=np.full(n, 6), positions=xyz, fragment_ids=np.arange(n), charge=0,
        source="test", energy=0.0, forces=np.zeros((n, 3)),
    )  # fmt: skip


def test_large_error_splits_at_the_training_crowding():
    # errors made up to depend on crowding only: 0.1 eV/Å up to the training atoms' 99th
    # percentile of neighbours, 0.3 beyond
    small = [_structure(f"small{k}", _lattice(5) + k) for k in range(2)]  # 125 atoms
    large = [_structure("large", _lattice(9))]  # 729 atoms, more crowded inside
    training = env.training_neighbours(small)
    assert training["max"] == env.neighbour_counts(small[0].positions).max() >= training["p99"]
    limit = training["p99"]
    predicted = {}
    for s in small + large:
        counts = env.neighbour_counts(s.positions)
        err = np.where(counts <= limit, 0.1, 0.3)
        # component errors e/2, e, 3e/2 (signs mixed): per-atom mean |error| e, max 1.5e, norm/sqrt(3) ~1.08e
        predicted[s.id] = (0.0, err[:, None] * np.array([0.5, -1.0, 1.5]))
    table = env.environment_table(small + large, predicted, {s.id: "cubes" for s in small + large}, training)
    groups = table["families"]["cubes"]
    beyond = groups["small"]["fraction_beyond_training"]
    assert beyond <= 0.01 + 1e-12 and groups["small"]["force_mae"] == pytest.approx(0.1 + 0.2 * beyond)
    big = groups["large"]
    assert big["force_mae_within_training"] == pytest.approx(0.1)
    assert big["force_mae_beyond_training"] == pytest.approx(0.3)
    counts = env.neighbour_counts(large[0].positions)
    assert big["fraction_beyond_training"] == pytest.approx((counts > limit).mean())
    assert 0.2 < big["fraction_beyond_training"] < 0.8
    assert big["force_mae"] == pytest.approx(0.1 + 0.2 * big["fraction_beyond_training"])


def test_without_a_training_set_there_is_no_split():
    assert env.training_neighbours([]) is None
    xyz = _lattice(9)
    s = _structure("large", xyz)
    predicted = {"large": (0.0, np.full((len(xyz), 3), 0.2))}
    table = env.environment_table([s], predicted, {"large": "cubes"}, None)
    large = table["families"]["cubes"]["large"]
    assert table["training_neighbours"] is None and large["force_mae"] == pytest.approx(0.2)
    assert large["fraction_beyond_training"] is None and large["force_mae_beyond_training"] is None
    result = {"labels": "x", "models": {"m": {"environments": {"families": {}, "training_neighbours": None}}}}
    assert env.plot_environments(result, "/nonexistent/never-written.png") is None
