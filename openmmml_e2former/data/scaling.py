"""The size-scaling benchmark set: families of structures whose size grows from ~50 to >= 1,200
atoms where long-range interactions matter (in the spirit of the MolLR25 set of the E2Former-LSR
paper), with exact classical reference labels.

Families (``docs/accuracy.md``):

* ``segments`` -- contiguous segments of a real protein, ACE/NME-capped where the chain is cut;
* ``spheres`` -- whole residues within a growing radius of a centre atom, capped the same way;
* ``pairs`` -- charged pairs (ammonium-carboxylate, guanidinium-carboxylate, Na+ Cl-) at
  separations from contact to ~20 Å, with both monomers (the interaction-energy decay curve);
* ``shells`` -- a charged peptide in water shells of growing radius.

Cut chains get ACE/NME caps made from the neighbouring residues' own atoms (so AMBER14 has a
template for every piece and GFN2-xTB sees ordinary chemistry). The *oracle* label is AMBER14
(+ TIP3P-FB water), no cutoff, full Coulomb, no constraints: cheap and exact at every size.
Each structure's role is decided here: small members of the training frames train, small members
of the validation frame validate, and every size of the held-out frames evaluates.
"""

from __future__ import annotations

import os

import numpy as np

from ..fragments import fragment_ids_from_topology
from ..units import KJ_PER_MOL_TO_EV
from .structure import Structure

CH_BOND, NH_BOND = 1.09, 1.01  # Å: cap hydrogens on the methyl carbons / a proline's NME nitrogen
ORACLE_FILES = ("amber14-all.xml", "amber14/tip3pfb.xml")
ORACLE_METHOD = "AMBER14+TIP3P-FB (NoCutoff, flexible)"

#: structures with at most this many atoms are "small": they train (training frames) or validate
SMALL_ATOMS = 160

#: charged pairs: (name, residue A, residue B) -- ACE/NME-capped amino acids, or ions
PAIRS = (
    ("ammonium-carboxylate", "LYS", "ASP"),
    ("guanidinium-carboxylate", "ARG", "GLU"),
    ("sodium-chloride", "NA", "CL"),
)
#: atoms whose mean is each residue's charge centre
CHARGE_CENTRES = {"LYS": ("NZ",), "ASP": ("OD1", "OD2"), "ARG": ("NH1", "NH2", "NE"), "GLU": ("OE1", "OE2")}
#: extra distance (Å) between the charge centres beyond contact, for the decay curve
DECAY_GAPS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0)


# ------------------------------------------------------------------------------------------------
# pieces of a protein with ACE/NME caps
# ------------------------------------------------------------------------------------------------


def _atoms_by_name(residue) -> dict:
    return {a.name: a for a in residue.atoms()}


def _bonded(topology) -> dict:
    neighbours: dict[int, list] = {}
    for a, b in topology.bonds():
        neighbours.setdefault(a.index, []).append(b)
        neighbours.setdefault(b.index, []).append(a)
    return neighbours


def residue_runs(topology, residue_indices) -> list[list]:
    """The residues ``residue_indices`` grouped into runs of chain neighbours; a single missing
    residue between two kept ones is filled in (its atoms would be needed by both caps)."""
    residues = list(topology.residues())
    keep = sorted(set(int(i) for i in residue_indices))
    if not keep:
        raise ValueError("no residues selected")
    filled = set(keep)
    for a, b in zip(keep, keep[1:], strict=False):
        if b - a == 2 and residues[a].chain is residues[b].chain:
            filled.add(a + 1)
    runs: list[list] = []
    for i in sorted(filled):
        r = residues[i]
        if runs and runs[-1][-1].index == i - 1 and runs[-1][-1].chain is r.chain:
            runs[-1].append(r)
        else:
            runs.append([r])
    return runs


def _peptide_link(topology, first, second) -> bool:
    c = _atoms_by_name(first).get("C")
    n = _atoms_by_name(second).get("N")
    return c is not None and n is not None and any({a, b} == {c, n} for a, b in _bonds_of(topology, c))


def _bonds_of(topology, atom):
    return [(a, b) for a, b in topology.bonds() if a is atom or b is atom]


def _methyl_hydrogens(positions, centre, neighbours, skip) -> list[np.ndarray]:
    """Hydrogens on ``centre`` pointing at its neighbours other than ``skip`` (C-H 1.09 Å)."""
    out = []
    for other in neighbours[centre.index]:
        if other is skip:
            continue
        d = positions[other.index] - positions[centre.index]
        out.append(positions[centre.index] + CH_BOND * d / np.linalg.norm(d))
    if len(out) != 3:
        raise ValueError(
            f"cannot make a methyl cap from {centre.residue.name}{centre.residue.id} {centre.name}"
        )
    return out


