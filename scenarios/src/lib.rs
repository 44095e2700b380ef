//! samsa-scenarios: one module per named, seeded simulation scenario.
