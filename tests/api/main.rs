//! tether's integration tests: one binary, one module per feature, against the real router and a
//! real SQLite file in a temporary data directory.

mod helpers;

mod access;
mod authorize;
mod cascades;
mod coverage;
mod durability;
mod input;
mod invariant;
mod races;
mod propagation;
mod tokens;
mod walkthrough;