def capped_piece(topology, positions: np.ndarray, residue_indices) -> tuple:
    """(topology, positions Å) of the residues ``residue_indices`` of a protein, every cut peptide
    bond capped: the residue before a run becomes ACE (its C, O and CA as CH3), the residue after
    it NME (its N, H and CA as C); the methyl hydrogens point where the CA's other bonds pointed.
    Chain ends that are real termini stay as they are. Raises if a kept cysteine loses its
    disulfide partner (no template for a half-disulfide)."""
    import openmm.app as app

    residues = list(topology.residues())
    neighbours = _bonded(topology)
    new = app.Topology()
    coords: list[np.ndarray] = []
    mapped: dict[int, object] = {}

    def add(residue, name, element, xyz, parent=None):
        atom = new.addAtom(name, element, residue)
        coords.append(np.asarray(xyz, dtype=float))
        if parent is not None:
            mapped[parent.index] = atom
        return atom

    hydrogen = app.Element.getBySymbol("H")
    extra_bonds = []
    for run in residue_runs(topology, residue_indices):
        chain = new.addChain()
        first, last = run[0], run[-1]
        before = residues[first.index - 1] if first.index > 0 else None
        if before is not None and before.chain is first.chain and _peptide_link(topology, before, first):
            atoms = _atoms_by_name(before)
            ace = new.addResidue("ACE", chain)
            add(ace, "C", atoms["C"].element, positions[atoms["C"].index], atoms["C"])
            add(ace, "O", atoms["O"].element, positions[atoms["O"].index], atoms["O"])
            ch3 = add(ace, "CH3", atoms["CA"].element, positions[atoms["CA"].index], atoms["CA"])
            for k, xyz in enumerate(_methyl_hydrogens(positions, atoms["CA"], neighbours, atoms["C"])):
                extra_bonds.append((ch3, add(ace, f"H{k + 1}", hydrogen, xyz)))
        for residue in run:
            copy = new.addResidue(residue.name, chain, residue.id, residue.insertionCode)
            for atom in residue.atoms():
                add(copy, atom.name, atom.element, positions[atom.index], atom)
        after = residues[last.index + 1] if last.index + 1 < len(residues) else None
        if after is not None and after.chain is last.chain and _peptide_link(topology, last, after):
            atoms = _atoms_by_name(after)
            nme = new.addResidue("NME", chain)
            n = add(nme, "N", atoms["N"].element, positions[atoms["N"].index], atoms["N"])
            if "H" in atoms:
                add(nme, "H", hydrogen, positions[atoms["H"].index], atoms["H"])
            else:  # proline: its CD's direction
                d = positions[atoms["CD"].index] - positions[atoms["N"].index]
                extra_bonds.append(
                    (
                        n,
                        add(
                            nme, "H", hydrogen, positions[atoms["N"].index] + NH_BOND * d / np.linalg.norm(d)
                        ),
                    )
                )
            c = add(nme, "C", atoms["CA"].element, positions[atoms["CA"].index], atoms["CA"])
            for k, xyz in enumerate(_methyl_hydrogens(positions, atoms["CA"], neighbours, atoms["N"])):
                extra_bonds.append((c, add(nme, f"H{k + 1}", hydrogen, xyz)))
    for a, b in topology.bonds():
        if a.index in mapped and b.index in mapped:
            new.addBond(mapped[a.index], mapped[b.index])
        elif (a.index in mapped) != (b.index in mapped):
            inner = a if a.index in mapped else b
            if inner.element.symbol == "S":
                raise ValueError(f"{inner.residue.name}{inner.residue.id} loses its disulfide partner")
    for a, b in extra_bonds:
        new.addBond(a, b)
    return new, np.array(coords)


# ------------------------------------------------------------------------------------------------
# the oracle
# ------------------------------------------------------------------------------------------------


class AmberOracle:
    """AMBER14 (+ TIP3P-FB) with no cutoff and no constraints, for any topology it has templates for.
    One force field; a context per topology (cached by the topology's residue sequence)."""

    def __init__(self):
        import openmm.app as app

        self.forcefield = app.ForceField(*ORACLE_FILES)
        self._contexts: dict = {}

    def _context(self, topology):
        import openmm
        import openmm.app as app

        key = (tuple(r.name for r in topology.residues()), tuple(a.name for a in topology.atoms()))
        bonds = tuple(sorted((a.index, b.index) for a, b in topology.bonds()))
        key = key + (bonds,)
        if key not in self._contexts:
            if len(self._contexts) > 64:
                self._contexts.clear()
            system = self.forcefield.createSystem(
                topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
            )
            nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
            charge = sum(
                nonbonded.getParticleParameters(i)[0]._value for i in range(system.getNumParticles())
            )
            if abs(charge - round(charge)) > 0.02:
                raise ValueError(f"piece carries a non-integer AMBER charge {charge:.3f}")
            platform = openmm.Platform.getPlatformByName("CPU")
            context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, {"Threads": "1"})
            self._contexts[key] = (context, int(round(charge)))
        return self._contexts[key]

    def charge(self, topology) -> int:
        return self._context(topology)[1]

    def system(self, topology):
        """The oracle's ``openmm.System`` for ``topology``."""
        return self._context(topology)[0].getSystem()

    def __call__(self, topology, positions: np.ndarray) -> tuple[float, np.ndarray]:
        """(energy eV, forces eV/Å) of ``positions`` (Å)."""
        import openmm.unit as unit

        context, _ = self._context(topology)
        context.setPositions(np.asarray(positions) * 0.1)
        state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_TO_EV
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom)
        return float(energy), np.asarray(forces) * KJ_PER_MOL_TO_EV


