//! tether's integration tests: one binary, one module per feature, against the real router and a
//! real SQLite file in a temporary data directory.

// The no-unwrap lints guard the service; in tests a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod access;
mod audit_listing;
mod authorize;
mod cascades;
mod cluster;
mod cluster_cli;
mod cluster_head;
mod cluster_tls;
mod cluster_work;
mod console;
mod contract;
mod coverage;
mod durability;
mod groups;
mod identifiers;
mod input;
mod instance;
mod invariant;
mod oauth_clients;
mod propagation;
mod races;
mod replica;
mod roles;
mod scim;
mod serve;
mod signals;
mod ssf_out;
mod stale_allows;
mod tokens;
mod walkthrough;
