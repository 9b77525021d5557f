"""Ligands from a complex's PDB file and a SMILES (simulate/ligand.py) on a real complex that
ships in a package: MCL1 with ligand 26 of the JACS benchmark set in openmmforcefields.

Independent references: the package's own SDF of the ligand (its hydrogens and charge), RDKit's
MMFF94 torsion energy, OpenMM's classical energies."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from openmmml_e2former.simulate.complexes import TARGETS, jacs_folder, write_complex
from openmmml_e2former.simulate.ligand import LigandSpec, openmm_vec, prepare_ligand

RES = "L26"


@pytest.fixture(scope="module")
def mcl1(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mcl1")
    path = str(folder / "mcl1-26.pdb")
    smiles = write_complex("mcl1", "26", path, RES)
    return path, smiles, folder


@pytest.fixture(scope="module")
def prepared(mcl1):
    path, smiles, folder = mcl1
    return prepare_ligand(path, LigandSpec(RES, smiles=smiles), str(folder / "run"))


def _packaged_ligand(name: str):
    from rdkit import Chem

    sdf = os.path.join(jacs_folder("mcl1"), TARGETS["mcl1"][1])
    return next(m for m in Chem.SDMolSupplier(sdf, removeHs=False) if m and m.GetProp("_Name") == name)


def test_hydrogens_and_charge_from_the_smiles_match_the_packaged_ligand(mcl1, prepared):
    """The PDB holds heavy atoms only; the protonated ligand has the hydrogens and charge of the
    package's own SDF of ligand 26, and its heavy atoms stay where the PDB put them."""
    import openmm.app as app
    from rdkit import Chem

    reference = _packaged_ligand("26")
    mol = Chem.MolFromMolFile(prepared.sdf_path, removeHs=False)
    count = lambda m, z: sum(a.GetAtomicNum() == z for a in m.GetAtoms())  # noqa: E731
    assert mol.GetNumAtoms() == reference.GetNumAtoms() == 43
    assert count(mol, 1) == count(reference, 1) == 17
    assert Chem.GetFormalCharge(mol) == Chem.GetFormalCharge(reference) == -1
    assert prepared.record["net_charge"] == -1
    assert prepared.record["mm_charge_sum"] == pytest.approx(-1.0, abs=1e-5)
    pdb = app.PDBFile(mcl1[0])
    heavy = [a.index for a in pdb.topology.atoms() if a.residue.name == RES]
    xyz = np.array(pdb.getPositions(asNumpy=True)._value)[heavy] * 10.0
    np.testing.assert_allclose(mol.GetConformer().GetPositions()[: len(heavy)], xyz, atol=1e-3)
    bonded = np.array(
        [
            [b.GetBeginAtomIdx(), b.GetEndAtomIdx()]
            for b in mol.GetBonds()
            if b.GetEndAtom().GetAtomicNum() == 1
        ]
    )
    lengths = np.linalg.norm(np.diff(mol.GetConformer().GetPositions()[bonded], axis=1)[:, 0], axis=1)
    assert lengths.min() > 0.9 and lengths.max() < 1.15  # X-H bonds of a sane geometry


def test_the_complex_file_keeps_the_packaged_protein_and_pose(mcl1):
    """write_complex: the protein where the package's PDB has it, the ligand's heavy atoms where
    the package's SDF has them (Modeller once scaled the protein by 10 when units were mixed)."""
    import openmm.app as app

    written = app.PDBFile(mcl1[0])
    protein = app.PDBFile(os.path.join(jacs_folder("mcl1"), TARGETS["mcl1"][0]))
    xyz = written.getPositions(asNumpy=True)._value
    n = protein.topology.getNumAtoms()
    np.testing.assert_allclose(xyz[:n], protein.getPositions(asNumpy=True)._value, atol=1e-3)
    heavy = [a for a in _packaged_ligand("26").GetAtoms() if a.GetAtomicNum() > 1]
    pose = _packaged_ligand("26").GetConformer().GetPositions()[[a.GetIdx() for a in heavy]] / 10.0
    np.testing.assert_allclose(xyz[n:], pose, atol=1e-3)
    assert [a.residue.name for a in written.topology.atoms()][n:] == [RES] * len(heavy)


