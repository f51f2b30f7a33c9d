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
mod tests {
    use super::*;
    use crate::fastcgi::{decode, pairs};

    fn frame(record_type: u8, id: u16, content: &[u8]) -> Frame {
        let mut b = BytesMut::new();
        record::put_record(&mut b, record_type, id, content);
        decode(&mut b).unwrap().unwrap()
    }

    fn begin(id: u16, role: u16, keep: bool) -> Frame {
        let mut b = BytesMut::new();
        let flags = if keep { record::KEEP_CONN } else { 0 };
        record::put_begin_request(&mut b, id, BeginRequest { role, flags });
        decode(&mut b).unwrap().unwrap()
    }

    fn params(list: &[(&str, &str)]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for (k, v) in list {
            pairs::put_pair(&mut b, k.as_bytes(), v.as_bytes());
        }
        b.to_vec()
    }

    /// The (type, id, protocol status of END_REQUEST) of each record in `out`.
    fn answers(out: &mut BytesMut) -> Vec<(u8, u16, Option<u8>)> {
        let mut got = Vec::new();
        while let Some(f) = decode(out).unwrap() {
            let status = (f.record_type() == record::END_REQUEST)
                .then(|| EndRequest::parse(f.content()).unwrap().protocol_status);
            got.push((f.record_type(), f.request_id(), status));
        }
        got
    }

    #[test]
    fn params_complete_run_the_handler() {
        let mut s = Session::default();
        let mut out = BytesMut::new();
        let p = params(&[("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/x")]);
        assert!(matches!(
            s.on_record(&begin(1, record::ROLE_RESPONDER, true), &mut out),
            Ok(Next::Read)
        ));
        assert!(matches!(
            s.on_record(&frame(record::PARAMS, 1, &p), &mut out),
            Ok(Next::Read)
        ));
        let Ok(Next::Run(begun)) = s.on_record(&frame(record::PARAMS, 1, b""), &mut out) else {
            panic!("handler not run");
        };
        assert_eq!((begun.id, begun.keep_conn), (1, true));
        assert_eq!(begun.params.get(b"REQUEST_URI"), Some(&b"/x"[..]));
        assert!(out.is_empty());
    }

    #[test]
    fn get_values_says_one_request_at_a_time() {
        let mut s = Session::default();
        let mut out = BytesMut::new();
        let q = params(&[
            ("FCGI_MAX_CONNS", ""),
            ("FCGI_MPXS_CONNS", ""),
            ("OTHER", ""),
        ]);
        s.on_record(&frame(record::GET_VALUES, 0, &q), &mut out)
            .unwrap();
        let f = decode(&mut out).unwrap().unwrap();
        assert_eq!(f.record_type(), record::GET_VALUES_RESULT);
        let got: Vec<_> = pairs::pairs(f.content()).map(Result::unwrap).collect();
        assert_eq!(
            got,
            vec![
                (&b"FCGI_MAX_CONNS"[..], &b"1"[..]),
                (b"FCGI_MPXS_CONNS", b"0")
            ]
        );
    }

    #[test]
    fn unknown_management_types_are_named_back() {
        let mut out = BytesMut::new();
        Session::default()
            .on_record(&frame(42, 0, b""), &mut out)
            .unwrap();
        let f = decode(&mut out).unwrap().unwrap();
        assert_eq!(f.record_type(), record::UNKNOWN_TYPE);
        assert_eq!(f.content()[0], 42);
    }

    #[test]
    fn second_request_and_other_roles_are_refused() {
        let mut s = Session::default();
        let mut out = BytesMut::new();
        s.on_record(&begin(1, record::ROLE_RESPONDER, true), &mut out)
            .unwrap();
        s.on_record(&begin(2, record::ROLE_RESPONDER, true), &mut out)
            .unwrap();
        assert_eq!(
            answers(&mut out),
            [(record::END_REQUEST, 2, Some(record::CANT_MPX_CONN))]
        );
        assert_eq!(
            s.on_record(&begin(1, record::ROLE_RESPONDER, true), &mut out)
                .unwrap_err(),
            ProtocolError::DuplicateRequest(1)
        );

        let mut s = Session::default();
        let next = s.on_record(&begin(3, record::ROLE_AUTHORIZER, false), &mut out);
        assert!(matches!(next, Ok(Next::Close)));
        assert_eq!(
            answers(&mut out),
            [(record::END_REQUEST, 3, Some(record::UNKNOWN_ROLE))]
        );
    }

