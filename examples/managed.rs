//! A program that is its own process manager, as FCGI::ProcManager users
//! write them: `herd::worker::manage` runs herd's master in this binary
//! with the config below (or `--config FILE`), and the master forks the
//! workers from this same program, preloaded.
//!
//! `cargo run --example managed`, then `herd call 127.0.0.1:9100 /`.

use std::io::Write;
use std::process::ExitCode;

use herd::worker::{self, App, Error, Request, Response};

struct Greeter {
    greeting: String,
}

impl App for Greeter {
    fn preload() -> Result<Self, Error> {
        Ok(Greeter {
            greeting: "Hello from a self-managed program".into(),
        })
    }

    fn validate(&self) -> Result<(), Error> {
        worker::ensure!(!self.greeting.is_empty(), "no greeting");
        Ok(())
    }

    fn handle(&self, _req: &mut Request<'_>, resp: &mut Response<'_>) -> Result<(), Error> {
        writeln!(
            resp,
            "{}, generation {}, pid {}",
            self.greeting,
            std::env::var("HERD_GENERATION").unwrap_or_default(),
            std::process::id()
        )?;
        Ok(())
    }
}

const CONFIG: &str = "
[greeter]
listen = 127.0.0.1:9100
pm = static
pm.max_children = 4
";

fn main() -> ExitCode {
    worker::manage::<Greeter>(CONFIG)
}
