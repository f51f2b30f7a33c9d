//! `herd::worker::manage`: a program that is its own process manager, as
//! FCGI::ProcManager users write them. The binary runs herd's master with a
//! config of its own (every pool runs the program itself, preloaded, unless
//! the pool names another `command`); the master starts the same binary as
//! the preloader, which forks the workers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{App, EXIT_CONFIG, EXIT_USAGE, log, preloader, run};
use crate::config::{self, LoadOptions};
use crate::master::{self, RunOptions};

/// The `main` of a self-managing program: the master with `config` (php-fpm's
/// dialect; `--config FILE` replaces it, `-R` allows root workers), or,
/// when herd started this process as a preloader or worker, that.
pub fn manage<A: App>(config: &str) -> ExitCode {
    if std::env::var_os(preloader::ENV).is_some() || fd0_listens() {
        return run::<A>();
    }
    let (file, allow_root) = match args() {
        Ok(a) => a,
        Err(e) => {
            log(format_args!("{e}\nusage: APP [--config FILE] [-R]"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let exe = match crate::config::this_program() {
        Ok(p) => p,
        Err(e) => {
            log(format_args!("cannot find my own program: {e}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let opts = LoadOptions {
        allow_root,
        embedded: Some(exe),
        prefix: None,
    };
    let loaded = match &file {
        Some(path) => config::load(path, &opts),
        None => config::parse_str(config, Path::new("<built-in config>"), &opts),
    };
    let cfg = match loaded {
        Ok(mut cfg) => {
            if file.is_none() {
                cfg.file = None;
            }
            cfg
        }
        Err(errors) => {
            log(format_args!("invalid config:\n{errors}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match master::start(
        cfg,
        RunOptions {
            config_path: file,
            load: opts,
        },
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(format_args!("{e:#}"));
            ExitCode::from(1)
        }
    }
}

/// herd's exec mode hands a worker its listening socket on fd 0.
fn fd0_listens() -> bool {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    // SAFETY: fd 0 is only borrowed for the check.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    matches!(
        nix::sys::socket::getsockopt(&borrowed, nix::sys::socket::sockopt::AcceptConn),
        Ok(true)
    )
}

fn args() -> Result<(Option<PathBuf>, bool), String> {
    let mut args = std::env::args_os().skip(1);
    let (mut file, mut allow_root) = (None, false);
    while let Some(arg) = args.next() {
        match arg.to_string_lossy().as_ref() {
            "--config" | "-c" => {
                file = Some(PathBuf::from(args.next().ok_or("--config needs a file")?))
            }
            "-R" | "--allow-root" => allow_root = true,
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok((file, allow_root))
}
