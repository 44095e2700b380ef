//! samsa-sim: the deterministic simulator's parts (SimDisk, skewed clocks, chaos network,
//! nemesis, history and checkers). Only `scenarios` and tests depend on it.
