//! Unit tests for `session.rs`.

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
