"""Applications of a learned potential: free energies along collective variables, path
integrals and isotope effects, QM/ML embedding, multi-state (diabatic) models and the
studies built on them (second virial coefficients, growth barriers, torsion fitting).

Each module is a library a user calls from Python; the CLI commands are thin wrappers.
``apps`` sits after ``validation`` in the import order and meets ``training``,
``active`` and ``validation`` only through their public packages.
"""
