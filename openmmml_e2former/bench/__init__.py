"""Benchmarks that ship with the package (``e2former bench ...``).

``speed``    the speed/memory harness: model energy+forces time, OpenMM ms/step, peak memory,
             E2Former-LSR vs local-only vs MACE-OFF23 vs AMBER14, in one process tree
``systems``  the villin-based benchmark systems (100 / 582 / 2000 / 8867 atoms, replicated boxes)
"""
