//! `herd::worker`: write a FastCGI responder in Rust.
//!
//! An application is a type implementing [`App`]; its `main` is
//! `herd::worker::run::<MyApp>()`. The program follows the FastCGI spec:
//! it accepts connections on the listening socket it finds on fd 0, so it
//! runs under herd (`command = /path/to/app`) and under any other FastCGI
//! manager (spawn-fcgi, ...); with `--listen HOST:PORT` (or a unix socket
//! path) it listens by itself.
//!
//! ```no_run
//! use std::io::Write;
//! use herd::worker::{App, Error, Request, Response};
//!
//! struct Hello;
//!
//! impl App for Hello {
//!     fn preload() -> Result<Self, Error> {
//!         Ok(Hello)
//!     }
//!
//!     fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> Result<(), Error> {
//!         resp.header("Content-Type", "text/plain")?;
//!         writeln!(resp, "hello, {}", req.path())?;
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     herd::worker::run::<Hello>()
//! }
//! ```
//!
//! # Lifecycle
//!
//! 1. [`App::preload`] loads what every request needs: config, templates,
//!    read-only tables.
//! 2. [`App::validate`] checks that what was loaded is really usable. The
//!    incident that motivated it: a module that loaded, but had no `new`
//!    method, so every request failed. A failure here (or in preload, or a
//!    panic in either) exits with [`EXIT_CONFIG`] before a request is
//!    served; list 78 in the pool's `worker.fatal_exit_codes` and herd
//!    refuses the deploy instead of restarting the program in a loop.
//!    `app --check` runs these two steps and exits 0 or 78, for CI and deploy
//!    scripts.
//! 3. [`App::worker_init`] runs in each worker before it serves.
//! 4. [`App::handle`] runs for each request, one at a time.
//!
//! # What preload may do
//!
//! With herd's `spawn = preload`, preload and validate run once in a
//! preloader process, and every worker is forked from it: the workers share
//! what preload built, copy-on-write, and start in milliseconds. A fork
//! copies the memory of the whole process but only the thread that called
//! it, so:
//!
//! - **No threads, no async runtimes** (tokio, rayon pools, a logger with
//!   a background thread). A thread's locks and work would be frozen
//!   half-way in every worker. The library counts the threads of the
//!   process after validate and refuses to go on ([`EXIT_CONFIG`]) when
//!   there is more than one, in exec mode too, so an application that
//!   passes `--check` works in both modes.
//! - **Files, parsed config, templates, read-only data: yes.** That is what
//!   preload is for; pages never written after the fork stay shared.
//! - **Connections that must not be shared** (databases, caches, anything
//!   with per-connection state, and random generators that must differ per
//!   worker) are opened in [`App::worker_init`], which runs in each worker
//!   after the fork. Threads the application needs start there too.
//!
//! # Requests
//!
//! The handler gets a [`Request`] (params, complete before it runs; the body
//! as a stream, through [`std::io::Read`]) and a [`Response`] (status,
//! headers, and the body through [`std::io::Write`], streamed in records).
//! After the handler returns, the library drains the body it did not read
//! and ends the request. When the handler returns an error, the client
//! gets a 500 if nothing was sent yet, and the error is logged to stderr.
//! When it panics, the client gets a 500 if nothing was sent yet, one line
//! goes to stderr, and the worker exits with [`EXIT_PANIC`] once the
//! response is out, so its manager replaces it: a panic may have left the
//! application's state half-changed. (With `panic = "abort"` the process
//! dies at once instead, and the manager answers 502.)
//!
//! A malformed request gets a FastCGI error (a 400, a 431 for params over
//! 1 MiB, or `FCGI_UNKNOWN_ROLE`, `FCGI_CANT_MPX_CONN`); a malformed record
//! closes its connection. Either way the worker goes on serving.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | `--check` passed |
//! | 64 | bad command line, or fd 0 is not a listening socket |
//! | 70 | a handler panicked; its request was answered |
//! | 74 | the listening socket failed |
//! | 75 | `worker_init` failed |
//! | 78 | preload or validate failed or panicked, or preload left threads |

mod body;
mod conn;
mod listener;
mod manage;
mod panic;
mod preload;
pub mod preloader;
mod request;
mod response;
mod session;

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;
use std::sync::OnceLock;

pub use anyhow::{Context, Error, bail, ensure};
pub use listener::{ListenError, Listener};
pub use manage::manage;
pub use panic::Panicked;
pub use preload::{LoadError, ensure_single_threaded, load, threads};
pub use request::Request;
pub use response::{Response, ResponseError};
pub use session::MAX_PARAMS_LEN;

/// Bad command line, or no listening socket on fd 0 (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// A handler panicked (`EX_SOFTWARE`).
pub const EXIT_PANIC: u8 = 70;
/// The listening socket failed (`EX_IOERR`).
pub const EXIT_LISTENER: u8 = 74;
/// `worker_init` failed (`EX_TEMPFAIL`): a new worker may succeed.
pub const EXIT_WORKER_INIT: u8 = 75;
/// Preload or validate failed (`EX_CONFIG`): retrying cannot help.
pub const EXIT_CONFIG: u8 = 78;

/// A FastCGI responder.
pub trait App: Sized + 'static {
    /// Runs once, before any worker serves (with `spawn = preload`, before
    /// any worker is forked): load config, templates, read-only data. Must
    /// not start threads or async runtimes; see the module documentation.
    fn preload() -> Result<Self, Error>;

    /// Checks that what preload loaded is really usable. An error (or a
    /// panic) refuses the program: it exits with [`EXIT_CONFIG`].
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Runs in each worker before it serves: open the connections and start
    /// the threads that must not be shared across a fork. An error exits
    /// with [`EXIT_WORKER_INIT`].
    fn worker_init(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// Answers one request. See the module documentation for what an error
    /// or a panic does.
    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> Result<(), Error>;
}

