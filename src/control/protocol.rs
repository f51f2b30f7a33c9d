//! The control protocol: one JSON request per line from `herd ctl`, then
//! one or more JSON lines back; the last line has `"done": true`.
//!
//! ```text
//! {"cmd":"status"}
//! {"cmd":"reload","pool":null,"force":false,"wait":true}
//! {"cmd":"restart","pool":"www","batch":2}
//! {"cmd":"scale","pool":"www","max_children":8}
//! {"cmd":"stop","fast":false}
//! ```
//!
//! Replies: `{"done":true,"ok":true,...}` or `{"done":true,"ok":false,"error":"..."}`;
//! `reload --wait` first streams `{"event":"progress",...}` lines.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Reload {
        #[serde(default)]
        pool: Option<String>,
        #[serde(default)]
        force: bool,
        #[serde(default)]
        wait: bool,
    },
    /// Only the hard restart exists; a graceful one is a forced reload.
    Restart {
        #[serde(default)]
        pool: Option<String>,
        #[serde(default)]
        batch: Option<usize>,
    },
    /// Set a pool's `pm.max_children` at run time.
    Scale {
        pool: String,
        #[serde(alias = "workers")]
        max_children: u32,
    },
    Stop {
        #[serde(default)]
        fast: bool,
    },
    /// OpenMetrics text of every pool.
    Metrics,
    /// Replace the master binary: a new master takes over the listeners.
    Upgrade,
}

/// One line of the master's answer: progress while a request runs, then
/// the last line, `done`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Done(Done),
    Progress(Progress),
}

/// The last line of an answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// Always true: what tells the client the answer is over.
    pub done: bool,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `metrics`: OpenMetrics text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// `status`: the master, its phase, and each pool in php-fpm's JSON
    /// status fields plus `listen` and `deploy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// During a graceful stop, seconds until its current step ends: the
    /// listeners close (`depooling`, `shutdown.depool_delay`), or the
    /// requests still running are stopped (`draining`,
    /// `process_control_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_ends_in: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools: Option<Vec<serde_json::Value>>,
}

/// A step of a long request: a rollout's progress (`reload --wait`), or a
/// message (`upgrade`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Always `progress`.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<usize>,
}

impl Line {
    pub fn ok(message: impl Into<String>) -> Line {
        Line::Done(Done {
            done: true,
            ok: true,
            message: Some(message.into()),
            ..Done::default()
        })
    }

    pub fn error(error: impl Into<String>) -> Line {
        Line::Done(Done {
            done: true,
            ok: false,
            error: Some(error.into()),
            ..Done::default()
        })
    }

    pub fn message(message: impl Into<String>) -> Line {
        Line::Progress(Progress {
            event: "progress".into(),
            message: Some(message.into()),
            ..Progress::default()
        })
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Line::Done(_))
    }
}

/// Longest request line accepted; the socket is local and 0600, but a
/// bound keeps a confused client from growing the master's memory.
pub const MAX_LINE: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_documented() {
        let r: Request = serde_json::from_str(r#"{"cmd":"reload","wait":true}"#).unwrap();
        assert_eq!(
            r,
            Request::Reload {
                pool: None,
                force: false,
                wait: true
            }
        );
        let r: Request =
            serde_json::from_str(r#"{"cmd":"scale","pool":"www","max_children":3}"#).unwrap();
        assert_eq!(
            r,
            Request::Scale {
                pool: "www".into(),
                max_children: 3
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
    }

    #[test]
    fn answer_lines_round_trip_and_tell_the_last_one() {
        for line in [
            Line::ok("rollout done"),
            Line::error("deploy refused: x"),
            Line::message("new master started"),
            Line::Progress(Progress {
                event: "progress".into(),
                pool: Some("www".into()),
                generation: Some(2),
                state: Some("rolling out".into()),
                ready: Some(1),
                old: Some(3),
                target: Some(4),
                ..Progress::default()
            }),
        ] {
            let text = serde_json::to_string(&line).unwrap();
            let back: Line = serde_json::from_str(&text).unwrap();
            assert_eq!(back, line, "{text}");
            assert_eq!(back.is_done(), text.contains(r#""done":true"#), "{text}");
        }
    }
}
