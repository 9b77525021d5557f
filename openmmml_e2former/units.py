"""Units and physical constants (CODATA 2018 exact SI values): the one place they are defined.

A leaf module: it imports nothing from the package, so the network, the OpenMM glue, the data
tools and the analysis can all use it.
"""

from __future__ import annotations

import math

ELEMENTARY_CHARGE = 1.602176634e-19  # C (and J per eV)
AVOGADRO = 6.02214076e23  # 1/mol
VACUUM_PERMITTIVITY = 8.8541878128e-12  # F/m

EV_TO_KJ_PER_MOL = ELEMENTARY_CHARGE * AVOGADRO / 1000.0  # 96.485332...
KJ_PER_MOL_TO_EV = 1.0 / EV_TO_KJ_PER_MOL
KCAL_TO_KJ = 4.184
#: kJ/mol per unit of each energy unit the network may predict in
KJ_PER_MOL = {"eV": EV_TO_KJ_PER_MOL, "kcal/mol": KCAL_TO_KJ, "kJ/mol": 1.0}
ANGSTROM_PER_NM = 10.0

#: Coulomb's constant e^2 / (4 pi eps0) in eV * Angstrom (14.3996...)
COULOMB_EV_ANGSTROM = ELEMENTARY_CHARGE / (4.0 * math.pi * VACUUM_PERMITTIVITY) * 1e10
#: the same in each energy unit the network may predict in (times Angstrom)
COULOMB = {unit: COULOMB_EV_ANGSTROM * EV_TO_KJ_PER_MOL / scale for unit, scale in KJ_PER_MOL.items()}
