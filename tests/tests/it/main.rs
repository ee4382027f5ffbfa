//! Every integration test, in one binary (one link instead of one per
//! area): a module per area. Tests that need root and network namespaces
//! skip, saying so, without it.

mod common;

mod admissions_kernel;
mod benign_traffic;
mod blocking;
mod cli_errors;
mod control;
mod crowdsec_collection;
mod decisions_kernel;
mod decoys;
mod displaced_kernel;
mod distributed;
mod fleet;
mod fleet_outbox;
mod fleet_sweep;
mod flood;
mod flows;
mod gather_kernel;
mod history;
mod interfaces;
mod journal;
mod memory;
mod operations;
mod operator_trust;
mod packaging;
mod pairs_kernel;
mod parser_host;
mod parser_kernel;
mod policy_kernel;
mod protected;
mod restart;
mod scan_detection;
#[macro_use]
mod scan_families;
mod scan_types;
mod service;
mod signals;
mod slow_scans;