def oracle_structure(
    oracle: AmberOracle, topology, positions, id: str, molecule: str, source: str
) -> Structure:
    """A :class:`Structure` of ``topology`` at ``positions`` (Å) with its oracle label."""
    numbers = np.array([a.element.atomic_number for a in topology.atoms()])
    energy, forces = oracle(topology, positions)
    return Structure(
        id=id,
        molecule=molecule,
        numbers=numbers,
        positions=positions,
        fragment_ids=fragment_ids_from_topology(topology),
        charge=oracle.charge(topology),
        source=source,
        energy=energy,
        forces=forces,
        labels={"method": ORACLE_METHOD, "program": "openmm", "program_version": _openmm_version()},
    )


def _openmm_version() -> str:
    import openmm

    return openmm.__version__


# ------------------------------------------------------------------------------------------------
# proteins and their frames
# ------------------------------------------------------------------------------------------------


def prepared_1bhl(path: str):
    """(topology, positions Å) of HIV-1 integrase's catalytic core (PDB 1BHL from pdbfixer's test
    data) prepared as a protocol run prepares it (CAS -> CYS, the missing loop built, hydrogens at
    pH 7, no solvent; 2333 atoms) and relaxed by 200 steps of AMBER14/OBC2 minimisation. Cached as
    a PDB file at ``path``."""
    import openmm.app as app
    import openmm.unit as unit

    if not os.path.exists(path):
        import pdbfixer

        from ..simulate.prepare import prepare_structure
        from ..simulate.protocol import PREPARE_DEFAULTS
        from .sampling import minimized

        source = os.path.join(os.path.dirname(pdbfixer.__file__), "tests", "data", "1BHL.pdb")
        options = {**PREPARE_DEFAULTS, "solvate": False, "add_missing_residues": True}
        topology, positions, _ = prepare_structure(source, options, app.ForceField(*ORACLE_FILES))
        relaxed = minimized(topology, np.array(positions.value_in_unit(unit.angstrom)), "obc2", 200)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as handle:
            app.PDBFile.writeFile(topology, relaxed * unit.angstrom, handle)
        os.replace(tmp, path)
    pdb = app.PDBFile(path)
    return pdb.topology, np.array(pdb.positions.value_in_unit(unit.angstrom))


def protein_frames(
    topology, positions, num_frames: int, seed: int, interval: int = 500, threads: int = 2
) -> list[np.ndarray]:
    """The structure itself and ``num_frames - 1`` frames of AMBER14/OBC2 Langevin MD at 350 K
    (1 fs, no constraints; GB and nonbonded cut at 1.2 nm to keep a 2,000-atom protein cheap --
    this only samples conformations, the labels are the oracle's)."""
    import openmm.app as app
    import openmm.unit as unit

    from .sampling import langevin_frames

    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    system = forcefield.createSystem(
        topology,
        nonbondedMethod=app.CutoffNonPeriodic,
        nonbondedCutoff=1.2 * unit.nanometer,
        constraints=None,
    )
    md = langevin_frames(
        system, positions * 0.1, num_frames - 1, 350.0, interval, 1.0,
        minimize_iterations=100, seed=seed, threads=threads,
    )  # fmt: skip
    return [np.asarray(positions)] + md


# ------------------------------------------------------------------------------------------------
# families
# ------------------------------------------------------------------------------------------------


def _role(frame: int, atoms: int, train_frames: int) -> str | None:
    """train / val for small members of the training and validation frames; eval for every size
    of the held-out frames (after them); None: generated but not used."""
    if frame < train_frames:
        return "train" if atoms <= SMALL_ATOMS else None
    if frame == train_frames:
        return "val" if atoms <= SMALL_ATOMS else None
    return "eval"


