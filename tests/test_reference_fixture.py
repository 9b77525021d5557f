"""Our network against the authors' reference fixture (see tests/fixtures/PROVENANCE.md); the
network is ``reference_network`` (conftest.py), loaded once per session."""

import os

import numpy as np
import pytest
import torch
from model_helpers import REFERENCE_FIXTURE as FIXTURE

# Stage names in the fixture that our network records under the same name.
STAGES = [
    "embed_proj_out",
    "atom_embedding",
    "edge_degree_embedding",
    "local_block_0_in",
    "local_block_0_out",
    "local_block_1_out",
    "local_block_2_out",
    "local_block_3_out",
    "norm_final_out",
    "cluster_attn_0_in",
    "cluster_attn_0_out",
    "norm_ffn_0_in",
    "cluster_attn_1_out",
    "final_linear_out",
]


def load_molecule(name):
    data = np.load(os.path.join(FIXTURE, name))
    inputs = dict(
        positions=torch.tensor(data["positions"]),
        atomic_numbers=torch.tensor(data["atomic_numbers"]),
        fragment_ids=torch.tensor(data["cluster_ids"]),
        charge=torch.tensor(float(data["charge"])),
        centres=torch.tensor(data["cluster_centers"]),
    )
    return inputs, data


def energy_and_forces(model, inputs, fixed_centres=True):
    positions = inputs["positions"].clone().requires_grad_(True)
    centres = inputs["centres"] if fixed_centres else None
    energy = model(
        positions, inputs["atomic_numbers"], inputs["fragment_ids"], inputs["charge"], None, centres
    )
    (grad,) = torch.autograd.grad(energy, positions)
    return float(energy), -grad.double().numpy()


@pytest.mark.parametrize("name", ["mol1.npz", "mol1_rot_trans.npz"])
def test_energy_and_forces_match_reference(reference_network, name):
    inputs, data = load_molecule(name)
    energy, forces = energy_and_forces(reference_network, inputs)
    assert abs(energy - float(data["energy"][0])) <= 1e-5 * abs(float(data["energy"][0]))
    scale = np.abs(data["forces"]).max()
    assert np.abs(forces - data["forces"]).max() <= 1e-4 * scale


def test_intermediate_tensors_match_reference(reference_network):
    inputs, _ = load_molecule("mol1.npz")
    stages_ref = np.load(os.path.join(FIXTURE, "mol1_intermediates.npz"))
    with torch.no_grad():
        _, stages = reference_network.features(
            inputs["positions"],
            inputs["atomic_numbers"],
            inputs["fragment_ids"],
            inputs["charge"],
            None,
            inputs["centres"],
            True,
        )
    for name in STAGES:
        ref = torch.tensor(stages_ref[name]).reshape(stages[name].shape)
        err = float((stages[name] - ref).abs().max())
        assert err <= 1e-5 * float(ref.abs().max()) + 1e-6, f"{name}: max error {err}"
    per_atom = reference_network.per_atom_energies(
        inputs["positions"],
        inputs["atomic_numbers"],
        inputs["fragment_ids"],
        inputs["charge"],
        None,
        inputs["centres"],
    )
    expected = torch.tensor(stages_ref["per_atom_energy_padded"]).reshape(-1)
    assert float((per_atom.detach() - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def test_differentiable_centres_give_zero_net_force(reference_network):
    """Our OpenMM path computes centres from positions: exact gradient, zero net force.

    The fixture's own net force is not zero (centres held fixed); the difference from the
    fixed-centre forces stays small (the fixture README quotes 1.5 % of max |F|).
    """
    inputs, data = load_molecule("mol1.npz")
    _, forces = energy_and_forces(reference_network, inputs, fixed_centres=False)
    scale = np.abs(data["forces"]).max()
    assert np.abs(forces.sum(axis=0)).max() <= 1e-5 * scale
    assert np.abs(data["forces"].sum(axis=0)).max() > 1e-4  # the reference does not conserve momentum
    assert np.abs(forces - data["forces"]).max() <= 0.05 * scale


def test_full_size_key_list_converts_to_the_paper_configuration():
    """The authors' full-size checkpoint layout (key/shape list in the fixture) maps onto our
    network with the paper's widths, every used tensor accounted for."""
    from openmmml_e2former.checkpoints import build_model, convert_reference_state_dict
    from openmmml_e2former.model import paper_config

    state = {}
    for line in open(os.path.join(FIXTURE, "lsr_full_state_dict_keys.txt")):
        key, shape, _ = line.rstrip("\n").split("\t")
        state[key] = torch.zeros(eval(shape))  # shapes like "(256, 384)"
    state["decoder.decoder.rbf.offset"] = torch.linspace(0, 5, 256)
    state["decoder.decoder.rbf_cluster.offset"] = torch.linspace(0, 18, 256)
    config, ours = convert_reference_state_dict(state)
    model = build_model(config, ours, "full-size key list")
    paper = paper_config()
    widths = ("channels", "lmax", "num_local_layers", "num_long_layers", "num_heads", "head_dim", "num_basis")
    for name in widths:
        assert getattr(config, name) == getattr(paper, name), name
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(p.numel() for p in type(model)(paper).parameters())
