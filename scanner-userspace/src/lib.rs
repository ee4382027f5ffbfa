//! The scanner daemon: load -> poll -> detect -> report.
//!
//! The binary (`scanner`) is a thin CLI over these modules; the integration
//! tests use [`load`] directly to run the XDP program with BPF_PROG_TEST_RUN.

pub mod audit;
pub mod batch;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decisions;
pub mod detect;
pub mod hits;
pub mod iface;
pub mod journal;
pub mod load;
pub mod manual;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod pin;
pub mod policy;
pub mod poll;
pub mod ports;
pub mod reload;
pub mod report;
pub mod reported;
pub mod requests;
pub mod services;
pub mod settings;
pub mod top;
pub mod trw;
pub mod xdp_owner;
