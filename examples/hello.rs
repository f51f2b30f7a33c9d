//! The smallest herd::worker application: `Hello from generation N, pid P`.
//!
//! Run it under herd (`command = /path/to/hello`) or alone:
//! `cargo run --example hello -- --listen 127.0.0.1:9000`, then
//! `herd call 127.0.0.1:9000 /`.
//!
//! For tests and demonstrations, `?echo` answers with the request body,
//! `?fail` returns an error (a 500) and `?panic` panics (a 500, then the
//! worker exits and herd starts another).

use std::io::{self, Write};
use std::process::ExitCode;

use herd::worker::{self, App, Error, Request, Response, bail};

struct Hello {
    generation: String,
}

impl App for Hello {
    fn preload() -> Result<Self, Error> {
        let generation = std::env::var("HERD_GENERATION").unwrap_or_else(|_| "0".into());
        Ok(Hello { generation })
    }

    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> Result<(), Error> {
        if req.query_param("panic").is_some() {
            panic!("asked to panic by {}", req.uri());
        }
        if req.query_param("fail").is_some() {
            bail!("asked to fail by {}", req.uri());
        }
        resp.header("Content-Type", "text/plain; charset=utf-8")?;
        if req.query_param("echo").is_some() {
            // The body streams through: neither side holds all of it.
            io::copy(req, resp)?;
            return Ok(());
        }
        // The pid is read per request: with `spawn = preload` the workers
        // are forked after preload, each with its own.
        writeln!(
            resp,
            "Hello from generation {}, pid {}",
            self.generation,
            std::process::id()
        )?;
        Ok(())
    }
}

fn main() -> ExitCode {
    worker::run::<Hello>()
}