def segments(
    oracle,
    topology,
    frames,
    name: str,
    lengths,
    train_frames: int,
    train_stride: int = 2,
    eval_starts: int = 3,
) -> list[tuple[Structure, str]]:
    """Contiguous segments of ``lengths`` residues: in training/validation frames every
    ``train_stride``-th start of the small ones; in held-out frames ``eval_starts`` evenly spaced
    starts of every length. Returns (structure, role) pairs."""
    n_res = topology.getNumResidues()
    out = []
    for f, frame in enumerate(frames):
        for length in lengths:
            if length > n_res:
                continue
            if f <= train_frames:
                starts = range(0, n_res - length + 1, train_stride)
            else:
                starts = np.unique(np.linspace(0, n_res - length, eval_starts).round().astype(int))
            for s in starts:
                piece, xyz = capped_piece(topology, frame, range(s, s + length))
                role = _role(f, len(xyz), train_frames)
                if role is None:
                    break  # longer lengths only grow
                molecule = f"{name}-seg:{s + 1}-{s + length}"
                source = f"{name} residues {s + 1}-{s + length}, ACE/NME-capped, frame {f}"
                out.append((oracle_structure(oracle, piece, xyz, f"{molecule}/f{f}", molecule, source), role))
    return out


def sphere_residues(topology, frame: np.ndarray, centre: int, radius: float) -> list[int]:
    """Indices of the whole residues with an atom within ``radius`` (Å) of residue ``centre``'s CA
    in ``frame`` (Å)."""
    ca = _atoms_by_name(list(topology.residues())[centre])["CA"].index
    d = np.linalg.norm(frame - frame[ca], axis=1)
    return sorted({a.residue.index for a in topology.atoms() if d[a.index] <= radius})


def spheres(
    oracle, topology, frames, name: str, radii, centres, train_frames: int
) -> list[tuple[Structure, str]]:
    """Whole residues with any atom within each radius (Å) of each centre residue's CA, capped.
    Centres: residue indices (0-based)."""
    residues = list(topology.residues())
    out = []
    for f, frame in enumerate(frames):
        seen: set = set()  # a residue set already cut from this frame (another radius or centre)
        for c in centres:
            for radius in radii:
                keep = sphere_residues(topology, frame, c, radius)
                if tuple(keep) in seen:
                    continue
                seen.add(tuple(keep))
                piece, xyz = capped_piece(topology, frame, keep)
                role = _role(f, len(xyz), train_frames)
                if role is None:
                    break
                label = f"{residues[c].name}{residues[c].id}"
                molecule = f"{name}-sphere:{label}/r{radius:g}"
                source = f"{name} residues within {radius:g} A of {label} CA, ACE/NME-capped, frame {f}"
                out.append((oracle_structure(oracle, piece, xyz, f"{molecule}/f{f}", molecule, source), role))
    return out


def _ion(name: str):
    import openmm.app as app

    top = app.Topology()
    residue = top.addResidue(name, top.addChain())
    top.addAtom(
        name.capitalize() if name == "NA" else "Cl", app.Element.getBySymbol(name.capitalize()), residue
    )
    return top, np.zeros((1, 3))


def _monomer(residue: str, seed: int):
    """(topology, vacuum-minimised positions Å, charge centre Å) of ACE-X-NME or an ion."""
    if residue in ("NA", "CL"):
        top, pos = _ion(residue)
        return top, pos, pos[0]
    from .peptides import build_capped_peptide
    from .sampling import minimized

    top, pos = build_capped_peptide([residue])
    pos = minimized(top, pos, "vacuum", 500)
    names = CHARGE_CENTRES[residue]
    idx = [a.index for a in top.atoms() if a.residue.name == residue and a.name in names]
    return top, pos, pos[idx].mean(axis=0)


def _rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _facing(pos, centre, sign: float) -> np.ndarray:
    """``pos`` moved so the charge centre is at the origin and the molecule lies behind it
    (its centroid on the ``-sign`` side of the x axis)."""
    shifted = pos - centre
    axis = -shifted.mean(axis=0)  # from the centroid to the charge centre
    if np.linalg.norm(axis) < 1e-6:
        return shifted
    axis /= np.linalg.norm(axis)
    target = np.array([sign, 0.0, 0.0])
    v = np.cross(axis, target)
    c = float(axis @ target)
    if np.linalg.norm(v) < 1e-9:
        rot = np.eye(3) if c > 0 else np.diag([-1.0, -1.0, 1.0])
    else:
        vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
        rot = np.eye(3) + vx + vx @ vx / (1 + c)
    return shifted @ rot.T


def _combine(top_a, top_b):
    import openmm.app as app
    import openmm.unit as unit

    modeller = app.Modeller(top_a, np.zeros((top_a.getNumAtoms(), 3)) * unit.nanometer)
    modeller.add(top_b, np.zeros((top_b.getNumAtoms(), 3)) * unit.nanometer)
    return modeller.topology