def test_restart_reads_the_cached_parameters_and_other_input_is_refused(mcl1, prepared):
    path, smiles, folder = mcl1
    before = os.path.getmtime(prepared.xml_path)
    again = prepare_ligand(path, LigandSpec(RES, smiles=smiles), str(folder / "run"))
    assert again.record == prepared.record and os.path.getmtime(again.xml_path) == before
    with pytest.raises(ValueError, match="other input"):
        prepare_ligand(path, LigandSpec(RES, smiles=smiles.replace("[O-]", "O")), str(folder / "run"))


@pytest.mark.parametrize(
    "smiles, message",
    [
        ("O=C([O-])c1oc2cc(Cl)ccc2c1CCCOc1cccc2ccccc12", r"template minus file: Cl \+1"),
        ("O=C([O-])c1oc2ccccc2c1CCCOc1cccc2cccc(O)c12", r"O \+1"),
        ("O=C([O-])c1oc2ccccc2c1CCOCc1cccc2ccccc12", "bonds found from the structure"),  # isomer
        ("C1CC(", "cannot parse the SMILES"),
    ],
)
def test_a_smiles_that_does_not_match_the_pdb_is_refused(mcl1, tmp_path, smiles, message):
    with pytest.raises(ValueError, match=message):
        prepare_ligand(mcl1[0], LigandSpec(RES, smiles=smiles), str(tmp_path))
    assert not os.path.exists(tmp_path / "ligand" / f"{RES}.xml")


def test_a_ligand_not_in_the_file_is_refused_with_what_is_there(mcl1, tmp_path):
    with pytest.raises(ValueError, match=rf"'XK2' not found in .*\['{RES}'\]"):
        prepare_ligand(mcl1[0], LigandSpec("XK2", smiles="CCO"), str(tmp_path))


def test_sdf_template_gives_the_same_ligand(mcl1, prepared, tmp_path):
    from rdkit import Chem

    sdf = str(tmp_path / "lig.sdf")
    writer = Chem.SDWriter(sdf)
    writer.write(_packaged_ligand("26"))
    writer.close()
    other = prepare_ligand(mcl1[0], LigandSpec(RES, sdf=sdf), str(tmp_path / "run"))
    assert other.record["smiles"] == prepared.record["smiles"]
    assert open(other.xml_path).read() == open(prepared.xml_path).read()


