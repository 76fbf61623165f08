"""Scaling laws: FLOPs accounting (`flops`), Kaplan and Chinchilla fits (`fits`), and the grid
of small training runs behind chapter 07 (`sweep`)."""

from minillm.scaling.fits import (
    CHINCHILLA_GRID,
    DEFAULT_GRID,
    PUBLISHED,
    ChinchillaFit,
    IsoFLOPFit,
    IsoFLOPProfile,
    PowerLawFit,
    chinchilla_objective,
    compute_optimal,
    fit_chinchilla,
    fit_isoflop_parabola,
    fit_isoflops,
    fit_power_law,
    huber,
    pareto_frontier,
)
from minillm.scaling.flops import allocations_for_budget, flops_6nd, param_counts, training_flops
from minillm.scaling.sweep import (
    CSV_FIELDS,
    RunSpec,
    SweepConfig,
    default_sweep_config,
    load_sweep,
    make_model_config,
    plan_sweep,
    run_sweep,
    train_point,
    write_csv,
)

__all__ = ["CHINCHILLA_GRID", "CSV_FIELDS", "ChinchillaFit", "DEFAULT_GRID", "IsoFLOPFit",
           "IsoFLOPProfile", "PUBLISHED", "PowerLawFit", "RunSpec", "SweepConfig",
           "allocations_for_budget", "chinchilla_objective", "compute_optimal",
           "default_sweep_config", "fit_chinchilla", "fit_isoflop_parabola", "fit_isoflops",
           "fit_power_law", "flops_6nd", "huber", "load_sweep", "make_model_config",
           "param_counts", "plan_sweep", "pareto_frontier", "run_sweep", "train_point",
           "training_flops", "write_csv"]
