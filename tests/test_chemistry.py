"""The formal-charge rule (chemistry.residue_formal_charge) against AMBER14: for every amino-acid
template (all termini and protonation variants) and every monatomic ion our potential knows, the
rule applied to the template's atom names gives the sum of the template's partial charges."""

from __future__ import annotations

import pytest

from openmmml_e2former.chemistry import ION_CHARGES, residue_formal_charge

AMINO_ACIDS = {
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET",
    "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL", "HID", "HIE", "HIP", "ASH", "GLH", "LYN",
    "CYX", "CYM", "HYP",
}  # fmt: skip
#: the residue name a PDB file (pdbfixer, OpenMM's Modeller) gives each AMBER variant
PDB_NAME = {"HID": "HIS", "HIE": "HIS", "HIP": "HIS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS", "CYX": "CYS"}


def amber_templates():
    import openmm.app as app

    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    out = []
    for name, template in forcefield._templates.items():
        core = name[1:] if name[:1] in "NC" and name[1:] in AMINO_ACIDS else name
        if core not in AMINO_ACIDS and not (len(template.atoms) == 1):
            continue
        total = sum(atom.parameters.get("charge", 0.0) for atom in template.atoms)
        out.append((name, core, {a.name for a in template.atoms}, template.atoms[0].element, total))
    return out


TEMPLATES = amber_templates()


def test_every_amino_acid_template_is_checked():
    names = {t[0] for t in TEMPLATES}
    assert {"NLYS", "CASP", "HIP", "CHIE", "ASH", "CYM", "GLY", "NPRO"} <= names
    assert len([t for t in TEMPLATES if t[1] in AMINO_ACIDS]) >= 75  # 27 middle + N- and C-terminal forms


@pytest.mark.parametrize("template", [t for t in TEMPLATES if t[1] in AMINO_ACIDS], ids=lambda t: t[0])
def test_amino_acid_rule_matches_amber(template):
    name, core, atoms, _, total = template
    assert residue_formal_charge(core, atoms) == round(total), "AMBER variant name"
    if core in PDB_NAME:  # the same protons under the generic name
        assert residue_formal_charge(PDB_NAME[core], atoms) == round(total), "PDB name"


@pytest.mark.parametrize(
    "template",
    [t for t in TEMPLATES if t[1] not in AMINO_ACIDS and t[3] is not None and t[3].symbol in ION_CHARGES],
    ids=lambda t: t[0],
)
def test_ion_rule_matches_amber(template):
    name, _, atoms, element, total = template
    assert residue_formal_charge(name, atoms, element.symbol) == round(total)