def _ligand_context(xml: str, prepared, forces=None):
    import openmm
    import openmm.app as app

    topology, positions = prepared.topology()
    system = app.ForceField(xml).createSystem(topology, nonbondedMethod=app.NoCutoff)
    for i, force in enumerate(system.getForces()):
        force.setForceGroup(i)
    context = openmm.Context(
        system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(positions)
    return system, context


def test_torsions_equal_rdkit_mmff94(prepared):
    """The XML's PeriodicTorsionForce is MMFF94's torsion term exactly: RDKit's MMFF94 with only
    that term switched on gives the same energy at the ligand's pose."""
    import openmm
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromMolFile(prepared.sdf_path, removeHs=False)
    props = AllChem.MMFFGetMoleculeProperties(mol)
    for term in ("Bond", "Angle", "StretchBend", "Oop", "VdW", "Ele"):
        getattr(props, f"SetMMFF{term}Term")(False)
    expected = AllChem.MMFFGetMoleculeForceField(mol, props).CalcEnergy() * 4.184
    system, context = _ligand_context(prepared.xml_path, prepared)
    group = next(i for i, f in enumerate(system.getForces()) if isinstance(f, openmm.PeriodicTorsionForce))
    energy = context.getState(getEnergy=True, groups={group}).getPotentialEnergy()._value
    assert abs(expected) > 1.0
    assert energy == pytest.approx(expected, rel=1e-5, abs=1e-4)


def _scaled_xml(path: str, out: str, bonded: float = 1.0, moved: float = 0.0) -> str:
    """A copy of the ligand's XML with every bonded force constant times ``bonded`` and charge
    ``moved`` (e) moved from its last atom to its first (the total, which the potential sees,
    stays the same)."""
    import xml.etree.ElementTree as ET

    tree = ET.parse(path)
    for tag, keys in (("Bond", ("k",)), ("Angle", ("k",)), ("Proper", ("k1", "k2", "k3"))):
        for node in tree.iter(tag):
            for key in keys:
                if key in node.attrib:
                    node.set(key, str(float(node.get(key)) * bonded))
    atoms = list(tree.getroot().find("Residues").iter("Atom"))
    for node, delta in ((atoms[0], moved), (atoms[-1], -moved)):
        node.set("charge", str(float(node.get("charge")) + delta))
    tree.write(out)
    return out


def test_in_the_ml_region_only_the_ligands_nonbonded_terms_act(mcl1, prepared, tmp_path):
    """Protein + ligand in vacuum, ML region = the ligand: scaling the ligand's MM bonds, angles
    and torsions changes the classical energy but not the ML/MM energy; moving charge between
    two of its atoms (same total) changes both (its charges act on the MM protein)."""
    import openmm
    import openmm.app as app
    from openmmml import MLPotential

    pdb = app.PDBFile(mcl1[0])
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for r in modeller.topology.residues() if r.name == RES])
    modeller.add(*prepared.topology())
    potential = MLPotential("e2former-lsr")
    energies = {}
    for name, kwargs in (("base", {}), ("bonded", {"bonded": 3.0}), ("charge", {"moved": 0.2})):
        xml = _scaled_xml(prepared.xml_path, str(tmp_path / f"{name}.xml"), **kwargs)
        forcefield = app.ForceField("amber14-all.xml", xml)
        mm = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff)
        ligand = [a.index for a in modeller.topology.atoms() if a.residue.name == RES]
        mixed = potential.createMixedSystem(modeller.topology, mm, ligand)
        for label, system in (("mm", mm), ("mixed", mixed)):
            context = openmm.Context(
                system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("CPU")
            )
            context.setPositions(modeller.positions)
            energies[name, label] = context.getState(getEnergy=True).getPotentialEnergy()._value
    assert abs(energies["bonded", "mm"] - energies["base", "mm"]) > 10.0
    assert energies["bonded", "mixed"] == pytest.approx(energies["base", "mixed"], abs=1e-3)
    assert abs(energies["charge", "mixed"] - energies["base", "mixed"]) > 1.0


def _quick(protocol, ml_cutoff_nm: float = 0.3):
    """The preset's quick version: its stages with a few steps, a smaller pocket."""
    protocol.prepare["padding_nm"] = 0.8
    protocol.ml["selection"] = f"ligand or (protein and residues within {ml_cutoff_nm} of ligand)"
    for stage in protocol.stages:
        if stage["type"] == "minimize":
            stage["max_iterations"] = 5 if stage["forces"] == "mixed" else 50
        else:
            stage.update(steps=10, report_interval=5, trajectory_interval=5, checkpoint_interval=10)
            stage["schedule_interval"] = 5
    return protocol


