//! Loading the application once, before any worker serves: `preload`,
//! then `validate`, then the check that nothing left a thread running.
//!
//! With `spawn = preload` this runs in the preloader and the workers are
//! forked from it afterwards; in exec mode it runs in each worker. The rules
//! are the same in both modes, so an application that passes `--check`
//! behaves the same under either.

use super::panic::{self, Panicked};
use super::{App, Error};

/// Why the application cannot serve; its exit code is [`super::EXIT_CONFIG`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to preload: {0:#}")]
    Preload(Error),
    #[error("failed to validate what preload loaded: {0:#}")]
    Validate(Error),
    #[error("{step} {panic}")]
    Panicked { step: &'static str, panic: Panicked },
    #[error(
        "{0} threads are running after preload and validate: workers are forked from \
         this process and a fork copies only the calling thread, so preload must not \
         start threads or async runtimes (start them in App::worker_init)"
    )]
    Threads(usize),
}

/// Runs `preload` and `validate`, catching panics, and checks that the
/// process is still single-threaded.
pub fn load<A: App>() -> Result<A, LoadError> {
    let app = match panic::catch(A::preload) {
        Ok(Ok(app)) => app,
        Ok(Err(e)) => return Err(LoadError::Preload(e)),
        Err(panic) => {
            return Err(LoadError::Panicked {
                step: "preload",
                panic,
            });
        }
    };
    match panic::catch(|| app.validate()) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(LoadError::Validate(e)),
        Err(panic) => {
            return Err(LoadError::Panicked {
                step: "validate",
                panic,
            });
        }
    }
    ensure_single_threaded()?;
    Ok(app)
}

/// Refuses to go on (to fork) when the process has more than one thread.
/// Without `/proc` (a chroot) the count is unknown and the check passes.
pub fn ensure_single_threaded() -> Result<(), LoadError> {
    match threads() {
        Some(n) if n > 1 => Err(LoadError::Threads(n)),
        _ => Ok(()),
    }
}

/// The threads of this process, from `/proc/self/task`.
pub fn threads() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{Request, Response};

    /// Loads per the `MODE` it is built with: 0 fine, 1 preload fails,
    /// 2 validate fails, 3 validate panics.
    struct Probe<const MODE: u8>;

    impl<const MODE: u8> App for Probe<MODE> {
        fn preload() -> Result<Self, Error> {
            if MODE == 1 {
                anyhow::bail!("no config at /etc/app.toml");
            }
            Ok(Probe)
        }

        fn validate(&self) -> Result<(), Error> {
            match MODE {
                2 => anyhow::bail!("template 'index' has no body"),
                3 => panic!("module has no `new` method"),
                _ => Ok(()),
            }
        }

        fn handle(&self, _: &mut Request<'_>, _: &mut Response<'_>) -> Result<(), Error> {
            Ok(())
        }
    }

    fn load_error<A: App>() -> String {
        match load::<A>() {
            Ok(_) => "loaded".into(),
            Err(LoadError::Threads(_)) => "threads".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn each_step_names_its_failure() {
        assert_eq!(
            load_error::<Probe<1>>(),
            "failed to preload: no config at /etc/app.toml"
        );
        assert_eq!(
            load_error::<Probe<2>>(),
            "failed to validate what preload loaded: template 'index' has no body"
        );
        let panicked = load_error::<Probe<3>>();
        assert!(
            panicked.starts_with("validate panicked: module has no `new` method at "),
            "{panicked}"
        );
    }

    #[test]
    fn threads_are_counted() {
        // The test harness runs tests on threads of its own: more than one.
        assert!(threads().is_some_and(|n| n >= 1));
        // Success or the thread check, never a load error.
        assert!(matches!(
            load_error::<Probe<0>>().as_str(),
            "loaded" | "threads"
        ));
    }
}
