"""openmm-ml plug-in: ``MLPotential('e2former-lsr')`` and ``MLPotential('e2former')``.

Registered through the ``openmmml.potentials`` entry point.  Options (given to
``MLPotential(...)`` or to ``createSystem``/``createMixedSystem``; the latter win):

modelPath      checkpoint (ours or the authors'), a file name in the weights cache or a known
               weights name (``openmmml_e2former.weights``)
referenceEnergies  True: add the energy head's known per-element reference energies
               (absolute energies; forces unchanged)
randomInit     True: a seeded random network (tests and timing only), with ``seed``
preset         size of the random network: 'small' (default) or 'paper'
precision      'single' (default) or 'double'
backend        'torchforce' or 'pythonforce' (the network runs in Python); default: torchforce
               on the pinned stack, pythonforce under openmm >= 8.6 (``default_backend``)
device         pythonforce: 'auto' (default: CUDA when torch sees a GPU), 'cpu' or 'cuda'
compile        pythonforce: True runs the network through torch.compile (CUDA graphs on a GPU)
recompute      pythonforce: True recomputes activations (local blocks, long-range attention) in
               the backward pass instead of keeping them: less memory for large ML regions,
               more time (docs/speed.md); TorchScript (torchforce) cannot express it
charge         total charge of the ML region (default: rounded sum of the MM charges of
               the ML atoms when the System has a NonbondedForce, else 0)
fragmentIds    explicit fragment id per ML atom (default: from the topology)
ligandFragments  'residue' (one fragment per ligand residue; default for our weights) or
               'brics' (ligands cut at RDKit BRICS bonds, ``openmmml_e2former.molecule_fragments``;
               default for the authors' weights)
linkAtoms      cap bonds cut by the ML region with hydrogens (default True); False
               refuses such a selection
useCUDAGraphs  passed to TorchForce (default False; the module is CUDA-graph safe: docs/speed.md)
fragmentSelection  'all' (default, smooth) or 'topk' (authors' top-K cut)
head           energy head of an authors' checkpoint with several
"""

from __future__ import annotations

import io
import warnings

import openmm

from .chemistry import formal_charge

NO_WEIGHTS_MESSAGE = (
    "No trained weights were found for {name!r}. Pass modelPath= to MLPotential: an "
    "openmmml-e2former checkpoint, the authors' E2Former-LSR checkpoint "
    "(IQuestLab/UBio-E2Former-LSR), or a model exported with `e2former export`. "
    "For tests and timing only, randomInit=True, seed=0 gives a seeded random network."
)


# The classes follow openmm-ml's MLPotentialImplFactory/MLPotentialImpl interface by duck
# typing: importing openmmml here would be circular (openmmml imports every registered
# plug-in while it is itself being imported).


class E2FormerLSRPotentialImplFactory:
    """Creates the long-range-aware potential ('e2former-lsr')."""

    def createImpl(self, name: str, **args) -> E2FormerPotentialImpl:
        return E2FormerPotentialImpl(name, long_range=True, **args)


class E2FormerLocalPotentialImplFactory:
    """Creates the local-only potential ('e2former')."""

    def createImpl(self, name: str, **args) -> E2FormerPotentialImpl:
        return E2FormerPotentialImpl(name, long_range=False, **args)


