"""Export of mlpot models for other simulation engines (metatomic: LAMMPS, i-PI, TorchSim,
ASE). Needs the ``export`` extra (``metatomic-torch``, ``metatomic-ase``)."""