def test_ligand_in_pocket_quick_run_on_mcl1(mcl1, tmp_path):
    """The preset end to end on the real complex (quick version): the ligand is protonated and
    parameterised once, sits in the ML region as one fragment, and the report tracks its pose."""
    import json

    from openmmml_e2former.analysis.report import analyze_run
    from openmmml_e2former.simulate import load_protocol, run_protocol

    path, smiles, _ = mcl1
    protocol = _quick(load_protocol("ligand-in-pocket"))
    protocol.ligand.update(resname=RES, smiles=smiles)
    folder = str(tmp_path / "run")
    run_protocol(protocol, path, folder, progress=False)
    ml = json.load(open(os.path.join(folder, "ml_region.json")))
    assert ml["ligand"] == RES
    assert ml["summary"]["ligand"]["n_atoms"] == 43 and ml["summary"]["ligand"]["fragment_sizes"] == [43]
    final = open(os.path.join(folder, "final.pdb")).read().splitlines()
    assert sum(1 for line in final if line.startswith("HETATM") and line[17:20] == RES) == 43
    summary = analyze_run(folder)
    assert summary["ligand"] == RES
    assert 0.0 <= summary["rmsd_ligand"]["max"] < 2.0  # a few restrained steps: the pose holds
    xml_time = os.path.getmtime(os.path.join(folder, "ligand", f"{RES}.xml"))
    run_protocol(protocol, path, folder, progress=False)  # a rerun resumes: nothing is redone
    assert os.path.getmtime(os.path.join(folder, "ligand", f"{RES}.xml")) == xml_time


def _fluorinated_tyk2(tmp_path):
    """(complex PDB path, ligand-in-pocket protocol) for the first Tyk2 ligand with fluorine."""
    from rdkit import Chem

    from openmmml_e2former.simulate import load_protocol

    sdf = os.path.join(jacs_folder("tyk2"), TARGETS["tyk2"][1])
    mols = Chem.SDMolSupplier(sdf)
    fluorinated = (m for m in mols if m and any(a.GetSymbol() == "F" for a in m.GetAtoms()))
    path = str(tmp_path / "tyk2.pdb")
    smiles = write_complex("tyk2", next(fluorinated).GetProp("_Name"), path, "LIG")
    protocol = load_protocol("ligand-in-pocket")
    protocol.ligand.update(resname="LIG", smiles=smiles)
    return path, protocol


def test_unsupported_ligand_element_stops_before_preparation(tmp_path):
    """A fluorinated Tyk2 ligand in the ML region: the shipped potential has no F, so the run
    stops naming the element before pdbfixer or any stage runs."""
    from openmmml_e2former.simulate import run_protocol

    path, protocol = _fluorinated_tyk2(tmp_path)
    folder = tmp_path / "run"
    with pytest.raises(ValueError, match=r"ligand LIG contains .*F.* does not support"):
        run_protocol(protocol, path, str(folder), progress=False)
    assert not (folder / "prepared.pdb").exists() and not (folder / "stages").exists()


def test_the_word_ligand_needs_a_ligand(tmp_path):
    from openmmml_e2former.simulate import load_protocol, run_protocol

    pdb = os.path.join(os.path.dirname(__file__), "data", "ace_ala_nme.pdb")
    with pytest.raises(ValueError, match="names 'ligand', but no ligand is given"):
        run_protocol(load_protocol("ligand-in-pocket"), pdb, str(tmp_path / "run"), progress=False)


def test_command_line_ligand_errors_stop_before_any_simulation(mcl1, tmp_path, capsys):
    """``e2former run ligand-in-pocket`` with bad ligand input: exit code 2 and one line naming
    the cause; no prepared structure, no stage."""
    from openmmml_e2former.cli import main

    path, smiles, _ = mcl1
    cases = [
        (
            ["--ligand", RES, "--ligand-smiles", smiles.replace("[O-]", "Cl")],
            r"template minus file: Cl \+1, O -1",
        ),
        (["--ligand-smiles", smiles], "smiles/sdf need resname"),
        (["--ligand", "XK2", "--ligand-smiles", smiles], "'XK2' not found"),
        (["--ligand", RES, "--ligand-sdf", str(tmp_path / "missing.sdf")], "file not found"),
    ]
    for k, (extra, message) in enumerate(cases):
        folder = tmp_path / f"run{k}"
        code = main(["run", "ligand-in-pocket", "--pdb", path, "-o", str(folder), "--no-progress", *extra])
        assert code == 2
        err = capsys.readouterr().err
        assert "e2former run: error:" in err and re.search(message, err), err
        assert not (folder / "prepared.pdb").exists() and not (folder / "stages").exists()


