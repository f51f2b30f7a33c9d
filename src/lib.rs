//! herd: a FastCGI process manager.
//!
//! Layout:
//! - `config`: php-fpm's ini dialect, read in two stages into typed config.
//! - `fastcgi`: the record codec shared by every side herd speaks.
//! - `pool`: what router and supervisor share: the dispatch order (free
//!   slots, generation ranks), the scoreboard, leases and the queue.
//! - `router`: listeners, client connections, the request relay, herd's own
//!   answers and the script check.
//! - `supervisor`: one pool's workers: spawning (PHP engines included), the
//!   readiness gate, capacity, deploys, exits, process groups.
//! - `master`: the lifecycle of the whole process: start, signals, stop.
//! - `control`: the control socket, its protocol and `herd ctl`.
//! - `status`: php-fpm's status formats.
//! - `worker`: the Rust worker library (`herd::worker`).
//! - `quiet`: the request path's sockets, which wake the master only to read.
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
pub mod quiet;
pub mod router;
pub mod signals;
pub mod status;
pub mod supervisor;
pub mod throttle;
pub mod worker;
