//! Catching the application's panics (in `preload`, `validate` and
//! `handle`) and reporting each in one line.
//!
//! The default panic hook prints two or more lines per panic, before the
//! library knows which request it belongs to. While [`catch`] runs a closure
//! the hook only records the message and where it was raised; the caller
//! then logs one line naming the request. Panics anywhere else go to the
//! hook that was installed before ours, unchanged.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

thread_local! {
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static CAUGHT: RefCell<Option<Panicked>> = const { RefCell::new(None) };
}

/// A panic the library caught in preload, validate, worker_init or a handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panicked {
    /// The message and where the panic was raised, on one line.
    pub message: String,
    /// When `RUST_BACKTRACE` asks for one.
    pub backtrace: Option<String>,
}

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "panicked: {}", self.message)
    }
}

impl std::error::Error for Panicked {}

/// Runs `f`, turning a panic into `Err` with its message.
///
/// `AssertUnwindSafe`: after a panic the library only reads the state it
/// owns (what was sent on the response), and a handler that panicked is the
/// last one this process runs.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Panicked> {
    install_hook();
    let outer = CATCHING.with(|c| c.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(outer));
    result.map_err(|payload| {
        let caught = CAUGHT.with(|c| c.borrow_mut().take());
        caught.unwrap_or_else(|| Panicked {
            message: payload_text(&*payload),
            backtrace: None,
        })
    })
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                CAUGHT.with(|c| *c.borrow_mut() = Some(describe(info)));
            } else {
                previous(info);
            }
        }));
    });
}

fn describe(info: &PanicHookInfo<'_>) -> Panicked {
    let mut message = payload_text(info.payload());
    if let Some(at) = info.location() {
        message.push_str(&format!(" at {}:{}", at.file(), at.line()));
    }
    let trace = Backtrace::capture();
    let backtrace = (trace.status() == BacktraceStatus::Captured).then(|| trace.to_string());
    Panicked { message, backtrace }
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_carries_its_message_and_location() {
        let err = catch(|| -> u32 { panic!("no `new` method in {}", "Module") }).unwrap_err();
        assert!(
            err.message.starts_with("no `new` method in Module at "),
            "{err}"
        );
        assert!(err.message.contains("panic.rs:"), "{err}");
    }

    #[test]
    fn a_value_passes_through() {
        assert_eq!(catch(|| 7), Ok(7));
    }

    #[test]
    fn nested_catches_restore_the_outer_state() {
        let outer = catch(|| {
            let inner = catch(|| panic!("inner"));
            assert!(inner.is_err());
            panic!("outer")
        });
        let err: Panicked = outer.unwrap_err();
        assert!(err.message.starts_with("outer"), "{err}");
    }
}