    #[test]
    fn abort_before_the_handler_ends_the_request() {
        let mut s = Session::default();
        let mut out = BytesMut::new();
        s.on_record(&begin(5, record::ROLE_RESPONDER, true), &mut out)
            .unwrap();
        let next = s.on_record(&frame(record::ABORT_REQUEST, 5, b""), &mut out);
        assert!(matches!(next, Ok(Next::Read)));
        assert_eq!(
            answers(&mut out),
            [(record::END_REQUEST, 5, Some(record::REQUEST_COMPLETE))]
        );
        // Its late records are ignored; a new request may begin.
        assert!(matches!(
            s.on_record(&frame(record::STDIN, 5, b"x"), &mut out),
            Ok(Next::Read)
        ));
        s.on_record(&begin(5, record::ROLE_RESPONDER, true), &mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn params_past_the_limit_are_refused_before_they_are_stored() {
        let mut s = Session::default();
        let mut out = BytesMut::new();
        s.on_record(&begin(1, record::ROLE_RESPONDER, true), &mut out)
            .unwrap();
        let chunk = vec![0u8; 65528];
        let mut next = Next::Read;
        for _ in 0..(MAX_PARAMS_LEN / chunk.len() + 1) {
            next = s
                .on_record(&frame(record::PARAMS, 1, &chunk), &mut out)
                .unwrap();
            if !matches!(next, Next::Read) {
                break;
            }
        }
        assert!(matches!(
            next,
            Next::Rejected {
                reason: ProtocolError::ParamsTooLarge { id: 1, .. },
                keep: false
            }
        ));
        let f = decode(&mut out).unwrap().unwrap();
        assert_eq!(response::status_of(f.content()), Some(431));
    }

    #[test]
    fn malformed_params_get_a_400_and_the_connection_goes_on() {
        let mut s = Session::default();
        let mut out = BytesMut::new();
        s.on_record(&begin(1, record::ROLE_RESPONDER, true), &mut out)
            .unwrap();
        s.on_record(
            &frame(record::PARAMS, 1, &[0xff, 0xff, 0xff, 0xff, 0, b'a']),
            &mut out,
        )
        .unwrap();
        let next = s
            .on_record(&frame(record::PARAMS, 1, b""), &mut out)
            .unwrap();
        assert!(matches!(next, Next::Rejected { keep: true, .. }));
        let f = decode(&mut out).unwrap().unwrap();
        assert_eq!(response::status_of(f.content()), Some(400));
    }

    #[test]
    fn stdin_before_params_end_breaks_the_protocol() {
        let mut s = Session::default();
        let mut out = BytesMut::new();
        s.on_record(&begin(1, record::ROLE_RESPONDER, true), &mut out)
            .unwrap();
        let err = s
            .on_record(&frame(record::STDIN, 1, b"x"), &mut out)
            .unwrap_err();
        assert_eq!(err, ProtocolError::UnexpectedRecord(record::STDIN));
    }

    #[test]
    fn records_while_running() {
        let mut out = BytesMut::new();
        let run = |f: Frame, out: &mut BytesMut| while_running(&f, 1, out);
        assert_eq!(
            run(frame(record::STDIN, 1, b"abc"), &mut out),
            Ok(Running::Stdin(Bytes::from_static(b"abc")))
        );
        assert_eq!(
            run(frame(record::STDIN, 1, b""), &mut out),
            Ok(Running::StdinEnd)
        );
        assert_eq!(
            run(frame(record::ABORT_REQUEST, 1, b""), &mut out),
            Ok(Running::Abort)
        );
        assert_eq!(
            run(frame(record::STDIN, 9, b"x"), &mut out),
            Ok(Running::Other)
        );
        assert_eq!(
            run(begin(2, record::ROLE_RESPONDER, false), &mut out),
            Ok(Running::Other)
        );
        assert_eq!(
            answers(&mut out),
            [(record::END_REQUEST, 2, Some(record::CANT_MPX_CONN))]
        );
        assert_eq!(
            run(begin(1, record::ROLE_RESPONDER, false), &mut out),
            Err(ProtocolError::DuplicateRequest(1))
        );
    }
}
