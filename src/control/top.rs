//! `herd ctl top` (and `status --watch`): the status view redrawn every
//! interval, as `top` and `passenger-status` users expect. On a terminal
//! each frame is drawn over the last (cursor home, every line cleared to
//! its end, the rest of the screen cleared), cut to the terminal's width,
//! in colour; anywhere else frames follow each other as plain text. It
//! ends after `--count` frames, with Ctrl-C, or when the master it watched
//! is gone (a stop it followed to its end).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::client::Answers;
use super::protocol::Request;
use super::view::{self, Style};

pub struct Options {
    pub interval: Duration,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Each frame as the master's JSON line.
    pub json: bool,
}

/// Where frames go, and whether it is a terminal.
pub struct Screen<'a> {
    pub out: &'a mut dyn Write,
    pub tty: bool,
}

pub fn run(socket: &Path, opts: &Options, screen: Screen<'_>) -> anyhow::Result<ExitCode> {
    let Screen { out, tty } = screen;
    let style = Style::for_terminal(tty);
    let mut frames = 0u64;
    loop {
        let (raw, done) = match Answers::ask(socket, &Request::Status).and_then(Answers::done) {
            Ok(answer) => answer,
            Err(e) if frames > 0 => {
                writeln!(out, "herd ctl top: the master is gone: {e:#}")?;
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                eprintln!("herd ctl: {e:#} (is herd running? see --socket / --config)");
                return Ok(ExitCode::from(2));
            }
        };
        let text = if opts.json {
            format!("{raw}\n")
        } else {
            let title = format!(
                "herd ctl top: every {:.1?}, {}; Ctrl-C quits",
                opts.interval,
                crate::status::clf_now()
            );
            let body = format!(
                "{}\n{}",
                style_title(style, &title),
                view::render(&done, style)
            );
            if tty {
                redraw(&body, terminal_width())
            } else {
                format!("{body}\n")
            }
        };
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            other => other?,
        }
        frames += 1;
        if opts.count.is_some_and(|n| frames >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(opts.interval);
    }
}

fn style_title(style: Style, title: &str) -> String {
    if style.colour {
        format!("\x1b[7m{title}\x1b[0m")
    } else {
        title.to_string()
    }
}

/// One frame drawn over the last: from the top left, each line cut to
/// `width` and cleared to its end, then the rest of the screen cleared.
fn redraw(body: &str, width: Option<usize>) -> String {
    let mut out = String::from("\x1b[H");
    for line in body.lines() {
        out.push_str(&fit(line, width));
        out.push_str("\x1b[K\r\n");
    }
    out.push_str("\x1b[J");
    out
}

/// `line` cut to `width` visible characters; colour escapes do not count
/// and a cut line ends with a reset.
fn fit(line: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return line.to_string();
    };
    let mut out = String::with_capacity(line.len());
    let mut shown = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            out.push(c);
            for e in chars.by_ref() {
                out.push(e);
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        if shown == width {
            out.push_str("\x1b[0m");
            break;
        }
        out.push(c);
        shown += 1;
    }
    out
}

/// The terminal's width in columns, if stdout is one that says.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct passed, which
    // lives for the call; on a descriptor that is no terminal it fails.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_to_the_width_without_counting_colours() {
        assert_eq!(fit("abcdef", Some(4)), "abcd\x1b[0m");
        assert_eq!(
            fit("\x1b[32mabc\x1b[0mdef", Some(4)),
            "\x1b[32mabc\x1b[0md\x1b[0m"
        );
        assert_eq!(fit("abc", Some(4)), "abc");
        assert_eq!(fit("abcdef", None), "abcdef");
    }

    #[test]
    fn a_frame_is_drawn_over_the_last() {
        let frame = redraw("one\ntwo", Some(80));
        assert_eq!(frame, "\x1b[Hone\x1b[K\r\ntwo\x1b[K\r\n\x1b[J");
    }
}
