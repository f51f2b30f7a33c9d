//! The responses herd writes itself instead of a worker's, in one place:
//! each kind's status, body and headers, the counter it bumps and the log
//! line it gets. The router decides *when* (a full queue, a script
//! `security.limit_extensions` refuses, a worker that died); this module
//! decides *what* the client and the log see.

use bytes::BytesMut;

use super::script::Denial;
use crate::config::PoolConfig;
use crate::fastcgi::response;
use crate::pool::{BusyInfo, Counters, Pool, Refused};

/// One of herd's own answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 403: `security.limit_extensions` (or a path no script has); why.
    Forbidden(String),
    /// 404: no script would run.
    NotFound,
    /// 503: `pm.max_queue` requests wait already.
    QueueFull { max_queue: usize },
    /// 503: no worker within `request.queue_timeout`.
    QueueTimeout,
    /// 503 at once: no worker is up and none can start now; why.
    Unavailable(String),
    /// 502: the worker ended before it answered.
    WorkerLost,
    /// 504: the request ran past `request_terminate_timeout`.
    Terminated,
}

impl From<Denial> for Answer {
    fn from(d: Denial) -> Answer {
        match d {
            Denial::Forbidden(why) => Answer::Forbidden(why),
            Denial::NotFound => Answer::NotFound,
        }
    }
}

impl Answer {
    pub fn status(&self) -> u16 {
        match self {
            Answer::Forbidden(_) => 403,
            Answer::NotFound => 404,
            Answer::QueueFull { .. } | Answer::QueueTimeout | Answer::Unavailable(_) => 503,
            Answer::WorkerLost => 502,
            Answer::Terminated => 504,
        }
    }

    /// The body; the 403 and 404 are php-fpm's own.
    pub fn body(&self) -> &'static str {
        match self {
            Answer::Forbidden(_) => "Access denied.\n",
            Answer::NotFound => "File not found.\n",
            Answer::QueueFull { .. } => "Service Unavailable: the queue of this pool is full.\n",
            Answer::QueueTimeout => "Service Unavailable: timed out waiting for a worker.\n",
            Answer::Unavailable(_) => "Service Unavailable: no worker of this pool can start.\n",
            Answer::WorkerLost => "Bad Gateway: the worker ended before responding.\n",
            Answer::Terminated => {
                "Gateway Timeout: the request ran past request_terminate_timeout.\n"
            }
        }
    }

    /// Counts a refusal and logs it, at most once a second per kind (with a
    /// count of the ones held back). A 502 or 504 is logged where the worker
    /// is known, by the relay.
    pub fn account(&self, pool: &Pool, cfg: &PoolConfig, req: &BusyInfo) {
        let (method, uri) = (&req.method, &req.uri);
        let status = self.status();
        let refused = |kind, why: String| {
            Counters::bump(&pool.counters.unserved);
            pool.refused(kind, format!("{status} for {method} {uri}: {why}"));
        };
        match self {
            Answer::Forbidden(why) => refused(Refused::Script, why.clone()),
            Answer::NotFound => {
                Counters::bump(&pool.counters.unserved);
                tracing::debug!(pool = %pool.name, "404 for {method} {uri}: no such script");
            }
            Answer::QueueFull { max_queue } => refused(
                Refused::QueueFull,
                format!("the queue is full (pm.max_queue = {max_queue})"),
            ),
            Answer::QueueTimeout => {
                Counters::bump(&pool.counters.queue_timeouts);
                let after = cfg.request_queue_timeout;
                refused(
                    Refused::QueueTimeout,
                    format!("no worker within request.queue_timeout ({after:?})"),
                );
            }
            Answer::Unavailable(why) => {
                Counters::bump(&pool.counters.unavailable);
                refused(Refused::Unavailable, format!("no worker can start: {why}"));
            }
            Answer::WorkerLost => Counters::bump(&pool.counters.worker_lost),
            Answer::Terminated => Counters::bump(&pool.counters.terminated),
        }
    }

    /// The records of the response for request `id`: a 503 says when to
    /// come back (`Retry-After`, the queue's timeout).
    pub fn records(&self, id: u16, cfg: &PoolConfig) -> BytesMut {
        let mut out = BytesMut::new();
        let retry = cfg.request_queue_timeout.as_secs().clamp(1, 60).to_string();
        let headers: &[(&str, &str)] = if self.status() == 503 {
            &[("Retry-After", &retry)]
        } else {
            &[]
        };
        response::put_simple(&mut out, id, self.status(), headers, self.body());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_answer_has_its_status_and_a_503_says_when_to_retry() {
        let text = "[www]\nlisten = 127.0.0.1:9\nuser = nobody\ncommand = /bin/true\n\
                    pm = static\npm.max_children = 1\nrequest.queue_timeout = 7s\n";
        let cfg = crate::config::parse_str(
            text,
            std::path::Path::new("test.conf"),
            &crate::config::LoadOptions::default(),
        )
        .unwrap()
        .pools
        .remove(0);
        let all = [
            (Answer::Forbidden("x".into()), 403),
            (Answer::NotFound, 404),
            (Answer::QueueFull { max_queue: 1 }, 503),
            (Answer::QueueTimeout, 503),
            (Answer::Unavailable("x".into()), 503),
            (Answer::WorkerLost, 502),
            (Answer::Terminated, 504),
        ];
        for (answer, status) in all {
            assert_eq!(answer.status(), status);
            let out = answer.records(1, &cfg);
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains(&format!("Status: {status}")), "{text}");
            assert_eq!(text.contains("Retry-After: 7"), status == 503, "{text}");
            assert!(text.contains(answer.body()), "{text}");
        }
        assert_eq!(Answer::from(Denial::NotFound), Answer::NotFound);
    }
}