class E2FormerPotentialImpl:
    """Builds a TorchForce (or PythonForce) evaluating E2Former on the ML atoms."""

    def __init__(self, name: str, long_range: bool, **args):
        self.name = name
        self.long_range = long_range
        self.args = args
        #: what the last ``addForces`` loaded: file, energy unit, reference convention, ...
        self.metadata: dict = {}

    def addForces(self, topology, system, atoms, forceGroup, **args):
        options = {**self.args, **args}
        indices = list(range(topology.getNumAtoms())) if atoms is None else [int(a) for a in atoms]
        if not indices:
            raise ValueError("the ML atom selection is empty: choose at least one atom for the ML region")
        topo_atoms = list(topology.atoms())
        numbers = _atomic_numbers(topo_atoms, indices)
        model = self._load_model(options)
        ligands = options.get("ligandFragments", self._default_ligand_fragments())
        # openmm-ml >= 1.8 caps cut bonds itself: a virtual-site hydrogen per cut bond, passed
        # to us as an extra ML atom. It joins its ML atom's fragment and is not capped again.
        sites = _link_sites(system, topology, indices)
        real = [i for i in indices if i not in sites]
        own = dict(zip(real, _fragment_ids(topology, real, options.get("fragmentIds"), ligands), strict=True))
        fragments = [own[sites[i][0]] if i in sites else own[i] for i in indices]
        caps = _cut_bonds(topology, set(indices), bool(options.get("linkAtoms", True)), set(sites.values()))
        periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
        charge = _total_charge(system, topology, indices, options.get("charge"))
        force = self._build_force(
            options, model, numbers, fragments, charge, indices, caps, periodic, topology, system
        )
        force.setForceGroup(forceGroup)
        system.addForce(force)

    def getSupportedEmbeddings(self) -> list[str]:
        """openmm-ml >= 1.8: no embedding of our own; its plug-ins ('mechanical', ...) apply."""
        return []

    def getMLLongRange(self) -> bool:
        """openmm-ml >= 1.8: the network's interactions end at its cutoff (no periodic
        long-range electrostatics), so a periodic mechanical embedding keeps the MM ones."""
        return False

    def _default_ligand_fragments(self) -> str:
        """BRICS pieces for the authors' weights (their training data were cut that way),
        one fragment per ligand residue for ours."""
        from .checkpoints import AUTHORS_SOURCE

        return "brics" if self.metadata.get("source") == AUTHORS_SOURCE else "residue"

    def _build_force(
        self, options, model, numbers, fragments, charge, indices, caps, periodic, topology, system
    ):
        import torch

        from .export import OpenMMModule

        dtype = _precision(options.get("precision", "single"))
        _check_elements(model, numbers, indices)
        if periodic:
            _check_periodic_box(topology, system, model.config.max_cutoff)
        module = OpenMMModule(model, numbers, fragments, charge, indices, caps, periodic, dtype)
        backend = options.get("backend") or default_backend()
        if options.get("recompute", False):
            if backend != "pythonforce":
                raise ValueError(
                    f"recompute=True needs backend='pythonforce', not {backend!r}: TorchScript, "
                    "which a TorchForce runs, cannot recompute activations in the backward pass"
                )
            module.model.recompute = True
        if backend == "torchforce" and torchforce_cannot_be_copied():
            warnings.warn(
                f"backend='torchforce' under openmm {openmm.__version__}: a TorchForce cannot be "
                "deserialised there (XmlSerializer, copy.deepcopy, CustomCVForce, interpolate=True "
                "crash the process); it runs, but use backend='pythonforce' (the default here) for "
                "any of those",
                stacklevel=4,
            )
        if backend == "torchforce":
            scripted = torch.jit.script(module.eval())
            return _torch_force(scripted, periodic, bool(options.get("useCUDAGraphs", False)))
        if backend == "pythonforce":
            computation = TorchComputation(
                module.eval(), periodic, options.get("device", "auto"), bool(options.get("compile", False))
            )
            force = openmm.PythonForce(computation)
            force.setUsesPeriodicBoundaryConditions(periodic)
            return force
        raise ValueError(f"backend must be 'torchforce' or 'pythonforce', not {backend!r}")

    def _load_model(self, options):
        import torch

        from .checkpoints import load_checkpoint
        from .model import PRESETS

        overrides = {}
        if "fragmentSelection" in options:
            overrides["fragment_selection"] = options["fragmentSelection"]
        if options.get("randomInit", False):
            torch.manual_seed(int(options.get("seed", 0)))
            preset = PRESETS[options.get("preset", "small")]
            if not self.long_range:
                overrides["num_long_layers"] = 0
            self.metadata = {"path": None, "random": True, "seed": int(options.get("seed", 0))}
            return _random_model(preset, overrides)
        from .weights import resolve_weights

        explicit = options.get("modelPath")
        path = resolve_weights(str(explicit)) if explicit else default_weights(self.name)
        reference = bool(options.get("referenceEnergies", False))
        model, metadata = load_checkpoint(str(path), options.get("head"), reference, **overrides)
        self.metadata = {"path": str(path), **metadata}
        if not self.long_range and model.config.num_long_layers > 0:
            raise ValueError(
                f"{path} holds a long-range (E2Former-LSR) model; use MLPotential('e2former-lsr') "
                "for it, 'e2former' is the local-only variant"
            )
        return model


def torchforce_cannot_be_copied() -> bool:
    """True under openmm >= 8.6, where deserialising a TorchForce segfaults (openmmtorch 1.5 and
    acellera-openmmtorch 1.10 alike: README, "Install")."""
    major, minor = (int(part) for part in openmm.__version__.split(".")[:2])
    return (major, minor) >= (8, 6)