def contact_distance(pos_a: np.ndarray, pos_b: np.ndarray, numbers_a, numbers_b, gap: float = 2.6) -> float:
    """The smallest charge-centre distance along x at which no heavy atom of A (facing +x) comes
    closer than ``gap`` Å to one of B (facing -x, shifted along +x)."""
    heavy_a = pos_a[np.asarray(numbers_a) > 1]
    heavy_b = pos_b[np.asarray(numbers_b) > 1]
    for d in np.arange(1.5, 25.0, 0.05):
        shifted = heavy_b + np.array([d, 0.0, 0.0])
        if np.linalg.norm(heavy_a[:, None] - shifted[None], axis=-1).min() >= gap:
            return float(d)
    raise ValueError("no contact distance below 25 Å")


def charged_pairs(
    oracle, seed: int, train_per_pair: int = 60, max_gap: float = 16.0
) -> list[tuple[Structure, str]]:
    """Each pair of :data:`PAIRS` on the decay curve (charge centres facing each other at contact
    + :data:`DECAY_GAPS`, role ``curve``) with both monomers (role ``monomer``), and
    ``train_per_pair`` structures at random gaps (0 to ``max_gap``) and random twists about the
    axis from other rotations (a third of them validate)."""
    rng = np.random.default_rng(seed)
    out = []
    for name, ra, rb in PAIRS:
        top_a, pos_a, centre_a = _monomer(ra, seed)
        top_b, pos_b, centre_b = _monomer(rb, seed)
        a = _facing(pos_a, centre_a, +1.0)  # A's body on -x, its charge centre at the origin
        b = _facing(pos_b, centre_b, -1.0)  # B's body on +x
        num_a = [x.element.atomic_number for x in top_a.atoms()]
        num_b = [x.element.atomic_number for x in top_b.atoms()]
        contact = contact_distance(a, b, num_a, num_b)
        pair_top = _combine(top_a, top_b)
        source = f"{name}: ACE-{ra}-NME / ACE-{rb}-NME (or ions), charge centres facing along x"
        for tag, top, xyz in (("A", top_a, a), ("B", top_b, b)):
            sid = f"pair:{name}/monomer-{tag}"
            out.append((oracle_structure(oracle, top, xyz, sid, f"pair:{name}:{tag}", source), "monomer"))
        for gap in DECAY_GAPS:
            xyz = np.concatenate([a, b + np.array([contact + gap, 0.0, 0.0])])
            sid = f"pair:{name}/curve/d{contact + gap:.2f}"
            out.append((oracle_structure(oracle, pair_top, xyz, sid, f"pair:{name}", source), "curve"))
        for k in range(train_per_pair):
            twist_a, twist_b = _axis_twist(rng), _axis_twist(rng)
            aa, bb = a @ twist_a.T, b @ twist_b.T
            gap = rng.uniform(0.0, max_gap)
            twisted_contact = contact_distance(aa, bb, num_a, num_b)
            xyz = np.concatenate([aa, bb + np.array([twisted_contact + gap, 0.0, 0.0])]) @ _rotation(rng).T
            sid = f"pair:{name}/random/{k}"
            role = "val" if k % 3 == 2 else "train"
            out.append((oracle_structure(oracle, pair_top, xyz, sid, f"pair:{name}:random", source), role))
    return out


def _axis_twist(rng) -> np.ndarray:
    """A random rotation about the x axis (keeps the charge centres facing each other)."""
    t = rng.uniform(0, 2 * np.pi)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


def solvated_peptide_frames(
    sequence, num_frames: int, seed: int, padding: float = 1.6, equilibration: int = 5000, interval: int = 500
):
    """(topology, frames Å) of the capped ``sequence`` in a TIP3P-FB box (``padding`` nm), from MD
    (PME, HBonds, rigid water, 2 fs, 300 K, a frame every ``interval`` steps after ``equilibration``)."""
    import openmm.app as app
    import openmm.unit as unit

    from .peptides import build_capped_peptide
    from .sampling import langevin_frames

    top, pos = build_capped_peptide(list(sequence))
    forcefield = app.ForceField(*ORACLE_FILES)
    modeller = app.Modeller(top, pos * 0.1 * unit.nanometer)
    modeller.addSolvent(forcefield, model="tip3p", padding=padding * unit.nanometer, neutralize=False)
    system = forcefield.createSystem(
        modeller.topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=0.9 * unit.nanometer,
        constraints=app.HBonds,
    )
    frames = langevin_frames(
        system, modeller.positions, num_frames, 300.0, interval, 2.0,
        friction=1.0, equilibration=equilibration, minimize_iterations=300, seed=seed,
    )  # fmt: skip
    return modeller.topology, frames


