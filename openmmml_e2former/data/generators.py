"""Structure generators: capped peptides, villin fragments, water shells, charged pairs, ions.

Every generator returns a list of unlabelled :class:`Structure` objects with fragment ids (from
:func:`openmmml_e2former.fragments.fragment_ids_from_topology` or one id per molecule) and the total
charge. ``molecule`` names the chemical entity, so that splits keep all conformers of one molecule
on the same side. Positions in Å.
"""

from __future__ import annotations

import os

import numpy as np

from ..chemistry import formal_charge
from ..fragments import fragment_ids_from_topology
from ..optional import require
from .cutting import (
    atomic_numbers,
    cut_window,  # noqa: F401  (re-exported: tests/test_caps.py imports it from here)
    environment_structures,
    first_appearance,
    protein_only,
    waters,
    window_structures,
)
from .structure import Structure


def capped_peptides(
    sequences: list[list[str]],
    temperatures=(300.0, 500.0, 700.0),
    frames_per_temperature: int = 20,
    interval: int = 200,
    seed: int = 0,
    progress: bool = True,
    caps: bool = True,
) -> list[Structure]:
    """Conformers of ACE-sequence-NME (or, with ``caps=False``, of the zwitterion NH3+-sequence-COO-)
    from OBC2 implicit-solvent MD at each temperature."""
    from tqdm import tqdm

    from .peptides import build_peptide, peptide_name

    kind = "capped peptide" if caps else "free-termini peptide"
    out = []
    for k, seq in enumerate(tqdm(sequences, desc=f"{kind}s (MD)", disable=not progress)):
        topology, positions = build_peptide(seq, caps=caps)
        charge = formal_charge(topology, range(topology.getNumAtoms()))
        fragments = fragment_ids_from_topology(topology)
        name = peptide_name(seq, caps)
        for t_index, temperature in enumerate(temperatures):
            frames = _md(
                topology, positions, frames_per_temperature, temperature, interval, seed + 97 * k + t_index
            )
            for i, frame in enumerate(frames):
                out.append(
                    Structure(
                        id=f"{name}/T{int(temperature)}/{i}",
                        molecule=name,
                        numbers=atomic_numbers(topology),
                        positions=frame,
                        fragment_ids=fragments,
                        charge=charge,
                        source=f"{kind}, OBC2 MD {int(temperature)} K, amber14",
                    )
                )
    return out


def _md(topology, positions, num_frames, temperature, interval, seed, solvent="obc2", **kw):
    from .sampling import md_frames

    return md_frames(
        topology, positions, num_frames, temperature, interval=interval, seed=seed, solvent=solvent, **kw
    )


def villin_topology():
    """(topology, positions Å, box) of OpenMM's ``app/data/test.pdb`` (villin headpiece in water)."""
    return pdb_topology(villin_pdb_path())


def villin_pdb_path() -> str:
    import openmm.app as app

    return os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")


def pdb_topology(path: str):
    """(topology, positions Å, box) of a PDB file."""
    import openmm.app as app
    import openmm.unit as unit

    if not os.path.exists(path):
        raise FileNotFoundError(f"no PDB file {path}")
    pdb = app.PDBFile(path)
    return (
        pdb.topology,
        np.array(pdb.positions.value_in_unit(unit.angstrom)),
        pdb.topology.getPeriodicBoxVectors(),
    )


def protein_for_md(path: str):
    """(topology, positions Å) of the protein in a PDB file: water and ions removed, and hydrogens
    added (AMBER14, pH 7) when the file has none."""
    import openmm.app as app
    import openmm.unit as unit

    top, pos, _ = pdb_topology(path)
    top, pos = protein_only(top, pos)
    if not any(a.element is not None and a.element.symbol == "H" for a in top.atoms()):
        modeller = app.Modeller(top, pos * unit.angstrom)
        modeller.addHydrogens(app.ForceField("amber14-all.xml"), pH=7.0)
        top, pos = modeller.topology, np.array(modeller.positions.value_in_unit(unit.angstrom))
    return top, pos


