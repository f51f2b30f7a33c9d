//! herd: a FastCGI process manager.
//!
//! Layout:
//! - `config`: php-fpm's ini dialect, read in two stages into typed config.
//! - `fastcgi`: the record codec shared by every side herd speaks.
//! - `pool`: the scoreboard, idle set and queue the router and supervisor share.
//! - `router`: listeners, client connections and the request relay.
//! - `supervisor`: spawning, the readiness gate, reaping and backoff.
//! - `master`: the lifecycle of the whole process: start, signals, stop.
//! - `control`: the control socket, its protocol and `herd ctl`.
//! - `status`: php-fpm's status formats.
//! - `worker`: the Rust worker library (`herd::worker`).
//! - `client`: a FastCGI client (`herd call`, the gate's probes).
//! - `example_app`: the FastCGI application built into the binary.

pub mod client;
pub mod config;
pub mod control;
pub mod example_app;
pub mod fastcgi;
pub mod logging;
pub mod master;
pub mod phase;
pub mod pool;
pub mod router;
pub mod signals;
pub mod status;
pub mod supervisor;
pub mod throttle;
pub mod worker;