def _whole_waters_near(topology, frame, solute: list[int], radius: float, box: np.ndarray) -> list[int]:
    """Residue indices of the waters whose oxygen's nearest periodic image lies within ``radius``
    Å of any solute atom (the image is used; ``frame`` is modified in place to put it there)."""
    from .cutting import waters

    solute_xyz = frame[solute]
    picks = []
    for residue, atoms, oxygen in waters(topology):
        centre = solute_xyz.mean(axis=0)
        shift = np.round((frame[oxygen] - centre) / box) * box
        frame[atoms] -= shift
        if np.linalg.norm(solute_xyz - frame[oxygen], axis=1).min() <= radius:
            picks.append(residue)
    return picks


def water_shells(
    oracle, sequence, radii, num_frames: int, train_frames: int, seed: int, role=None, tag: str = "", **md
) -> list[tuple[Structure, str]]:
    """The capped ``sequence`` with every water within each radius (Å) of any of its atoms
    (``md``: options of :func:`solvated_peptide_frames`). ``role(frame, atoms)`` decides each
    shell's role (default :func:`_role`): None stops the frame's radii, "" skips the shell. ``tag``
    goes before the frame in the ids."""
    role = role or (lambda f, n: _role(f, n, train_frames))
    import openmm.app as app
    import openmm.unit as unit

    topology, frames = solvated_peptide_frames(sequence, num_frames, seed, **md)
    box = np.array(
        [v[i] for i, v in enumerate(topology.getPeriodicBoxVectors().value_in_unit(unit.angstrom))]
    )
    solute = [a.index for a in topology.atoms() if a.residue.name != "HOH"]
    name = "ACE-" + "-".join(sequence) + "-NME"
    out = []
    for f, frame in enumerate(frames):
        frame = frame.copy()
        frame[solute] -= np.round((frame[solute] - frame[solute[0]]) / box) * box
        for radius in radii:
            waters = set(_whole_waters_near(topology, frame, solute, radius, box))
            modeller = app.Modeller(topology, frame * 0.1 * unit.nanometer)
            modeller.delete([r for r in topology.residues() if r.name == "HOH" and r.index not in waters])
            piece = modeller.topology
            piece.setPeriodicBoxVectors(None)
            xyz = np.array(modeller.positions.value_in_unit(unit.angstrom))
            given = role(f, len(xyz))
            if given is None:
                break
            if not given:
                continue
            molecule = f"shell:{name}/r{radius:g}"
            source = f"{name} with the TIP3P-FB waters within {radius:g} A, explicit-water MD frame {f}"
            sid = f"{molecule}/{tag}f{f}"
            out.append((oracle_structure(oracle, piece, xyz, sid, molecule, source), given))
    return out


# ------------------------------------------------------------------------------------------------
# the whole set
# ------------------------------------------------------------------------------------------------

#: segment lengths (residues) and sphere radii (Å): ~50 to ~2,300 atoms on 1BHL
SEGMENT_LENGTHS = (3, 4, 5, 6, 8, 12, 18, 26, 36, 50, 70, 100, 152)
SPHERE_RADII = (3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0, 17.0, 20.0)
SHELL_RADII = (2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0)
SHELL_SEQUENCE = ("LYS", "ALA", "GLU", "LYS", "ARG")  # net charge +2
FAMILIES = ("segments", "spheres", "pairs", "shells")


def _charged_residues(topology) -> list[int]:
    return [r.index for r in topology.residues() if r.name in ("LYS", "ARG", "ASP", "GLU")]


def protein_train_frames(quick: bool = False) -> int:
    """How many of the protein's frames give training members (the next one validates)."""
    return 1 if quick else 3


def protein_and_frames(out: str, quick: bool = False, seed: int = 0) -> tuple:
    """(topology, frames [Å], name) of the protein the segments and spheres are cut from: 1BHL
    prepared (or villin's protein atoms for ``quick``) and its MD frames, both cached in
    ``out/raw``. The first three frames train, the fourth validates, the rest evaluate."""
    if quick:  # villin (no preparation step), protein atoms only
        from .cutting import protein_only
        from .generators import villin_topology

        topology, positions = protein_only(*villin_topology()[:2])
        name = "villin"
    else:
        topology, positions = prepared_1bhl(os.path.join(out, "raw", "1bhl-prepared.pdb"))
        name = "1bhl"
    train = protein_train_frames(quick)
    cache = os.path.join(out, "raw", f"{name}-frames-seed{seed}{'-quick' if quick else ''}.npy")
    if os.path.exists(cache):  # segments and spheres share the frames
        frames = list(np.load(cache))
    else:
        frames = protein_frames(topology, positions, train + 3, seed, interval=20 if quick else 1000)
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(f"{cache}.tmp", "wb") as handle:
            np.save(handle, np.array(frames))
        os.replace(f"{cache}.tmp", cache)
    return topology, frames, name