def villin_windows(window: int = 3, num_frames: int = 12, **options) -> list[Structure]:
    """Windows of villin (OpenMM's ``test.pdb``; ``window=35``: the whole protein): keyword
    ``options`` as :func:`protein_windows` (temperature, interval, seed, progress, stride, tag);
    ids ``villin:{first}-{last}/[{tag}/]f{frame}``."""
    options.setdefault("label", "villin (openmm test.pdb)")
    return protein_windows(villin_pdb_path(), "villin", window, num_frames, **options)


def protein_windows(
    pdb: str,
    name: str,
    window: int = 3,
    num_frames: int = 12,
    temperature: float = 400.0,
    interval: int = 1000,
    seed: int = 0,
    progress: bool = True,
    stride: int = 1,
    tag: str | None = None,
    label: str | None = None,
    start: bool = True,
) -> list[Structure]:
    """Windows of ``window`` consecutive residues of the protein in ``pdb``, H-capped, from OBC2
    MD of the protein (AMBER14; with ``start`` the first of the ``num_frames`` frames is the file's
    structure), starting every ``stride`` residues; ids ``{name}:{first}-{last}/[{tag}/]f{frame}``."""
    from tqdm import tqdm

    top, pos = protein_for_md(pdb)
    if window < 1 or window > top.getNumResidues():
        raise ValueError(f"window {window} must be 1 to the protein's {top.getNumResidues()} residues")
    all_fragments = fragment_ids_from_topology(top)
    steps = num_frames - 1 if start else num_frames
    md = _md(top, pos, steps, temperature, interval, seed, timestep_fs=1.0) if steps > 0 else []
    frames = [pos] * start + md
    source = f"{label or name + ' (' + os.path.basename(pdb) + ')'} residues {{first}}-{{last}}, H-capped, "
    source += f"OBC2 MD {int(temperature)} K"
    out = []
    for f, frame in enumerate(tqdm(frames, desc=f"{name} windows", disable=not progress)):
        frame_tag = f"{tag}/f{f}" if tag else f"f{f}"
        out.extend(window_structures(top, frame, window, all_fragments, name, frame_tag, source, stride))
    return out


def villin_environments(
    num_frames: int = 20, temperature: float = 350.0, interval: int = 1000, radius: float = 4.5, seed: int = 0
) -> list[Structure]:
    """Neighbourhoods of villin's charged groups (termini, Lys, Arg, Asp, Glu; see
    :func:`.cutting.environment_structures`) in the crystal frame and ``num_frames - 1`` frames of
    OBC2 MD of the protein."""
    top, pos, _ = villin_topology()
    top, pos = protein_only(top, pos)
    steps = num_frames - 1
    md = _md(top, pos, steps, temperature, interval, seed, timestep_fs=1.0) if steps > 0 else []
    frames = [pos] + md
    source = f"villin (openmm test.pdb) residues within {radius:g} A of {{centre}}, OBC2 MD {temperature:g} K"
    return environment_structures(
        top, frames, fragment_ids_from_topology(top), radius, "villin", "obc2md", source
    )


def water_shell(topology, positions, solute_atoms: list[int], max_waters: int, cutoff: float = 3.4):
    """Indices of the ``max_waters`` water molecules (all atoms) nearest the solute (O within ``cutoff`` Å
    of any solute heavy atom), sorted by distance."""
    atoms_list = list(topology.atoms())
    solute_heavy = [i for i in solute_atoms if atoms_list[i].element.symbol != "H"]
    picks = []
    for _, atoms, oxygen in waters(topology):
        d = np.linalg.norm(positions[solute_heavy] - positions[oxygen], axis=1).min()
        if d < cutoff:
            picks.append((d, atoms))
    picks.sort(key=lambda x: x[0])
    return [i for _, atoms in picks[:max_waters] for i in atoms]


