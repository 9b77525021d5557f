"""Fixed-shape graphs (model/static_graph.py) and the sync-free OpenMM module built on them.

References are independent of the code under test: vesin-torch's cell list and a plain
all-pairs filter for the graphs, the dynamic-graph network (``static_graphs=False``) for
energies and forces, ``torch._dynamo.explain`` for graph breaks.
"""

import io
import math

import pytest
import torch
from model_helpers import random_molecule, seeded_model

from openmmml_e2former.export import OpenMMModule
from openmmml_e2former.model import network as network_module
from openmmml_e2former.model.attention import EquivariantAttention
from openmmml_e2former.model.graph import fragment_centroids, radius_graph
from openmmml_e2former.model.static_graph import build_graph, plan_graph

TRICLINIC = [[20.0, 0.0, 0.0], [3.0, 22.0, 0.0], [-2.0, 4.0, 24.0]]


def random_box_positions(n: int, periodic: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    positions = torch.rand(n, 3, generator=generator, dtype=torch.float64) * torch.tensor([20.0, 22.0, 24.0])
    box = torch.tensor(TRICLINIC, dtype=torch.float64) if periodic else None
    return positions, box


def edge_set(graph):
    receivers, senders, _, _, inside = graph
    return set(zip(receivers[inside].tolist(), senders[inside].tolist(), strict=True))


def all_pairs(queries, targets, cutoff, box, exclude=None, drop_self=False):
    """Brute force over every pair with an explicit minimum image over the 27 neighbour cells."""
    found = set()
    shifts = torch.tensor([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
    for q in range(queries.shape[0]):
        delta = queries[q] - targets
        if box is not None:
            images = delta.unsqueeze(1) - (shifts.to(box.dtype) @ box).unsqueeze(0)
            best = torch.linalg.vector_norm(images, dim=-1).min(dim=1).values
        else:
            best = torch.linalg.vector_norm(delta, dim=-1)
        for t in torch.nonzero(best < cutoff).flatten().tolist():
            if drop_self and t == q:
                continue
            if exclude is not None and int(exclude[q]) == t:
                continue
            found.add((q, t))
    return found


def planned_graph(queries, targets, cutoff, box, exclude, drop_self):
    plan = plan_graph(queries, targets, cutoff, box, exclude, drop_self)
    graph, overflow = build_graph(queries, targets, cutoff, box, exclude, drop_self, *plan)
    return plan, graph, overflow


@pytest.mark.parametrize("periodic", [False, True])
def test_atom_graph_equals_vesin_and_brute_force(periodic):
    positions, box = random_box_positions(300, periodic)
    plan, graph, overflow = planned_graph(positions, positions, 5.0, box, None, True)
    assert plan[0] == "cells"
    assert not bool(overflow)
    expected = all_pairs(positions, positions, 5.0, box, drop_self=True)
    assert edge_set(graph) == expected
    assert edge_set(radius_graph(positions, 5.0, box)) == expected
    receivers, senders, vectors, distances, inside = graph
    # the vectors are minimum-image r_receiver - r_sender; padded slots sit far outside the cutoff
    assert torch.all(distances[inside] < 5.0)
    assert torch.all(distances[~inside] > 100.0)
    delta = positions[receivers[inside]] - positions[senders[inside]]
    if box is not None:
        wrapped = torch.linalg.solve(box.T, (vectors[inside] - delta).T).T
        torch.testing.assert_close(wrapped, torch.round(wrapped), rtol=0, atol=1e-9)
    else:
        torch.testing.assert_close(vectors[inside], delta)


# (the triclinic test box is too small for an 18 A cutoff: periodic only at 9 A)
@pytest.mark.parametrize("periodic, cutoff", [(False, 9.0), (False, 18.0), (True, 9.0)])
def test_fragment_graph_excludes_own_fragment(periodic, cutoff):
    positions, box = random_box_positions(240, periodic, seed=1)
    fragments = torch.arange(240) // 4
    centres = fragment_centroids(positions, fragments, 60, box)
    _, graph, overflow = planned_graph(positions, centres, cutoff, box, fragments, False)
    assert not bool(overflow)
    assert edge_set(graph) == all_pairs(positions, centres, cutoff, box, exclude=fragments)


def test_overflow_is_flagged_when_atoms_crowd_together():
    positions, box = random_box_positions(200, False, seed=2)
    plan = plan_graph(positions, positions, 5.0, None, None, True)
    crowded = positions * 0.5  # 8x the density: more pairs than the capacity, fuller cells
    graph, overflow = build_graph(crowded, crowded, 5.0, None, None, True, *plan)
    assert bool(overflow)
    _, fresh, fresh_overflow = planned_graph(crowded, crowded, 5.0, None, None, True)
    assert not bool(fresh_overflow)
    assert len(edge_set(fresh)) > plan[4]  # more pairs than the old plan had slots


def module_pair(long_range: bool, periodic: bool, dtype=torch.float64, host_checks=True, **changes):
    positions, numbers, fragments = random_molecule(n_atoms=60, n_fragments=10, spread=7.0, seed=5)
    if not long_range:
        changes["num_long_layers"] = 0
    model = seeded_model(dtype, **changes)
    args = (model, numbers.tolist(), fragments.tolist(), 1.0, None, None, periodic, dtype)
    dynamic = OpenMMModule(*args, static_graphs=False)
    static = OpenMMModule(*args, static_graphs=True, host_checks=host_checks)
    box = torch.eye(3, dtype=torch.float64) * 4.0 if periodic else None  # nm; >= 2 x 18 A
    return dynamic, static, positions / 10.0, box


def energy_and_forces(module, positions_nm, box_nm):
    x = positions_nm.clone().requires_grad_(True)
    energy = module(x, box_nm)
    (gradient,) = torch.autograd.grad(energy, x)
    return energy.detach(), -gradient


@pytest.mark.parametrize("long_range", [True, False])
@pytest.mark.parametrize("periodic", [False, True])
def test_static_module_matches_dynamic_graphs(long_range, periodic):
    dynamic, static, positions, box = module_pair(long_range, periodic)
    assert static.static and not dynamic.static
    e_dyn, f_dyn = energy_and_forces(dynamic, positions, box)
    e_sta, f_sta = energy_and_forces(static, positions, box)
    torch.testing.assert_close(e_sta, e_dyn, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f_sta, f_dyn, rtol=1e-10, atol=1e-9)
    # and again after the atoms moved (same plan, new geometry)
    moved = positions + 0.01 * torch.sin(torch.arange(positions.numel(), dtype=torch.float64)).view(-1, 3)
    e_dyn, f_dyn = energy_and_forces(dynamic, moved, box)
    e_sta, f_sta = energy_and_forces(static, moved, box)
    torch.testing.assert_close(e_sta, e_dyn, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f_sta, f_dyn, rtol=1e-10, atol=1e-9)


# the dense layout has its own code (attention.dense_forward): every softmax variant, and the
# periodic case (edge vectors taken as given) besides the open one (one product over positions)
@pytest.mark.parametrize(
    "periodic, changes",
    [
        (False, {}),
        (True, {}),
        (False, {"long_attention": "sigmoid"}),
    ],
)
def test_long_range_cell_layout_matches_dense_layout(periodic, changes):
    """The (atom, fragment) graph as a packed cell-list edge list (many fragments) and as the
    dense atom x fragment grid (few fragments) give the same energy and forces."""
    dynamic, static, positions, box = module_pair(True, periodic, **changes)
    static.plan(positions, box)
    assert static.long_plan[0] == "dense"
    e_dense, f_dense = energy_and_forces(static, positions, box)
    coords, box_a = static.coordinates(positions, box)
    centres = fragment_centroids(coords, static.fragment_ids, static.num_fragments, box_a)
    static.long_plan = plan_graph(coords, centres, 18.0, box_a, static.fragment_ids, False, allow_dense=False)
    assert static.long_plan[0] == "cells"
    e_cells, f_cells = energy_and_forces(static, positions, box)
    torch.testing.assert_close(e_cells, e_dense, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f_cells, f_dense, rtol=1e-10, atol=1e-9)


def test_scripted_static_module_matches_eager():
    _, static, positions, _ = module_pair(True, False)
    scripted = torch.jit.script(static)
    e_eager, f_eager = energy_and_forces(static, positions, None)
    e_script, f_script = energy_and_forces(scripted, positions, None)
    torch.testing.assert_close(e_script, e_eager, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f_script, f_eager, rtol=1e-10, atol=1e-9)


def test_cpu_module_with_host_checks_pads_its_plan_less():
    """Re-planning is free on the CPU, so the plan keeps less head room there (host_growth)."""
    positions, numbers, fragments = random_molecule(n_atoms=300, n_fragments=30, spread=16.0, seed=3)
    model = seeded_model(torch.float64, num_long_layers=0)
    args = (model, numbers.tolist(), fragments.tolist(), 0.0, None, None, False, torch.float64)
    host = OpenMMModule(*args, host_checks=True)
    strict = OpenMMModule(*args, host_checks=False)
    host.plan(positions / 10.0)
    strict.plan(positions / 10.0)
    pairs = len(all_pairs(positions, positions, 5.0, None, drop_self=True))
    assert host.local_plan[0] == strict.local_plan[0] == "cells"
    assert host.local_plan[4] == math.ceil(1.05 * pairs) + 64
    assert strict.local_plan[4] == math.ceil(1.3 * pairs) + 64


def test_outgrown_plan_gives_nan_without_host_checks_and_replans_with_them():
    dynamic, strict, positions, _ = module_pair(True, False, host_checks=False)
    _, growing, _, _ = module_pair(True, False, host_checks=True)
    strict.plan(positions)
    growing.plan(positions)
    crowded = positions * 0.6
    energy, forces = energy_and_forces(strict, crowded, None)
    assert torch.isnan(energy)
    assert torch.isnan(forces).all()
    assert bool(strict.overflow)
    expected, expected_forces = energy_and_forces(dynamic, crowded, None)
    energy, forces = energy_and_forces(growing, crowded, None)
    torch.testing.assert_close(energy, expected, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(forces, expected_forces, rtol=1e-10, atol=1e-9)
    assert not bool(growing.overflow)


def test_nan_positions_give_nan_or_a_clear_error():
    _, strict, positions, _ = module_pair(True, False, host_checks=False)
    strict.plan(positions)
    bad = positions.clone()
    bad[7, 2] = float("nan")
    assert torch.isnan(strict(bad, None))  # no atom silently dropped from the graphs
    _, checked, _, _ = module_pair(True, False)
    checked.plan(positions)
    with pytest.raises(ValueError, match=r"NaN or infinite at atom indices \[7\]"):
        checked(bad, None)


def test_box_below_twice_the_cutoff_gives_nan_or_a_clear_error():
    _, strict, positions, box = module_pair(True, True, host_checks=False)
    strict.plan(positions, box)
    small = box * 0.8  # 3.2 nm < 2 x 1.8 nm
    assert torch.isnan(strict(positions, small))
    _, checked, _, _ = module_pair(True, True)
    with pytest.raises(ValueError, match="box too small"):
        checked(positions, small)


@pytest.mark.parametrize("long_range", [True, False])
@pytest.mark.parametrize("periodic", [False, True])
def test_no_graph_breaks(long_range, periodic):
    """Once planned, the module's forward is one graph for torch.compile (MACE's
    test_graph_breaks): no .item(), .tolist(), nonzero, masks or CPU neighbour lists."""
    _, static, positions, box = module_pair(long_range, periodic, dtype=torch.float32, host_checks=False)
    positions = positions.float()
    box = None if box is None else box.float()
    static.plan(positions, box)
    explanation = torch._dynamo.explain(static)(positions, box)
    reasons = [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1


def test_fullgraph_compile_gives_eager_energy_and_forces():
    """torch.compile(fullgraph=True, dynamic=False) of the planned module, forward and backward
    through AOTAutograd (the 'aot_eager' backend: the same graph capture as inductor, without
    minutes of C++ compilation on a CPU), equals the eager module."""
    torch._dynamo.reset()
    _, static, positions, _ = module_pair(True, False, host_checks=False)
    static.plan(positions)
    compiled = torch.compile(static, fullgraph=True, dynamic=False, backend="aot_eager")
    e_eager, f_eager = energy_and_forces(static, positions, None)
    e_comp, f_comp = energy_and_forces(compiled, positions, None)
    torch.testing.assert_close(e_comp, e_eager, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f_comp, f_eager, rtol=1e-10, atol=1e-9)


def saved_bytes(module, positions_nm, box_nm) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of one call (an
    outer saved_tensors_hooks sees what is kept outside recomputed blocks only)."""
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    x = positions_nm.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        energy = module(x, box_nm)
    torch.autograd.grad(energy, x)
    return sum(seen.values())


@pytest.mark.parametrize(
    "long_range, periodic, changes, pairs_per_chunk",
    [
        (True, False, {}, 1 << 16),
        (True, False, {}, 64),
        (True, True, {}, 64),
        (True, False, {"long_attention": "sigmoid"}, 64),
        (False, False, {}, 1 << 16),
    ],
)
def test_recompute_gives_the_same_energy_and_forces_and_keeps_less(
    long_range, periodic, changes, pairs_per_chunk, monkeypatch
):
    """Recomputing in the backward pass (network.recompute: local blocks whole, the dense
    long-range layers chunk by chunk of receivers, here one chunk or 10 chunks of 6 of the 60
    atoms) changes the memory, not the function: energy and forces equal the plain module's, and
    autograd keeps less outside the recomputed regions."""
    monkeypatch.setattr(network_module, "RECOMPUTE_PAIRS", pairs_per_chunk)
    chunks = []
    dense_rows = EquivariantAttention.dense_rows

    def counted(self, x, *args):
        chunks.append(x.shape[0])
        return dense_rows(self, x, *args)

    monkeypatch.setattr(EquivariantAttention, "dense_rows", counted)
    _, static, positions, box = module_pair(long_range, periodic, **changes)
    static.plan(positions, box)
    e_plain, f_plain = energy_and_forces(static, positions, box)
    kept_plain = saved_bytes(static, positions, box)
    static.model.recompute = True
    chunks.clear()
    e_re, f_re = energy_and_forces(static, positions, box)
    calls = list(chunks)
    kept_re = saved_bytes(static, positions, box)
    # recomputation may round differently (float64): equal to rounding
    torch.testing.assert_close(e_re, e_plain, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f_re, f_plain, rtol=1e-10, atol=1e-9)
    assert kept_re < 0.6 * kept_plain, (kept_re, kept_plain)
    if long_range:  # each chunk once forward and once recomputed, in both long-range layers
        rows = min(60, pairs_per_chunk // 10)
        per_layer = -(-60 // rows)
        assert len(calls) == 2 * 2 * per_layer and max(calls) == rows, calls
    # TorchScript (the TorchForce route) cannot recompute: the scripted module ignores the flag
    monkeypatch.undo()  # the counting wrapper is not scriptable
    scripted = torch.jit.script(static)
    e_script, f_script = energy_and_forces(scripted, positions, box)
    torch.testing.assert_close(f_script, f_plain, rtol=1e-10, atol=1e-9)


def test_module_pickled_before_recompute_existed_still_runs():
    """A PythonForce pickles its module: Systems saved before ``recompute`` existed load with
    it off."""
    _, static, positions, _ = module_pair(True, False)
    del static.model.__dict__["recompute"]
    buffer = io.BytesIO()
    torch.save(static, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert loaded.model.recompute is False
    e_loaded, _ = energy_and_forces(loaded, positions, None)
    static.model.recompute = False
    e_static, _ = energy_and_forces(static, positions, None)
    torch.testing.assert_close(e_loaded, e_static, rtol=1e-14, atol=0.0)


def test_recompute_compiles_without_graph_breaks_and_matches_eager():
    torch._dynamo.reset()
    _, static, positions, _ = module_pair(True, False, host_checks=False)
    static.plan(positions)
    e_eager, f_eager = energy_and_forces(static, positions, None)
    static.model.recompute = True
    explanation = torch._dynamo.explain(static)(positions, None)
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    compiled = torch.compile(static, fullgraph=True, dynamic=False, backend="aot_eager")
    e_comp, f_comp = energy_and_forces(compiled, positions, None)
    torch.testing.assert_close(e_comp, e_eager, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f_comp, f_eager, rtol=1e-10, atol=1e-9)