def default_backend() -> str:
    """'torchforce' on the pinned stack; 'pythonforce' where a TorchForce cannot be copied
    (openmm >= 8.6) or no openmmtorch is installed."""
    import importlib.util

    if torchforce_cannot_be_copied() or importlib.util.find_spec("openmmtorch") is None:
        return "pythonforce"
    return "torchforce"


def model_max_cutoff(name: str, **options) -> float:
    """The largest cutoff (Å) of the network ``MLPotential(name, **options)`` loads: a periodic
    box must be at least twice as wide."""
    return float(_model_config(name, options).max_cutoff)


def model_elements(name: str, **options) -> list[int]:
    """The atomic numbers the network ``MLPotential(name, **options)`` loads supports."""
    return [int(z) for z in _model_config(name, options).elements]


def _model_config(name: str, options: dict):
    impl = E2FormerPotentialImpl(name, long_range=name != "e2former", **options)
    return impl._load_model(options).config


def default_weights(name: str) -> str:
    """Weights used without ``modelPath``: the shipped checkpoint ``potentials/<name>.pt``, else
    ``<name>.pt`` in the weights cache (``openmmml_e2former.weights``; downloaded when a URL is
    configured). Raises a ValueError saying which file to put where."""
    from .checkpoints import find_shipped_potential
    from .weights import WeightsNotFoundError, resolve_weights

    shipped = find_shipped_potential(name)
    if shipped is not None:
        return shipped
    try:
        return resolve_weights(f"{name}.pt")
    except WeightsNotFoundError as exc:
        raise ValueError(f"{NO_WEIGHTS_MESSAGE.format(name=name)} ({exc})") from exc


def load_network(model_path: str | None = None, name: str = "e2former-lsr"):
    """(float32 network in eval mode, its file) from ``model_path`` or, without it, the default
    weights of ``name``: for checks that call the network directly, outside OpenMM."""
    from .checkpoints import load_checkpoint

    path = model_path or default_weights(name)
    return load_checkpoint(path)[0].float().eval(), path


def has_default_weights(name: str) -> bool:
    """True when :func:`default_weights` finds a file without downloading anything."""
    import os

    from .checkpoints import find_shipped_potential
    from .weights import cache_dir

    return find_shipped_potential(name) is not None or os.path.isfile(os.path.join(cache_dir(), f"{name}.pt"))


def _random_model(preset, overrides):
    from .model import E2FormerLSR

    return E2FormerLSR(preset(**overrides)).eval()


class TorchComputation:
    """PythonForce callback around an :class:`~openmmml_e2former.export.OpenMMModule`.

    ``device``: 'auto' (CUDA when torch sees a GPU, else the CPU), 'cpu' or 'cuda[:k]' —
    where the network runs, whatever OpenMM's platform.  ``compile``: run the module through
    ``torch.compile(fullgraph=True, dynamic=False)`` (mode 'reduce-overhead', i.e. CUDA
    graphs, on a GPU), as openmm-ml 1.8 does for its own models.  The graph plan is made
    eagerly on the first call; when a step reports that a graph outgrew it (the energy comes
    back NaN with the module's ``overflow`` flag set, read after the call, when the result is
    on the host anyway), the module re-plans and the step is recomputed.  Picklable, so a
    System holding it survives XmlSerializer and deepcopy.
    """

    def __init__(self, module, periodic: bool, device: str = "auto", compile: bool = False):
        self.module = module
        self.periodic = periodic
        self.device_name = device
        self.compile = compile
        self._setup()

    def _setup(self) -> None:
        import torch

        name = self.device_name
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(name)
        self.module = self.module.to(self.device)
        self.static = bool(getattr(self.module, "static", False))
        if self.static:
            self.module.host_checks = False
        self._compiled = None

    def _runner(self):
        import torch

        if not self.compile:
            return self.module
        if self._compiled is None:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._compiled = torch.compile(self.module, fullgraph=True, dynamic=False, mode=mode)
        return self._compiled

    def _evaluate(self, positions, box):
        import torch

        x = positions.detach().requires_grad_(True)
        energy = self._runner()(x, box)
        (gradient,) = torch.autograd.grad(energy, x)
        return energy.detach(), gradient

    def __call__(self, state):
        import torch

        positions = torch.tensor(
            state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer), dtype=torch.float64
        ).to(self.device)
        box = None
        if self.periodic:
            vectors = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(openmm.unit.nanometer)
            box = torch.tensor(vectors, dtype=torch.float64).to(self.device)
        if self.static and not self.module.planned:
            self.module.plan(positions, box)
        energy, gradient = self._evaluate(positions, box)
        value = float(energy)
        if self.static and bool(self.module.overflow):
            self.module.plan(positions, box)  # grow: shapes change, torch.compile recompiles
            energy, gradient = self._evaluate(positions, box)
            value = float(energy)
        return value, -gradient.cpu().numpy()

    def __getstate__(self):
        import torch

        buffer = io.BytesIO()
        torch.save(self.module.cpu(), buffer)
        self.module.to(self.device)
        return {
            "module": buffer.getvalue(),
            "periodic": self.periodic,
            "device": self.device_name,
            "compile": self.compile,
        }

    def __setstate__(self, state):
        import torch

        try:
            module = torch.load(io.BytesIO(state["module"]), weights_only=False)
            module.planned = False  # plan again for the positions of the new Context
        except Exception:  # a System saved before 0.2: the module was stored as TorchScript
            module = torch.jit.load(io.BytesIO(state["module"]))
        self.module = module
        self.periodic = state["periodic"]
        self.device_name = state.get("device", "auto")
        self.compile = state.get("compile", False)
        self._setup()