def build_family(family: str, out: str, quick: bool = False, seed: int = 0) -> list[tuple[Structure, str]]:
    """Generate one family (oracle-labelled). ``quick``: a tiny version for tests (seconds)."""
    oracle = AmberOracle()
    if family == "pairs":
        return charged_pairs(oracle, seed, train_per_pair=3 if quick else 60)
    if family == "shells":
        radii = SHELL_RADII[:3] if quick else SHELL_RADII
        frames, train = (3, 1) if quick else (12, 8)
        if quick:
            md = {"padding": 0.8, "equilibration": 50, "interval": 20}
            return water_shells(oracle, SHELL_SEQUENCE[:2], radii, frames, train, seed, **md)
        return water_shells(oracle, SHELL_SEQUENCE, radii, frames, train, seed)
    topology, frames, name = protein_and_frames(out, quick, seed)
    train = protein_train_frames(quick)
    if family == "segments":
        lengths = (3, 5, 12) if quick else SEGMENT_LENGTHS
        return segments(oracle, topology, frames, name, lengths, train, train_stride=8 if quick else 3)
    if family == "spheres":
        charged = _charged_residues(topology)
        radii = SPHERE_RADII[:3] if quick else SPHERE_RADII
        train_set = spheres(oracle, topology, frames[: train + 1], name, radii, charged, train)
        picks = [charged[i] for i in np.linspace(0, len(charged) - 1, 2 if quick else 4).round().astype(int)]
        evals = spheres(oracle, topology, frames, name, radii, picks, train)
        return train_set + [(s, r) for s, r in evals if r == "eval"]
    raise ValueError(f"unknown family {family!r}; use one of {FAMILIES}")


#: "train-large" members (oracle labels only): training-frame pieces of more than SMALL_ATOMS and
#: at most this many atoms, for the experiment that adds the large structures' environments (and
#: net charges) to training (``docs/accuracy.md``)
LARGE_TRAIN_ATOMS = 650
LARGE_TRAIN_FILE = "train-large.extxyz.gz"


def _sample_pieces(oracle, topology, frames, candidates, count, rng, make_ids) -> list:
    """Build up to ``count`` capped pieces from ``candidates`` ((frame, residue indices), drawn in
    random order) whose size lies in (SMALL_ATOMS, LARGE_TRAIN_ATOMS]."""
    out: list = []
    for k in rng.permutation(len(candidates)):
        if len(out) == count:
            break
        f, keep = candidates[k]
        piece, xyz = capped_piece(topology, frames[f], keep)
        if SMALL_ATOMS < len(xyz) <= LARGE_TRAIN_ATOMS:
            sid, molecule, source = make_ids(f, keep)
            out.append((oracle_structure(oracle, piece, xyz, sid, molecule, source), "train-large"))
    return out


def large_training_members(out: str, per_family: int = 30, seed: int = 0, quick: bool = False) -> list:
    """``per_family`` segments, spheres and (from a separate explicit-water MD) water shells of
    SMALL_ATOMS-LARGE_TRAIN_ATOMS atoms, cut from the training frames only, role ``train-large``."""
    oracle = AmberOracle()
    topology, frames, name = protein_and_frames(out, quick, seed)
    train = protein_train_frames(quick)
    residues = list(topology.residues())
    sizes = np.array([len(list(r.atoms())) for r in residues])
    rng = np.random.default_rng(seed + 17)
    window = (SMALL_ATOMS - 12, LARGE_TRAIN_ATOMS)  # residues' atoms; caps add up to 12
    segs = [
        (f, list(range(s, s + n)))
        for f in range(train)
        for n in SEGMENT_LENGTHS
        for s in range(0, len(residues) - n + 1)
        if window[0] < sizes[s : s + n].sum() <= window[1]
    ]

    def seg_ids(f, keep):
        first, last = keep[0] + 1, keep[-1] + 1
        molecule = f"{name}-seg:{first}-{last}"
        return f"{molecule}/f{f}", molecule, f"{name} residues {first}-{last}, ACE/NME-capped, frame {f}"

    made = _sample_pieces(oracle, topology, frames, segs, per_family, rng, seg_ids)
    spheres_by_key: dict = {}
    for f in range(train):
        for c in _charged_residues(topology):
            for radius in SPHERE_RADII:
                keep = sphere_residues(topology, frames[f], c, radius)
                if window[0] < sizes[keep].sum() <= window[1]:
                    spheres_by_key.setdefault((f, tuple(keep)), (c, radius))
    candidates = [(f, list(keep)) for f, keep in spheres_by_key]

    def sphere_ids(f, keep):
        c, radius = spheres_by_key[(f, tuple(keep))]
        label = f"{residues[c].name}{residues[c].id}"
        molecule = f"{name}-sphere:{label}/r{radius:g}"
        source = f"{name} residues within {radius:g} A of {label} CA, ACE/NME-capped, frame {f}"
        return f"{molecule}/f{f}", molecule, source

    made += _sample_pieces(oracle, topology, frames, candidates, per_family, rng, sphere_ids)

    def shell_role(f, atoms):
        return None if atoms > LARGE_TRAIN_ATOMS else ("train-large" if atoms > SMALL_ATOMS else "")

    md = {"padding": 0.8, "equilibration": 50, "interval": 20} if quick else {}
    shells = water_shells(
        oracle, SHELL_SEQUENCE[:2] if quick else SHELL_SEQUENCE, SHELL_RADII, 2 if quick else 6, 0,
        seed + 101, role=shell_role, tag="large-", **md,
    )  # fmt: skip
    made += [shells[k] for k in sorted(rng.permutation(len(shells))[:per_family])]
    return made