def test_complex_command_writes_the_file_and_prints_the_run_command(tmp_path, capsys):
    from openmmml_e2former.cli import main

    out = tmp_path / "c.pdb"
    assert main(["complex", "mcl1", "26", "-o", str(out), "--resname", RES]) == 0
    text = capsys.readouterr().out
    assert out.exists() and "SMILES: O=C([O-])c1oc2ccccc2c1CCCOc1cccc2ccccc12" in text
    assert f"--ligand {RES} --ligand-smiles" in text


def test_ligand_hydrogens_in_the_file_and_mmcif_input_give_the_same_ligand(mcl1, prepared, tmp_path):
    """A PDB whose ligand carries its hydrogens (as the package's SDF has them), and the complex
    as mmCIF: the file's hydrogens are replaced by the template's, and the result is the same
    molecule as from the heavy-atom PDB."""
    import openmm.app as app
    import openmm.unit as unit
    from rdkit import Chem

    path, smiles, _ = mcl1
    pdb = app.PDBFile(path)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for r in modeller.topology.residues() if r.name == RES])
    ligand = _packaged_ligand("26")
    topology = app.Topology()
    residue = topology.addResidue(RES, topology.addChain("L"))
    for k, atom in enumerate(ligand.GetAtoms()):
        topology.addAtom(f"{atom.GetSymbol()}{k + 1}", app.Element.getBySymbol(atom.GetSymbol()), residue)
    xyz = ligand.GetConformer().GetPositions() / 10.0
    modeller.add(topology, [openmm_vec(p) for p in xyz] * unit.nanometer)
    with_h = str(tmp_path / "with-h.pdb")
    with open(with_h, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle)
    cif = str(tmp_path / "complex.cif")
    with open(cif, "w") as handle:
        app.PDBxFile.writeFile(pdb.topology, pdb.positions, handle)
    for source, hydrogens in ((with_h, 17), (cif, 0)):
        other = prepare_ligand(
            source, LigandSpec(RES, smiles=smiles), str(tmp_path / ("run-" + os.path.basename(source)))
        )
        assert other.record["found"]["hydrogens_in_file"] == hydrogens
        assert other.record["smiles"] == prepared.record["smiles"]
        assert other.record["formula"] == prepared.record["formula"] == "C22H17O4"
        mol = Chem.MolFromMolFile(other.sdf_path, removeHs=False)
        reference = Chem.MolFromMolFile(prepared.sdf_path, removeHs=False)
        heavy = [a.GetIdx() for a in reference.GetAtoms() if a.GetAtomicNum() > 1]
        np.testing.assert_allclose(
            np.sort(mol.GetConformer().GetPositions()[heavy], axis=0),
            np.sort(reference.GetConformer().GetPositions()[heavy], axis=0),
            atol=1e-3,
        )


def test_prepare_command_with_a_ligand(mcl1, tmp_path, capsys):
    """``e2former prepare --ligand ... --ligand-smiles ...``: the prepared structure holds the
    protonated ligand, its charge counts in the neutralisation, its parameters are in ligand/."""
    import openmm.app as app

    from openmmml_e2former.cli import main

    path, smiles, _ = mcl1
    out = tmp_path / "prep"
    args = ["prepare", "--pdb", path, "--protocol", "ligand-in-pocket", "-o", str(out)]
    assert main([*args, "--ligand", RES, "--ligand-smiles", smiles]) == 0
    assert f"ligand {RES}" in capsys.readouterr().out
    prepared = app.PDBFile(str(out / "prepared.pdb"))
    assert sum(a.residue.name == RES for a in prepared.topology.atoms()) == 43
    report = json.load(open(out / "prepare.json"))
    assert report["solute_net_charge"] == 3 and report["ligand"]["net_charge"] == -1  # MCL1 +4, ligand -1
    assert (out / "ligand" / f"{RES}.xml").exists()