def solvated_peptides(
    sequences: list[list[str]],
    num_frames: int = 8,
    max_waters: int = 10,
    interval: int = 500,
    seed: int = 0,
    progress: bool = True,
) -> list[Structure]:
    """Capped peptides with their nearest ``max_waters`` waters, from explicit TIP3P-FB MD at 300 K."""
    import openmm.app as app
    import openmm.unit as unit
    from tqdm import tqdm

    from .peptides import build_capped_peptide

    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    out = []
    for k, seq in enumerate(tqdm(sequences, desc="solvated peptides (MD)", disable=not progress)):
        topology, positions = build_capped_peptide(seq)
        modeller = app.Modeller(topology, positions * unit.angstrom)
        modeller.addSolvent(forcefield, padding=1.0 * unit.nanometer, neutralize=False)
        top = modeller.topology
        pos = np.array(modeller.positions.value_in_unit(unit.angstrom))
        solute = list(range(topology.getNumAtoms()))
        frames = _md(
            top,
            pos,
            num_frames,
            300.0,
            interval,
            seed + k,
            solvent="explicit",
            timestep_fs=2.0,
            box=top.getPeriodicBoxVectors(),
            equilibration=2000,
        )
        name = "ACE-" + "-".join(seq) + "-NME"
        all_fragments = fragment_ids_from_topology(top)
        for i, frame in enumerate(frames):
            frame = _unwrap_waters(top, frame, solute)
            atoms = solute + water_shell(top, frame, solute, max_waters)  # whole residues
            out.append(
                Structure(
                    id=f"{name}+water/{i}",
                    molecule=name + "+water",
                    numbers=atomic_numbers(top)[atoms],
                    positions=frame[atoms],
                    fragment_ids=first_appearance(all_fragments[atoms]),
                    charge=formal_charge(top, atoms),
                    source=f"capped peptide + {max_waters} nearest waters, TIP3P-FB MD 300 K",
                )
            )
    return out


def _unwrap_waters(topology, frame, solute, box_size=None):
    """Place every water at the periodic image nearest the solute centroid (frames are not wrapped
    by OpenMM when asked, but waters drift; this keeps shells compact)."""
    vectors = topology.getPeriodicBoxVectors()
    if vectors is None:
        return frame
    box = np.array([[v[i]._value * 10.0 for i in range(3)] for v in vectors]).diagonal()
    centre = frame[solute].mean(axis=0)
    frame = frame.copy()
    for _, atoms, _ in waters(topology):
        shift = np.round((frame[atoms[0]] - centre) / box) * box
        frame[atoms] -= shift
    return frame


# --- small charged molecules, ions and water ---------------------------------------------------

#: name -> (SMILES, charge)
SMALL_MOLECULES = {
    "methylammonium": ("C[NH3+]", 1),
    "acetate": ("CC(=O)[O-]", -1),
    "methylguanidinium": ("CNC(N)=[NH2+]", 1),
    "methylimidazolium": ("Cc1c[nH]c[nH+]1", 1),
    "methanethiol": ("CS", 0),
    "methylacetamide": ("CC(=O)NC", 0),
    "methanol": ("CO", 0),
    "water": ("O", 0),
    "sodium": ("[Na+]", 1),
    "chloride": ("[Cl-]", -1),
}

#: clusters: name -> molecule names (one fragment each)
CLUSTERS = {
    "ammonium-acetate": ["methylammonium", "acetate"],
    "guanidinium-acetate": ["methylguanidinium", "acetate"],
    "imidazolium-acetate": ["methylimidazolium", "acetate"],
    "ammonium-chloride": ["methylammonium", "chloride"],
    "sodium-acetate": ["sodium", "acetate"],
    "nma-dimer": ["methylacetamide", "methylacetamide"],
    "nma-methanol": ["methylacetamide", "methanol"],
    "thiol-acetate": ["methanethiol", "acetate"],
    "sodium-water6": ["sodium"] + ["water"] * 6,
    "chloride-water6": ["chloride"] + ["water"] * 6,
    "nacl-water6": ["sodium", "chloride"] + ["water"] * 6,
    "acetate-water5": ["acetate"] + ["water"] * 5,
    "ammonium-water5": ["methylammonium"] + ["water"] * 5,
    "water8": ["water"] * 8,
}


