"""Write ``ace_ala_nme.pdb``: the capped peptide ACE-ALA-ALA-NME, hydrogens included.

Run once from anywhere: ``python tests/data/make_ace_ala_nme.py``. The output is
committed; tests only need its topology, so the geometry is simply an ideal
backbone (trans peptide bonds, alpha-helical phi/psi) built from internal
coordinates, with hydrogens added by ``Modeller.addHydrogens`` and the result
checked against the Amber14 force field templates.
"""

from __future__ import annotations

import os

import numpy as np
import openmm.app as app
import openmm.unit as unit

from openmmml_e2former.data.peptides import place  # internal coordinates -> Cartesian (Å)

# Bond lengths (Å) and angles (degrees) of an ideal peptide backbone.
N_CA, CA_C, C_N, C_O, CA_CB, CH3_C = 1.46, 1.52, 1.33, 1.23, 1.53, 1.52
ANGLE_C_N_CA, ANGLE_N_CA_C, ANGLE_CA_C_N, ANGLE_O, ANGLE_CB = 121.7, 111.0, 116.2, 123.0, 110.5
PHI, PSI, OMEGA = -60.0, -45.0, 180.0


def heavy_atoms() -> list[tuple[str, str, str, np.ndarray]]:
    """(residue label, atom name, element symbol, position in Å) for every heavy atom.

    Residue labels are ``ACE``, ``ALA1``, ``ALA2``, ``NME``, in chain order.
    """
    xyz: dict[str, np.ndarray] = {}
    xyz["ACE CH3"] = np.zeros(3)
    xyz["ACE C"] = np.array([CH3_C, 0.0, 0.0])
    xyz["ALA1 N"] = place(np.array([0.0, 1.0, 0.0]), xyz["ACE CH3"], xyz["ACE C"], C_N, ANGLE_CA_C_N, 180.0)
    chain = ["ACE CH3", "ACE C", "ALA1 N"]
    for res, nxt in (("ALA1", "ALA2"), ("ALA2", "NME")):
        a, b, c = (xyz[k] for k in chain[-3:])
        xyz[f"{res} CA"] = place(a, b, c, N_CA, ANGLE_C_N_CA, OMEGA)
        xyz[f"{res} C"] = place(b, c, xyz[f"{res} CA"], CA_C, ANGLE_N_CA_C, PHI)
        xyz[f"{nxt} N"] = place(c, xyz[f"{res} CA"], xyz[f"{res} C"], C_N, ANGLE_CA_C_N, PSI)
        chain += [f"{res} CA", f"{res} C", f"{nxt} N"]
    a, b, c = (xyz[k] for k in chain[-3:])
    xyz["NME C"] = place(a, b, c, N_CA, ANGLE_C_N_CA, OMEGA)

    # Carbonyl oxygens sit cis to the next CA (trans peptide); CB on the L side.
    xyz["ACE O"] = place(xyz["ALA1 CA"], xyz["ALA1 N"], xyz["ACE C"], C_O, ANGLE_O, 0.0)
    for res, nxt in (("ALA1", "ALA2"), ("ALA2", "NME")):
        nxt_ca = xyz[f"{nxt} CA"] if nxt != "NME" else xyz["NME C"]
        xyz[f"{res} O"] = place(nxt_ca, xyz[f"{nxt} N"], xyz[f"{res} C"], C_O, ANGLE_O, 0.0)
        xyz[f"{res} CB"] = place(xyz[f"{res} C"], xyz[f"{res} N"], xyz[f"{res} CA"], CA_CB, ANGLE_CB, -122.5)

    order = {
        "ACE": ["CH3", "C", "O"],
        "ALA1": ["N", "CA", "C", "O", "CB"],
        "ALA2": ["N", "CA", "C", "O", "CB"],
        "NME": ["N", "C"],
    }
    atoms = []
    for res, names in order.items():
        for name in names:
            atoms.append((res, name, name[0], xyz[f"{res} {name}"]))
    return atoms


def build_topology() -> tuple[app.Topology, list]:
    """Heavy-atom topology (standard bonds created) and positions in nm."""
    topology = app.Topology()
    chain = topology.addChain("A")
    positions = []
    residues: dict[str, app.Residue] = {}
    for label, atom_name, symbol, pos in heavy_atoms():
        if label not in residues:
            residues[label] = topology.addResidue(label.rstrip("12"), chain)
        residue = residues[label]
        topology.addAtom(atom_name, app.Element.getBySymbol(symbol), residue)
        positions.append(pos / 10.0)
    topology.createStandardBonds()
    return topology, unit.Quantity(positions, unit.nanometer)


def main() -> None:
    topology, positions = build_topology()
    forcefield = app.ForceField("amber14-all.xml")
    modeller = app.Modeller(topology, positions)
    modeller.addHydrogens(forcefield)
    forcefield.createSystem(modeller.topology)  # fails if any template does not match
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ace_ala_nme.pdb")
    with open(out, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle)
    print(
        f"wrote {out}: {modeller.topology.getNumAtoms()} atoms, "
        f"residues {[r.name for r in modeller.topology.residues()]}"
    )


if __name__ == "__main__":
    main()
