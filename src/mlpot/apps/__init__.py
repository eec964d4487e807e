"""Applications built on trained potentials: spectra."""
