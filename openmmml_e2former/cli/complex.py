"""``e2former complex TARGET [LIGAND] -o FILE``: write a real protein-ligand complex that ships in
openmmforcefields (the JACS benchmark set) as one PDB file, and print the ligand's SMILES and the
command that runs the ligand-in-pocket preset on it (docs/ligands.md)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ..simulate.complexes import TARGETS

    parser = sub.add_parser("complex", help="write an example protein-ligand complex (PDB) and its SMILES")
    parser.add_argument("target", choices=sorted(TARGETS), help="protein target")
    parser.add_argument(
        "ligand", nargs="?", default=None, help="ligand name in the target's SDF (omit: list)"
    )
    parser.add_argument("-o", "--output", default=None, help="PDB file to write (default: TARGET-LIGAND.pdb)")
    parser.add_argument("--resname", default="LIG", help="residue name of the ligand in the file")
    parser.set_defaults(func=run_complex)


def run_complex(args) -> None:
    from ..simulate.complexes import ligand_names, write_complex

    if args.ligand is None:
        print(f"ligands of {args.target}: {' '.join(ligand_names(args.target))}")
        return
    path = args.output or f"{args.target}-{args.ligand}.pdb"
    smiles = write_complex(args.target, args.ligand, path, args.resname)
    print(f"wrote {path} ({args.target} with ligand {args.ligand} as residue {args.resname}, heavy atoms)")
    print(f"SMILES: {smiles}")
    print(
        f'run: e2former run ligand-in-pocket --pdb {path} --ligand {args.resname} --ligand-smiles "{smiles}" '
        f"-o runs/{args.target}-{args.ligand}"
    )