/// The `main` of an application: parses the command line, loads the
/// application and serves until the listening socket fails or a handler
/// panics. See the module documentation for the exit codes.
pub fn run<A: App>() -> ExitCode {
    // Started by herd with `spawn = preload`.
    if let Some(fd) = std::env::var(preloader::ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return preloader::run::<A>(fd);
    }
    let mode = match Mode::parse(std::env::args_os().skip(1)) {
        Ok(mode) => mode,
        Err(e) => {
            log(format_args!("{e}\n{USAGE}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match mode {
        Mode::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Mode::Check => check::<A>(),
        Mode::Serve { listen } => start::<A>(listen.as_deref()),
    }
}

fn check<A: App>() -> ExitCode {
    match load::<A>() {
        Ok(_) => {
            log(format_args!("preload and validate passed"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            log(format_args!("{e}"));
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn start<A: App>(listen: Option<&str>) -> ExitCode {
    // The socket first: a program started the wrong way says so at once,
    // before a long preload.
    let listener = match listen {
        Some(addr) => Listener::bind(addr),
        None => Listener::from_stdin(),
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            log(format_args!("{e}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut app = match load::<A>() {
        Ok(app) => app,
        Err(e) => {
            log(format_args!("{e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match panic::catch(|| app.worker_init()) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            log(format_args!("failed to initialize the worker: {e:#}"));
            return ExitCode::from(EXIT_WORKER_INIT);
        }
        Err(p) => {
            log(format_args!("worker_init {p}"));
            return ExitCode::from(EXIT_WORKER_INIT);
        }
    }
    let stop = serve(&listener, &app);
    if let Stop::Accept(_) = stop {
        log(format_args!("{stop}")); // a panic was logged with its request
    }
    ExitCode::from(stop.exit_code())
}

/// Why [`serve`] returned.
#[derive(Debug)]
pub enum Stop {
    /// A handler panicked; its request was answered.
    HandlerPanicked,
    /// Accepting failed for a reason of the listener's own.
    Accept(std::io::Error),
}

impl Stop {
    pub fn exit_code(&self) -> u8 {
        match self {
            Stop::HandlerPanicked => EXIT_PANIC,
            Stop::Accept(_) => EXIT_LISTENER,
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::HandlerPanicked => write!(f, "exiting after a handler panicked"),
            Stop::Accept(e) => write!(f, "failed to accept: {e}"),
        }
    }
}

/// Serves connections from `listener`, one at a time, each to its end.
/// Returns only when a handler panicked or the listener failed; the caller
/// then exits with [`Stop::exit_code`]. This is the loop a forked worker
/// runs, after [`App::worker_init`].
pub fn serve<A: App>(listener: &Listener, app: &A) -> Stop {
    loop {
        let sock = match listener.accept() {
            Ok(sock) => sock,
            Err(e) => return Stop::Accept(e),
        };
        if conn::serve(&sock, app) == conn::ConnEnd::Panicked {
            return Stop::HandlerPanicked;
        }
    }
}

const USAGE: &str = "\
usage: APP [--listen HOST:PORT | --listen PATH] [--check]
  (no option)  serve FastCGI on the listening socket on fd 0, as a FastCGI
               manager (herd, spawn-fcgi) starts the program
  --listen     listen on this address or unix socket path instead
  --check      run preload and validate, then exit 0, or 78 on a failure
Other arguments are left to the application.";

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Serve { listen: Option<String> },
    Check,
    Help,
}

impl Mode {
    /// Reads the library's own options; anything else is the
    /// application's (it may read `std::env::args` in preload).
    fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Mode, String> {
        let mut args = args.into_iter();
        let (mut listen, mut check) = (None, false);
        while let Some(arg) = args.next() {
            let arg = arg.to_string_lossy().into_owned();
            match arg.as_str() {
                "-h" | "--help" => return Ok(Mode::Help),
                "--check" => check = true,
                "--listen" => {
                    let addr = args.next().ok_or("--listen needs an address")?;
                    listen = Some(addr.to_string_lossy().into_owned());
                }
                _ => {
                    if let Some(addr) = arg.strip_prefix("--listen=") {
                        listen = Some(addr.to_string());
                    }
                }
            }
        }
        match (check, listen) {
            (true, Some(_)) => Err("--check and --listen do not go together".into()),
            (true, None) => Ok(Mode::Check),
            (false, listen) => Ok(Mode::Serve { listen }),
        }
    }
}

/// Writes one line to stderr, named after the program (herd tags each line
/// of a worker's output with its pool and pid).
pub(crate) fn log(msg: fmt::Arguments<'_>) {
    static NAME: OnceLock<String> = OnceLock::new();
    let name = NAME.get_or_init(|| {
        std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "herd-worker".into())
    });
    eprintln!("{name}: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Mode, String> {
        Mode::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn command_line() {
        assert_eq!(parse(&[]), Ok(Mode::Serve { listen: None }));
        assert_eq!(parse(&["--check", "app.toml"]), Ok(Mode::Check));
        let listen = Some("127.0.0.1:9000".to_string());
        assert_eq!(
            parse(&["--listen", "127.0.0.1:9000"]),
            Ok(Mode::Serve {
                listen: listen.clone()
            })
        );
        assert_eq!(
            parse(&["--listen=127.0.0.1:9000"]),
            Ok(Mode::Serve { listen })
        );
        assert!(parse(&["--listen"]).is_err());
        assert!(parse(&["--check", "--listen", "x:1"]).is_err());
        assert_eq!(parse(&["-h"]), Ok(Mode::Help));
    }
}
