"""What the OpenMM module keeps for the backward pass (docs/speed.md, "What autograd keeps").

Two choices cut what autograd stores for the force without changing the function: a frozen
copy of the network (no inputs kept for weight gradients) and sums onto atoms by
``index_put(accumulate=True)`` (``index_add`` keeps its whole source tensor).
"""

from __future__ import annotations

import io

import torch

from openmmml_e2former.export import OpenMMModule
from openmmml_e2former.model.layers import scatter_sum


def _saved_storages(fn) -> tuple[dict[int, tuple[int, ...]], torch.Tensor]:
    """Run ``fn()``; return ({storage pointer: shape} of every tensor autograd saved, its result)."""
    saved: dict[int, tuple[int, ...]] = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tuple(tensor.shape)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return saved, out


def test_scatter_sum_adds_rows_and_keeps_only_the_index():
    torch.manual_seed(0)
    src = torch.randn(50, 9, 4, dtype=torch.float64)
    index = torch.randint(0, 7, (50,))
    expected = torch.zeros(7, 9, 4, dtype=torch.float64)
    for e in range(50):  # the sum written out
        expected[index[e]] += src[e]

    leaf = src.clone().requires_grad_(True)
    scaled = leaf * 2.0  # a non-leaf source, as in the network
    saved, out = _saved_storages(lambda: scatter_sum(scaled, index, 7))
    torch.testing.assert_close(out, 2.0 * expected, rtol=0, atol=1e-13)
    assert list(saved.values()) == [(50, 36)], saved  # the index (a broadcast view of [50]) only
    assert next(iter(saved)) == index.untyped_storage().data_ptr()

    # the gradient, by finite differences
    weights = torch.randn(7, 9, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: (scatter_sum(s, index, 7) * weights).sum(), (leaf,))

    empty = scatter_sum(torch.zeros(0, 9, 4), torch.zeros(0, dtype=torch.long), 3)  # no edges
    assert empty.shape == (3, 9, 4) and not empty.any()

    # index_add, the obvious way, keeps the source: what scatter_sum avoids
    zeros = torch.zeros(7, 9, 4, dtype=torch.float64)
    saved_add, _ = _saved_storages(lambda: zeros.index_add(0, index, scaled))
    assert (50, 9, 4) in saved_add.values()


def test_openmm_module_freezes_a_copy_and_saves_no_weight_inputs(cached_seeded_model, villin_inputs):
    network = cached_seeded_model(torch.float64)
    trainable = [p.requires_grad for p in network.parameters()]
    positions, numbers, fragments = villin_inputs
    chosen = list(range(120))  # the first 120 atoms: caps do not matter for this check
    inputs = (numbers[chosen].tolist(), _renumber(fragments[chosen]))
    module = OpenMMModule(network, *inputs, dtype=torch.float64)
    assert [p.requires_grad for p in network.parameters()] == trainable  # the caller's is untouched
    assert module.model is not network
    as_float32 = OpenMMModule(network, *inputs, dtype=torch.float32)  # converts its copy only
    assert next(network.parameters()).dtype == torch.float64
    assert next(as_float32.model.parameters()).dtype == torch.float32
    assert not any(p.requires_grad for p in module.parameters())

    x_nm = (positions[chosen] / 10.0).clone().requires_grad_(True)
    frozen_saved, energy = _saved_storages(lambda: module(x_nm))
    (grad,) = torch.autograd.grad(energy, x_nm)

    # the same function with trainable parameters, for comparison: more is kept, same forces
    open_module = OpenMMModule(network, *inputs, dtype=torch.float64)
    open_module.model.requires_grad_(True)
    y_nm = x_nm.detach().clone().requires_grad_(True)
    open_saved, open_energy = _saved_storages(lambda: open_module(y_nm))
    (open_grad,) = torch.autograd.grad(open_energy, y_nm)
    torch.testing.assert_close(energy, open_energy, rtol=0, atol=1e-9)
    torch.testing.assert_close(grad, open_grad, rtol=0, atol=1e-9)
    assert len(frozen_saved) < len(open_saved)

    # a TorchScript file (what openmm-torch loads) keeps the parameters frozen
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    buffer.seek(0)
    assert not any(p.requires_grad for p in torch.jit.load(buffer).parameters())


def _renumber(fragments: torch.Tensor) -> list[int]:
    """Fragment ids of a subset, renumbered 0..F-1 in order of appearance."""
    order: dict[int, int] = {}
    return [order.setdefault(int(f), len(order)) for f in fragments]