def test_the_element_check_follows_what_the_selection_takes(tmp_path):
    """A fluorinated ligand is refused only when the ML selection (evaluated on the input) takes
    its atoms: 'protein' or 'protein and not (resname LIG)' leave it classical and pass."""
    from openmmml_e2former.simulate.engine import check_ligand_input

    path, protocol = _fluorinated_tyk2(tmp_path)
    for selection in ("protein", "protein and not (resname LIG)", "none"):
        check_ligand_input(protocol, path, selection)
    for selection in ("(resname LIG) or protein", "all", "residues within 0.5 of (resname LIG)"):
        with pytest.raises(ValueError, match="contains .*F"):
            check_ligand_input(protocol, path, selection)


def test_a_ligand_given_by_name_only_is_kept_with_its_own_force_field_file(mcl1, prepared, tmp_path):
    """No SMILES/SDF: the residue stays in the structure (with its hydrogens, as in the file) and
    the force field files listed in the protocol parameterise it."""
    import openmm.app as app

    from openmmml_e2former.simulate import load_protocol
    from openmmml_e2former.simulate.engine import prepare_into
    from openmmml_e2former.simulate.protocol import check_ligand

    with_h = str(tmp_path / "with-h.pdb")
    pdb = app.PDBFile(mcl1[0])
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for r in modeller.topology.residues() if r.name == RES])
    modeller.add(*prepared.topology())
    with open(with_h, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle)
    protocol = load_protocol("ligand-in-pocket")
    protocol.ligand["resname"] = RES
    protocol.system["forcefield"] = ["amber14-all.xml", "amber14/tip3pfb.xml", prepared.xml_path]
    protocol.prepare.update(padding_nm=0.8, box_shape="cube")
    folder = tmp_path / "run"
    folder.mkdir()
    prepare_into(str(folder), protocol, with_h, has_ml=True)
    kept = app.PDBFile(str(folder / "prepared.pdb"))
    assert sum(a.residue.name == RES for a in kept.topology.atoms()) == 43
    with pytest.raises(ValueError, match="1-3 characters"):
        check_ligand({"resname": "LIGX", "smiles": None, "sdf": None}, "test")


@pytest.mark.parametrize("term, force", [("Bond", "HarmonicBondForce"), ("Angle", "HarmonicAngleForce")])
def test_bond_and_angle_terms_match_rdkit_mmff94_near_their_minimum(prepared, term, force):
    """The harmonic bonds and angles written for OpenMM are MMFF94's quartic bonds and cubic angles
    to second order (the unit factors 143.9325 and 0.043844, Å and degrees to nm and radians): at a
    geometry relaxed under that MMFF94 term alone and then displaced by 0.003 Å, RDKit's energy of
    the term and OpenMM's agree to the anharmonic corrections (< 2 %)."""
    import openmm
    import openmm.unit as unit
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromMolFile(prepared.sdf_path, removeHs=False)
    props = AllChem.MMFFGetMoleculeProperties(mol)
    for other in ("Bond", "Angle", "StretchBend", "Oop", "Torsion", "VdW", "Ele"):
        getattr(props, f"SetMMFF{other}Term")(other == term)
    field = AllChem.MMFFGetMoleculeForceField(mol, props)
    field.Minimize(maxIts=5000)
    xyz = np.array(field.Positions()).reshape(-1, 3)
    xyz += np.random.default_rng(0).normal(scale=0.003, size=xyz.shape)
    expected = field.CalcEnergy(xyz.ravel().tolist()) * 4.184
    system, context = _ligand_context(prepared.xml_path, prepared)
    context.setPositions(xyz / 10.0 * unit.nanometer)
    group = next(i for i, f in enumerate(system.getForces()) if type(f).__name__ == force)
    energy = context.getState(getEnergy=True, groups={group}).getPotentialEnergy()._value
    assert expected > 1e-3 and isinstance(system.getForce(group), getattr(openmm, force))
    assert energy == pytest.approx(expected, rel=0.02)