def ensure_torch_plugins() -> None:
    """Load openmm-torch's platform plugins that failed because OpenMM was imported before torch.

    ``import openmm`` loads every plugin at once; openmmtorch's kernels need libtorch's CUDA
    libraries, which are only present after ``import torch``. Without this a Context fails
    with "does not support all required kernels" whenever the user imported openmm first.
    """
    import torch  # noqa: F401  (makes libtorch and its libraries available)

    for failure in openmm.Platform.getPluginLoadFailures():
        if "OpenMMTorch" not in failure or not failure.startswith("Error loading library "):
            continue
        path = failure[len("Error loading library ") :].split(": ")[0]
        try:
            openmm.Platform.loadPluginLibrary(path)
        except Exception:  # e.g. the OpenCL kernels on a machine without OpenCL
            pass


class _NoSimtkWarning:
    """Logging filter for the "importing 'simtk.openmm' is deprecated" line that openmmtorch 1.5's
    wrapper (``import simtk.openmm``) makes OpenMM print on every import: not the user's doing."""

    @staticmethod
    def filter(record) -> bool:
        return "simtk.openmm" not in record.getMessage()


def _import_torchforce():
    import logging

    root = logging.getLogger()
    root.addFilter(_NoSimtkWarning)
    try:
        from openmmtorch import TorchForce
    finally:
        root.removeFilter(_NoSimtkWarning)
    return TorchForce


def _torch_force(scripted, periodic: bool, use_cuda_graphs: bool):
    ensure_torch_plugins()
    TorchForce = _import_torchforce()  # noqa: N806  (a class)

    force = TorchForce(scripted)
    force.setUsesPeriodicBoundaryConditions(periodic)
    force.setOutputsForces(False)
    force.setProperty("useCUDAGraphs", "true" if use_cuda_graphs else "false")
    return force


def _precision(name: str):
    import torch

    table = {"single": torch.float32, "double": torch.float64}
    if name not in table:
        raise ValueError(f"precision must be 'single' or 'double', not {name!r}")
    return table[name]


def _atomic_numbers(topo_atoms, indices: list[int]) -> list[int]:
    missing = [i for i in indices if topo_atoms[i].element is None]
    if missing:
        names = [f"{topo_atoms[i].name} (atom {i})" for i in missing[:10]]
        raise ValueError(
            f"ML atoms without an element (virtual sites or unknown atoms) cannot be ML atoms: {names}"
        )
    return [topo_atoms[i].element.atomic_number for i in indices]


