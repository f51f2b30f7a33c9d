//! The control protocol: one JSON request per line from `herd ctl`, then
//! one or more JSON lines back; the last line has `"done": true`.
//!
//! ```text
//! {"cmd":"status"}
//! {"cmd":"reload","pool":null,"force":false,"wait":true}
//! {"cmd":"restart","pool":"www","batch":2}
//! {"cmd":"scale","pool":"www","workers":8}
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
    Scale {
        pool: String,
        workers: usize,
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
            serde_json::from_str(r#"{"cmd":"scale","pool":"www","workers":3}"#).unwrap();
        assert_eq!(
            r,
            Request::Scale {
                pool: "www".into(),
                workers: 3
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
    }
}