def build_large_training(out: str, per_family: int = 30, seed: int = 0, quick: bool = False) -> dict:
    """Write :func:`large_training_members` to ``out/oracle/train-large.extxyz.gz`` and their roles
    to ``out/roles.json`` (kept if the file exists). Returns counts by family."""
    import json

    from .extxyz import read_structures, write_structures

    path = os.path.join(out, "oracle", LARGE_TRAIN_FILE)
    roles_path = os.path.join(out, "roles.json")
    if not os.path.exists(path):
        made = large_training_members(out, per_family, seed, quick)
        with open(roles_path) as handle:
            roles = json.load(handle)
        clash = [s.id for s, _ in made if s.id in roles]
        if clash:
            raise ValueError(f"train-large ids already in the set: {clash[:3]}")
        write_structures(path, [s for s, _ in made])
        roles.update({s.id: r for s, r in made})
        with open(f"{roles_path}.tmp", "w") as handle:
            json.dump(roles, handle, indent=0, sort_keys=True)
        os.replace(f"{roles_path}.tmp", roles_path)
    counts: dict = {}
    for s in read_structures(path):
        family = s.id.split(":", 1)[0]
        counts[family] = counts.get(family, 0) + 1
    return counts


#: order of GFN2-xTB labelling: what the benchmark evaluates first, training members last
LABEL_ORDER = ("eval", "curve", "monomer", "val", "train")


def gfn2_queue(out: str, max_atoms: int = 650) -> list[Structure]:
    """The set's structures up to ``max_atoms`` in labelling order (:data:`LABEL_ORDER`, then
    size), without their oracle labels."""
    import json

    from .extxyz import read_structures

    with open(os.path.join(out, "roles.json")) as handle:
        roles = json.load(handle)
    structures = [
        s
        for family in FAMILIES
        if os.path.exists(os.path.join(out, "oracle", f"{family}.extxyz.gz"))
        for s in read_structures(os.path.join(out, "oracle", f"{family}.extxyz.gz"))
        if s.num_atoms <= max_atoms and roles.get(s.id) in LABEL_ORDER
    ]
    structures.sort(key=lambda s: (LABEL_ORDER.index(roles[s.id]), s.num_atoms, s.id))
    for s in structures:
        s.energy, s.forces, s.labels = None, None, {}
    return structures


def build_scaling_set(
    out: str, families=FAMILIES, quick: bool = False, seed: int = 0, progress=print
) -> dict:
    """Write each family to ``out/oracle/<family>.extxyz.gz`` (skipped when present: resumable)
    and the role of every structure to ``out/roles.json``. Returns {family: counts by role}."""
    import json
    import time

    from .extxyz import read_structures, write_structures

    roles_path = os.path.join(out, "roles.json")
    roles = json.load(open(roles_path)) if os.path.exists(roles_path) else {}
    summary = {}
    for family in families:
        path = os.path.join(out, "oracle", f"{family}.extxyz.gz")
        if os.path.exists(path) and all(s.id in roles for s in read_structures(path)):
            progress(f"{family}: already built ({path})")
        else:
            start = time.process_time()
            made = build_family(family, out, quick, seed)
            write_structures(path, [s for s, _ in made])
            roles.update({s.id: r for s, r in made})
            tmp = f"{roles_path}.tmp"
            with open(tmp, "w") as handle:
                json.dump(roles, handle, indent=0, sort_keys=True)
            os.replace(tmp, roles_path)
            progress(f"{family}: {len(made)} structures in {time.process_time() - start:.0f} CPU s -> {path}")
        counts: dict = {}
        for s in read_structures(path):
            counts[roles[s.id]] = counts.get(roles[s.id], 0) + 1
        summary[family] = counts
    return summary