def _check_elements(model, numbers: list[int], indices: list[int]) -> None:
    allowed = set(model.config.elements)
    bad = [(i, z) for i, z in zip(indices, numbers, strict=True) if z not in allowed]
    if bad:
        symbols = {z: openmm.app.Element.getByAtomicNumber(z).symbol for _, z in bad}
        shown = ", ".join(f"atom {i} ({symbols[z]})" for i, z in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        supported = ", ".join(openmm.app.Element.getByAtomicNumber(z).symbol for z in sorted(allowed))
        raise ValueError(
            f"this E2Former model does not support the element(s) of {shown}{more}; "
            f"supported elements: {supported}. Leave these atoms in the MM region."
        )


def _fragment_ids(topology, indices: list[int], explicit, ligands: str = "residue") -> list[int]:
    from .fragments import fragment_ids_from_topology, normalize_fragment_ids

    if explicit is not None:
        return [int(f) for f in normalize_fragment_ids(explicit, len(indices))]
    if ligands == "brics":
        from .molecule_fragments import molecule_fragment_ids

        return [int(f) for f in molecule_fragment_ids(topology, indices)]
    if ligands != "residue":
        raise ValueError(f"ligandFragments must be 'residue' or 'brics', not {ligands!r}")
    return [int(f) for f in fragment_ids_from_topology(topology, indices)]


def _link_sites(system, topology, indices: list[int]) -> dict[int, tuple[int, int]]:
    """{ML index of a link atom: (its ML atom, its MM atom)} for the link atoms openmm-ml >= 1.8
    adds on bonds its ML region cuts: a virtual site (LocalCoordinatesSite on the two bonded
    atoms) appended to the System and, as hydrogen ``V<k>`` in residue ``V<k>``, to the
    Topology. With ``interpolate=True`` openmm-ml hands us an empty System; then the k-th
    ``V<k>`` atom caps the k-th bond of openmm-ml's own ``findLinkBonds``."""
    selected = set(indices)
    sites: dict[int, tuple[int, int]] = {}
    if system.getNumParticles() > 0:
        for i in indices:
            if i >= system.getNumParticles() or not system.isVirtualSite(i):
                continue
            site = system.getVirtualSite(i)
            if not isinstance(site, openmm.LocalCoordinatesSite) or site.getNumParticles() != 2:
                continue
            a, b = site.getParticle(0), site.getParticle(1)
            if a in selected and b not in selected:
                sites[i] = (a, b)
        return sites
    bonded = {atom.index for bond in topology.bonds() for atom in bond}
    named = {}
    for atom in topology.atoms():
        name = atom.name
        if (
            atom.index in selected
            and atom.index not in bonded
            and name == atom.residue.name
            and name[:1] == "V"
            and name[1:].isdigit()
        ):
            named[int(name[1:])] = atom.index
    if not named:
        return sites
    from openmmml.embeddings.utilities import findLinkBonds

    bonds = findLinkBonds(topology, [i for i in indices if i not in set(named.values())])
    if sorted(named) != list(range(len(bonds))):
        raise ValueError(
            f"openmm-ml's link atoms ({len(named)} V<k> atoms) do not match the {len(bonds)} bonds "
            "the ML region cuts"
        )
    return {named[k]: (int(bonds[k][0]), int(bonds[k][1])) for k in range(len(bonds))}


def _cut_bonds(topology, selected: set, allow: bool, capped: set = frozenset()) -> list[tuple[int, int]]:
    """(ML atom, MM atom) for every bond that crosses the ML region boundary and is not in
    ``capped`` (bonds openmm-ml already capped with a link atom)."""
    from .export import cut_bonds

    cuts = cut_bonds(topology, selected)
    if cuts and not allow:
        raise ValueError(
            f"the ML region cuts {len(cuts)} covalent bond(s), e.g. {cuts[:5]} (ML atom, MM atom); "
            "enable linkAtoms=True or choose whole molecules"
        )
    return [pair for pair in cuts if tuple(pair) not in capped]


def _total_charge(system, topology, indices: list[int], charge: float | None) -> float:
    """Explicit charge, else the rounded MM charges of the ML atoms, else formal charges.

    With ``interpolate=True`` openmm-ml hands us an empty System (no NonbondedForce), so
    the formal charges from residue names and hydrogens are the fallback.
    """
    if charge is not None:
        return float(charge)
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            total = sum(
                force.getParticleParameters(i)[0].value_in_unit(openmm.unit.elementary_charge)
                for i in indices
            )
            if abs(total - round(total)) > 0.05:
                warnings.warn(
                    f"the MM charges of the ML region sum to {total:.3f} e, not an integer "
                    "(a cut through a residue?); using the rounded value. Pass charge= to override.",
                    stacklevel=3,
                )
            return float(round(total))
    return float(formal_charge(topology, indices))


def _check_periodic_box(topology, system, cutoff_angstrom: float) -> None:
    vectors = topology.getPeriodicBoxVectors()
    if vectors is None:
        vectors = system.getDefaultPeriodicBoxVectors()
    widths = [vectors[k][k].value_in_unit(openmm.unit.nanometer) for k in range(3)]
    need = 2 * cutoff_angstrom / 10.0
    if min(widths) < need:
        raise ValueError(
            f"periodic box too small for E2Former: widths {[round(w, 3) for w in widths]} nm, but every "
            f"edge must be at least {need:.2f} nm (twice the {cutoff_angstrom / 10:.2f} nm cutoff); "
            "add solvent padding"
        )


__all__: list[str] = [
    "E2FormerLSRPotentialImplFactory",
    "E2FormerLocalPotentialImplFactory",
    "TorchComputation",
]
