//! `herd ctl top` as a person runs it: in a terminal (a pseudo-terminal
//! here), redrawing the status view as workers go busy and idle again, in
//! colour; and as plain text when its output is not a terminal.

mod support;

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::pty::{Winsize, openpty};
use support::{HERD, Herd, example_pool_with, fcgi, herd_cmd_within, wait_until};

/// A program running on the slave side of a pseudo-terminal, and all it
/// has written there so far.
struct Terminal {
    child: Child,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Terminal {
    fn run(args: &[&str], cols: u16, rows: u16) -> Terminal {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the pty"));
        let child = Command::new(HERD)
            .args(args)
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave))
            .spawn()
            .expect("start herd ctl top");
        // Only the child holds the slave now: its exit ends our reads.
        drop(pty.slave);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let screen = screen.clone();
            let mut master = File::from(pty.master);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // EIO once the slave side is closed.
                while let Ok(n) = master.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    screen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        Terminal {
            child,
            screen,
            reader: Some(reader),
        }
    }

    /// Waits for the program to exit by itself, and for the reader to have
    /// everything it wrote (the pty's end of file); its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let child = &mut self.child;
        let status = support::wait_for("the program to exit", Duration::from_secs(10), || {
            child.try_wait().unwrap()
        });
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the pty reader");
        }
        status.code()
    }

    /// Everything written so far, as text.
    fn output(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// The frames drawn so far: each starts by moving the cursor home.
    fn frames(&self) -> Vec<String> {
        self.output()
            .split("\x1b[H")
            .skip(1)
            .map(String::from)
            .collect()
    }

    /// Waits for a frame drawn after the first `after` frames that
    /// satisfies `seen` (with colours stripped); returns its index.
    fn wait_frame(&self, what: &str, after: usize, seen: impl Fn(&str) -> bool) -> usize {
        wait_until(what, Duration::from_secs(10), || {
            let frames = self.frames();
            match frames
                .iter()
                .enumerate()
                .skip(after)
                .find(|(_, f)| seen(&plain(f)))
            {
                Some((i, _)) => Ok(i),
                None => Err(format!(
                    "{} frames; the last:\n{}",
                    frames.len(),
                    frames.last().map(|f| plain(f)).unwrap_or_default()
                )),
            }
        })
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // Ctrl-C, as a person ends it (unless it ended and was reaped:
        // its pid may be someone else's by now).
        if self.child.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// `text` without terminal escape sequences.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The row of the worker with `pid` in a frame.
fn row(frame: &str, pid: u32) -> Option<String> {
    frame
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{pid} ")))
        .map(String::from)
}

#[test]
fn top_redraws_a_worker_going_busy_and_idle_again_in_a_terminal() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let conf = example_pool_with("control.listen = {dir}/ctl.sock\n", &addr, 1, "");
    let herd = Herd::start(&conf);
    let pid = herd.wait_ready(1)[0];
    let socket = herd.dir.join("ctl.sock");
    let socket = socket.to_str().unwrap();
    let top = Terminal::run(&["ctl", "--socket", socket, "top", "-d", "0.2"], 160, 40);

    let idle = top.wait_frame("a frame with the worker idle", 0, |f| {
        row(f, pid).is_some_and(|r| r.contains(" Idle "))
    });
    let slow = {
        let addr = addr.clone();
        thread::spawn(move || fcgi::get(&addr, "/?ms=2500"))
    };
    let busy = top.wait_frame("a frame with the worker busy on /?ms=2500", idle + 1, |f| {
        row(f, pid).is_some_and(|r| r.contains(" Running ") && r.contains("GET /?ms=2500 for "))
            && f.contains("workers 1 busy, 0 idle, max 1")
    });
    assert_eq!(slow.join().unwrap().status(), 200);
    let again = top.wait_frame("a frame with the worker idle again", busy + 1, |f| {
        row(f, pid).is_some_and(|r| r.contains(" Idle ") && !r.contains("GET /?ms=2500"))
    });

    // Each frame was drawn over the last, cut to the terminal's width, in
    // colour: the busy worker in yellow.
    let frames = top.frames();
    assert!(again >= 2, "{} frames", frames.len());
    assert!(
        frames[busy].contains("\x1b[33mRunning"),
        "{:?}",
        frames[busy]
    );
    for f in &frames[..again] {
        assert!(
            f.ends_with("\x1b[J"),
            "a frame ends by clearing the rest: {f:?}"
        );
        for line in plain(f).lines() {
            assert!(
                line.chars().count() <= 160,
                "wider than the terminal: {line}"
            );
        }
    }
}

#[test]
fn top_without_a_terminal_prints_plain_frames_and_ends_when_the_master_is_gone() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let conf = example_pool_with("control.listen = {dir}/ctl.sock\n", &addr, 1, "");
    let mut herd = Herd::start(&conf);
    herd.wait_ready(1);
    let socket = herd.dir.join("ctl.sock");
    let socket = socket.to_str().unwrap().to_string();
    let (code, out, err) = herd_cmd_within(
        &["ctl", "--socket", &socket, "top", "-n", "2", "-d", "0.1"],
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains('\x1b'),
        "no escape codes off a terminal: {out:?}"
    );
    assert_eq!(out.matches("master pid ").count(), 2, "{out}");

    // Watching a stop to its end: it says the master is gone, exit 0.
    let mut watch = Terminal::run(&["ctl", "--socket", &socket, "status", "--watch"], 160, 40);
    watch.wait_frame("the first frame", 0, |f| f.contains("master pid "));
    herd.signal(libc::SIGQUIT);
    assert_eq!(herd.wait_exit(Duration::from_secs(15)), Some(0));
    assert_eq!(watch.wait_exit(), Some(0), "{}", watch.output());
    assert!(
        plain(&watch.output()).contains("herd ctl top: the master is gone"),
        "{}",
        watch.output()
    );
}
