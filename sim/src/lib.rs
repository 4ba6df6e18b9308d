//! tinychain-sim: the deterministic simulator that drives many `tinychain-core` nodes on one
//! virtual clock from one seed, with injected network, crash, clock and metric faults and
//! safety/liveness checkers after every step.
//!
//! Empty until the simulator issue fills it. Today `tinychain_core::testkit::LocalNet` is the
//! small fault-free-by-default harness the core's own scenario tests use.
