//! tinychain-sim: the deterministic simulator. It runs N real `tinychain-core` nodes (the same
//! `step` code a server runs) on one virtual clock, from one `u64` seed, with injected network,
//! crash, pause, clock and metric faults, and checks safety after every step and liveness after
//! the faults heal.
//!
//! - `options`: what to simulate (`SimOptions`, fault kinds, durations).
//! - `rng`: the seeded random streams, one per purpose.
//! - `network`: latency, jitter, loss, duplication, partitions, bandwidth.
//! - `links`: the connection model: each core's peer policy (the server's, from `tinychain-net`)
//!   on virtual time, dialing, handshakes, links that carry messages, idle timeouts and resets.
//! - `faults`: the fault schedule and the events it injects.
//! - `metrics`: fake CPU and network usage per node.
//! - `workload`: signed transfers, some deliberately invalid.
//! - `checker`: the invariants checked after every step, and the liveness phase.
//! - `engine`: the event loop that ties them together, the trace and the report.
//! - `scenario`: scenario files (TOML): faults at set times and the expectations to check.
//! - `series`: the time series a run records when asked, and the figures the report plots.
//! - `report`: the simulation report, one self-contained HTML file with SVG plots (`--report`).

pub mod adversary;
pub mod checker;
pub mod engine;
pub mod faults;
pub mod links;
pub mod metrics;
pub mod network;
pub mod options;
pub mod replay;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod series;
pub mod workload;
