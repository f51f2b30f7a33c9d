//! The router: accepts clients on a pool's listener, reads their FastCGI
//! records and relays each request to a leased worker.

mod access_log;
mod answer;
mod conn;
mod deadline;
mod exchange;
mod hold;
pub mod inherit;
pub mod listener;
mod local;
mod relay;
mod script;

pub use conn::Serves;
pub use listener::{Listener, accept_loop, hand_off, handed_off};
