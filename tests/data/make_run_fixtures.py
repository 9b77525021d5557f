"""Write the small run-folder fixtures under ``tests/data/run-folders/`` from the committed run records in
``stability/`` (30 MB), so that the tests read a few hundred kB instead.

Run once from the repository root: ``python tests/data/make_run_fixtures.py``. The output is
committed (``tests/data/PROVENANCE.md`` says what each file is). Each fixture is a run folder as
``e2former run`` writes it, cut down to fewer atoms and frames:

* ``run-folders/villin-stage1/``: ``stability/villin-20ps-stage1-run`` (the run in which ARG14's HE moved
  onto CZ at frame 13) with the protein, the first two waters and the first ion, and saved frames 12
  and 13 of its NVT stage;
* ``run-folders/villin-hcons/``: ``stability/villin-20ps-hcons-run`` with the protein, every ion and the
  first 100 waters, its NVT stage's first two saved frames and its final state (positions and
  velocities of those atoms; the kinetic energy in the file is OpenMM's for them, element masses).

Saved frames are copied byte for byte from OpenMM's DCD files, whose headers are kept but for the
frame count, the first frame's step and the atom count (CHARMM layout, as OpenMM writes it).
"""

from __future__ import annotations

import os
import shutil
import struct

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "run-folders")  # not "runs": .gitignore hides runs/


def kept_atoms(topology, waters: int, ions: int | None) -> list[int]:
    """Indices of the protein atoms, the first ``waters`` waters and the first ``ions`` ions
    (``None``: all), in file order."""
    keep, seen_waters, seen_ions = [], 0, 0
    for residue in topology.residues():
        atoms = [a.index for a in residue.atoms()]
        if residue.name == "HOH":
            seen_waters += 1
            if seen_waters <= waters:
                keep += atoms
        elif residue.name in ("NA", "CL", "Na", "Cl"):
            seen_ions += 1
            if ions is None or seen_ions <= ions:
                keep += atoms
        else:
            keep += atoms
    return keep


def write_pdb(source: str, target: str, keep: list[int]) -> None:
    pdb = app.PDBFile(source)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    kept = set(keep)
    modeller.delete([r for r in pdb.topology.residues() if not any(a.index in kept for a in r.atoms())])
    assert modeller.topology.getNumAtoms() == len(keep)
    with open(target, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle, keepIds=True)


def _block(data: bytes, offset: int) -> tuple[bytes, int]:
    """One Fortran record (length, payload, length) at ``offset``: (payload, next offset)."""
    (size,) = struct.unpack("<i", data[offset : offset + 4])
    payload = data[offset + 4 : offset + 4 + size]
    assert struct.unpack("<i", data[offset + 4 + size : offset + 8 + size])[0] == size
    return payload, offset + 8 + size


def _record(payload: bytes) -> bytes:
    return struct.pack("<i", len(payload)) + payload + struct.pack("<i", len(payload))


def subset_dcd(source: str, target: str, keep: list[int], first: int = 0, count: int | None = None) -> int:
    """Frames ``first .. first + count - 1`` (``None``: to the last) of an OpenMM DCD file, atoms
    ``keep`` only; returns the number of frames written."""
    data = open(source, "rb").read()
    control, offset = _block(data, 0)
    title, offset = _block(data, offset)
    natom_block, offset = _block(data, offset)
    (natom,) = struct.unpack("<i", natom_block)
    icntrl = list(struct.unpack("<4s9if10i", control))
    frames, start, interval = icntrl[1], icntrl[2], icntrl[3]
    has_cell = icntrl[11] == 1
    count = frames - first if count is None else count
    assert first + count <= frames
    icntrl[1] = count
    icntrl[2] = start + first * interval
    icntrl[4] = icntrl[2] + (count - 1) * interval
    out = [_record(struct.pack("<4s9if10i", *icntrl)), _record(title), _record(struct.pack("<i", len(keep)))]
    index = np.asarray(keep)
    for frame in range(frames):
        records = []
        if has_cell:
            cell, offset = _block(data, offset)
            records.append(cell)
        for _ in range(3):
            xyz, offset = _block(data, offset)
            assert len(xyz) == 4 * natom
            records.append(np.frombuffer(xyz, dtype="<f4")[index].tobytes())
        if first <= frame < first + count:
            out += [_record(r) for r in records]
    assert offset == len(data)
    with open(target, "wb") as handle:
        handle.write(b"".join(out))
    return count


def subset_state(source: str, pdb: str, target: str, keep: list[int]) -> None:
    """The final state of the kept atoms, written by OpenMM from a context of those atoms (element
    masses, no forces: only positions, velocities, box and kinetic energy are meaningful)."""
    with open(source) as handle:
        state = openmm.XmlSerializer.deserialize(handle.read())
    topology = app.PDBFile(pdb).topology
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.setDefaultPeriodicBoxVectors(*state.getPeriodicBoxVectors())
    context = openmm.Context(
        system, openmm.LangevinMiddleIntegrator(300, 1, 0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(state.getPositions(asNumpy=True)[keep])
    context.setVelocities(state.getVelocities(asNumpy=True)[keep])
    kept = context.getState(getPositions=True, getVelocities=True, getEnergy=True)
    # OpenMM's kinetic energy of the subset is 1/2 m v^2 of its velocities (no time shift)
    v = kept.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    m = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(keep))])
    direct = 0.5 * (m[:, None] * v**2).sum()
    assert abs(kept.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / direct - 1) < 1e-9
    with open(target, "w") as handle:
        handle.write(openmm.XmlSerializer.serialize(kept))


def _unpack(folder: str) -> None:
    """The stability/ run records keep their frames and states packed (scripts/stability_records.py)."""
    import sys

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from stability_records import unpack_for

    unpack_for(folder)


def make(run: str, name: str, waters: int, ions: int | None, first: int, count: int, state: bool) -> None:
    source = os.path.join(ROOT, "stability", run)
    _unpack(source)
    target = os.path.join(OUT, name)
    os.makedirs(os.path.join(target, "stages", "01-minimize"), exist_ok=True)
    os.makedirs(os.path.join(target, "stages", "02-nvt"), exist_ok=True)
    for path in ("run.json", os.path.join("stages", "01-minimize", "done.json")):
        shutil.copyfile(os.path.join(source, path), os.path.join(target, path))
    keep = kept_atoms(app.PDBFile(os.path.join(source, "prepared.pdb")).topology, waters, ions)
    write_pdb(os.path.join(source, "prepared.pdb"), os.path.join(target, "prepared.pdb"), keep)
    nvt = os.path.join("stages", "02-nvt")
    dcd = os.path.join(nvt, "trajectory.dcd")
    subset_dcd(os.path.join(source, dcd), os.path.join(target, dcd), keep, first, count)
    if state:
        xml = os.path.join(nvt, "state.xml")
        subset_state(
            os.path.join(source, xml), os.path.join(target, "prepared.pdb"), os.path.join(target, xml), keep
        )


if __name__ == "__main__":
    make("villin-20ps-stage1-run", "villin-stage1", waters=2, ions=1, first=12, count=2, state=False)
    make("villin-20ps-hcons-run", "villin-hcons", waters=100, ions=None, first=0, count=2, state=True)
    shutil.copyfile(
        os.path.join(ROOT, "stability", "villin_protein.pdb"),
        os.path.join(ROOT, "tests", "data", "villin_protein.pdb"),
    )