def _embed(smiles: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(atomic numbers, positions Å) of one MMFF-relaxed RDKit conformer of ``smiles``."""
    Chem = require("rdkit.Chem", "labels", "conformers of small molecules")
    AllChem = require("rdkit.Chem.AllChem", "labels")

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if mol.GetNumAtoms() == 1:
        return np.array([mol.GetAtomWithIdx(0).GetAtomicNum()]), np.zeros((1, 3))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    AllChem.MMFFOptimizeMolecule(mol)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return numbers, mol.GetConformer().GetPositions()


def _random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
        ]
    )


def random_cluster(
    names: list[str], rng, min_gap: float = 1.6, max_gap: float = 3.2, jitter: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Molecules placed one by one at random orientations, each at a closest-atom distance in
    [min_gap, max_gap] Å from the molecules already placed. Returns (numbers, positions, fragment ids,
    charge)."""
    numbers, coords, frags, charge = [], [], [], 0
    for k, name in enumerate(names):
        smiles, q = SMALL_MOLECULES[name]
        z, x = _embed(smiles, int(rng.integers(1 << 30)))
        x = (x - x.mean(axis=0)) @ _random_rotation(rng).T + rng.normal(scale=jitter, size=x.shape)
        if coords:
            placed = np.concatenate(coords)
            target = rng.uniform(min_gap, max_gap)
            for _ in range(200):
                direction = rng.normal(size=3)
                direction /= np.linalg.norm(direction)
                anchor = placed[rng.integers(len(placed))]
                # slide along the direction until the closest distance reaches the target
                for step in np.arange(0.0, 15.0, 0.1):
                    trial = x + anchor + direction * step
                    gap = np.linalg.norm(placed[:, None] - trial[None], axis=-1).min()
                    if gap >= target:
                        break
                if gap >= min_gap:
                    x = trial
                    break
        numbers.append(z)
        coords.append(x)
        frags.append(np.full(len(z), k))
        charge += q
    return np.concatenate(numbers), np.concatenate(coords), np.concatenate(frags), charge


CHARGED_PAIRS = ("ammonium-acetate", "guanidinium-acetate", "imidazolium-acetate", "ammonium-chloride",
                 "sodium-acetate")  # fmt: skip


def separated_pairs(per_pair: int = 12, gaps=(3.5, 10.0), seed: int = 0) -> list[Structure]:
    """Charged side-chain analogue pairs (:data:`CHARGED_PAIRS`) at closest-atom gaps drawn
    uniformly from ``gaps`` (Å; the gap reached, stated in ``source``, may be 0.1 Å more),
    beyond the contacts of :func:`small_clusters`: molecule ``{pair}:separated``. Their gas-phase
    SCF often needs the labeller's slower mixer."""
    rng = np.random.default_rng(seed)
    out = []
    for name in CHARGED_PAIRS:
        for i in range(per_pair):
            gap = float(rng.uniform(*gaps))
            numbers, coords, frags, charge = random_cluster(
                CLUSTERS[name], rng, min_gap=gap, max_gap=gap + 0.01
            )
            # the placement slides in 0.1 Å steps, so the gap reached is up to 0.1 Å past the target
            gap = float(np.linalg.norm(coords[frags == 0][:, None] - coords[frags == 1][None], axis=-1).min())
            out.append(
                Structure(
                    id=f"{name}:separated/{i}",
                    molecule=f"{name}:separated",
                    numbers=numbers,
                    positions=coords,
                    fragment_ids=frags,
                    charge=charge,
                    source=f"pair {'+'.join(CLUSTERS[name])}: RDKit/MMFF monomers, closest-atom gap "
                    f"{gap:.2f} Å",
                )
            )
    return out


def small_clusters(per_cluster: int = 30, seed: int = 0) -> list[Structure]:
    """Charged side-chain analogue pairs, ion-water and neutral clusters at varied separations.

    Gaps are kept at contact distances (1.6-3.2 Å): GFN2-xTB's SCF often fails to converge for
    gas-phase ion pairs further apart (a near-zero gap between the anion's HOMO and the cation's
    LUMO), and such structures are recorded as failed rather than labelled."""
    rng = np.random.default_rng(seed)
    out = []
    for name, members in CLUSTERS.items():
        for i in range(per_cluster):
            numbers, coords, frags, charge = random_cluster(members, rng)
            out.append(
                Structure(
                    id=f"{name}/{i}",
                    molecule=name,
                    numbers=numbers,
                    positions=coords,
                    fragment_ids=frags,
                    charge=charge,
                    source=f"cluster {'+'.join(members)}: RDKit/MMFF monomers at random orientations, "
                    "closest-atom gaps 1.6-3.2 Å",
                )
            )
    return out
