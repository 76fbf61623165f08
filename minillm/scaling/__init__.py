"""Scaling laws: FLOPs accounting (`flops`), Kaplan and Chinchilla fits (`fits`), and the grid
of small training runs behind chapter 07 (`sweep`).

The entry points are exported here; everything else is imported from its module
(e.g. `minillm.scaling.fits`).
"""

from minillm.scaling.fits import (
    ChinchillaFit,
    EnvelopeFit,
    IsoFLOPFit,
    PowerLawFit,
    compute_optimal,
    fit_chinchilla,
    fit_envelope,
    fit_isoflops,
    fit_power_law,
)
from minillm.scaling.flops import flops_6nd, mfu, peak_flops, training_flops
from minillm.scaling.sweep import SweepConfig, default_sweep_config, load_sweep, run_sweep

__all__ = ["ChinchillaFit", "compute_optimal", "default_sweep_config", "EnvelopeFit",
           "fit_chinchilla", "fit_envelope", "fit_isoflops", "fit_power_law", "flops_6nd", "IsoFLOPFit", "load_sweep", "mfu",
           "peak_flops", "PowerLawFit", "run_sweep", "SweepConfig", "training_flops"]
