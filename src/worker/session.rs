//! The FastCGI side of one connection as a state machine without IO: each
//! record in, the records to answer with and what the connection does next.
//!
//! A worker serves one request at a time (it says so in
//! `FCGI_GET_VALUES`): a second `FCGI_BEGIN_REQUEST` while one is active is
//! refused with `FCGI_CANT_MPX_CONN`, a role other than responder with
//! `FCGI_UNKNOWN_ROLE`. Params are collected up to [`MAX_PARAMS_LEN`]; the
//! handler runs when they are complete and reads `FCGI_STDIN` itself,
//! through [`while_running`]. Records for a request id that is not active
//! are ignored, as the spec says.

use bytes::{Bytes, BytesMut};

use super::request::Params;
use crate::fastcgi::record::{self, BeginRequest, EndRequest, HEADER_LEN};
use crate::fastcgi::{Frame, ProtocolError, response};

/// The most params bytes one request may carry; checked before they are
/// stored, so a peer cannot make the worker reserve more.
pub const MAX_PARAMS_LEN: usize = 1 << 20;

/// What the connection does after a record.
#[derive(Debug)]
pub enum Next {
    /// Read the next record.
    Read,
    /// The params of a request are complete: run the handler.
    Run(Begun),
    /// The request was answered without the handler (bad params); `keep`
    /// says whether the connection stays open.
    Rejected { reason: ProtocolError, keep: bool },
    /// Close the connection once the answer is written.
    Close,
}

/// A request whose params are complete.
#[derive(Debug)]
pub struct Begun {
    pub id: u16,
    pub keep_conn: bool,
    pub params: Params,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Params {
        id: u16,
        keep_conn: bool,
        raw: Vec<u8>,
    },
}

/// One connection's state between requests.
#[derive(Debug, Default)]
pub struct Session {
    state: State,
}

impl Session {
    /// Takes one record; answers go to `out`. An `Err` means the peer broke
    /// the protocol and the connection must be closed.
    pub fn on_record(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<Next, ProtocolError> {
        let id = frame.request_id();
        if id == record::NULL_REQUEST_ID {
            management(frame, out);
            return Ok(Next::Read);
        }
        if frame.record_type() == record::BEGIN_REQUEST {
            return self.begin(id, BeginRequest::parse(frame.content())?, out);
        }
        let State::Params { id: active, .. } = self.state else {
            return Ok(Next::Read); // not an active request: ignored
        };
        if id != active {
            return Ok(Next::Read);
        }
        match frame.record_type() {
            record::PARAMS if frame.content().is_empty() => Ok(self.params_done(out)),
            record::PARAMS => Ok(self.more_params(frame.content(), out)),
            record::ABORT_REQUEST => {
                let keep = self.end_active();
                end_request(out, id, 0, record::REQUEST_COMPLETE);
                Ok(if keep { Next::Read } else { Next::Close })
            }
            // A responder gets its body after the params, never before.
            record::STDIN => Err(ProtocolError::UnexpectedRecord(record::STDIN)),
            _ => Ok(Next::Read),
        }
    }

    fn begin(
        &mut self,
        id: u16,
        begin: BeginRequest,
        out: &mut BytesMut,
    ) -> Result<Next, ProtocolError> {
        match self.state {
            State::Params { id: active, .. } if active == id => {
                Err(ProtocolError::DuplicateRequest(id))
            }
            State::Params { .. } => {
                end_request(out, id, 0, record::CANT_MPX_CONN);
                Ok(Next::Read)
            }
            State::Idle if begin.role != record::ROLE_RESPONDER => {
                end_request(out, id, 0, record::UNKNOWN_ROLE);
                Ok(if begin.keep_conn() {
                    Next::Read
                } else {
                    Next::Close
                })
            }
            State::Idle => {
                self.state = State::Params {
                    id,
                    keep_conn: begin.keep_conn(),
                    raw: Vec::new(),
                };
                Ok(Next::Read)
            }
        }
    }

    fn more_params(&mut self, content: &[u8], out: &mut BytesMut) -> Next {
        let State::Params { id, raw, .. } = &mut self.state else {
            unreachable!("checked by on_record");
        };
        if raw.len() + content.len() > MAX_PARAMS_LEN {
            let id = *id;
            self.state = State::Idle;
            response::put_simple(out, id, 431, &[], "request parameters too large\n");
            // The rest of its params are on their way: the connection is
            // not worth reading to the end of them.
            let reason = ProtocolError::ParamsTooLarge {
                id,
                limit: MAX_PARAMS_LEN,
            };
            return Next::Rejected {
                reason,
                keep: false,
            };
        }
        raw.extend_from_slice(content);
        Next::Read
    }

    fn params_done(&mut self, out: &mut BytesMut) -> Next {
        let State::Params { id, keep_conn, raw } = std::mem::take(&mut self.state) else {
            unreachable!("checked by on_record");
        };
        match Params::parse(raw) {
            Ok(params) => Next::Run(Begun {
                id,
                keep_conn,
                params,
            }),
            Err(reason) => {
                response::put_simple(out, id, 400, &[], "malformed request parameters\n");
                Next::Rejected {
                    reason,
                    keep: keep_conn,
                }
            }
        }
    }

    /// Forgets the active request; returns its `FCGI_KEEP_CONN`.
    fn end_active(&mut self) -> bool {
        match std::mem::take(&mut self.state) {
            State::Params { keep_conn, .. } => keep_conn,
            State::Idle => true,
        }
    }
}

/// A record that arrived while the handler of request `id` runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Running {
    Stdin(Bytes),
    StdinEnd,
    Abort,
    /// Answered in `out`, or ignored.
    Other,
}

/// Takes one record while the handler of request `id` runs.
pub fn while_running(frame: &Frame, id: u16, out: &mut BytesMut) -> Result<Running, ProtocolError> {
    let this = frame.request_id();
    if this == record::NULL_REQUEST_ID {
        management(frame, out);
        return Ok(Running::Other);
    }
    match frame.record_type() {
        record::BEGIN_REQUEST if this == id => Err(ProtocolError::DuplicateRequest(id)),
        record::BEGIN_REQUEST => {
            BeginRequest::parse(frame.content())?;
            end_request(out, this, 0, record::CANT_MPX_CONN);
            Ok(Running::Other)
        }
        _ if this != id => Ok(Running::Other),
        record::STDIN if frame.content().is_empty() => Ok(Running::StdinEnd),
        record::STDIN => {
            let len = frame.header.content_length as usize;
            Ok(Running::Stdin(
                frame.raw.slice(HEADER_LEN..HEADER_LEN + len),
            ))
        }
        record::ABORT_REQUEST => Ok(Running::Abort),
        _ => Ok(Running::Other),
    }
}

/// Answers a management record (request id 0): `FCGI_GET_VALUES` with what
/// this worker can do (one connection, one request, no multiplexing), any
/// other type with `FCGI_UNKNOWN_TYPE`.
fn management(frame: &Frame, out: &mut BytesMut) {
    if frame.record_type() != record::GET_VALUES {
        record::put_unknown_type(out, frame.record_type());
        return;
    }
    // One connection and one request at a time, no multiplexing.
    record::put_get_values_result(out, frame.content(), record::serial_worker_value);
}

pub fn end_request(out: &mut BytesMut, id: u16, app_status: u32, protocol_status: u8) {
    record::put_end_request(
        out,
        id,
        EndRequest {
            app_status,
            protocol_status,
        },
    );
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
