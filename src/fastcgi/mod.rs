//! The FastCGI protocol: one codec for every side herd speaks. The router
//! decodes nginx's records and relays them to workers, `herd call` and the
//! warmup requests are clients, the example app and the worker library are
//! applications.

pub mod frame;
pub mod pairs;
pub mod record;
pub mod response;

pub use frame::{Frame, decode};

/// What a peer can get wrong on the wire.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unsupported FastCGI version {0}")]
    BadVersion(u8),
    #[error("malformed {0} body")]
    BadBody(&'static str),
    #[error("name-value pair runs past the end of its record")]
    TruncatedPair,
    #[error("params of request {id} exceed {limit} bytes")]
    ParamsTooLarge { id: u16, limit: usize },
    #[error("record type {record_type} for request {id}, which is not active")]
    NoSuchRequest { record_type: u8, id: u16 },
    #[error("second FCGI_BEGIN_REQUEST for active request {0}")]
    DuplicateRequest(u16),
    #[error("too many concurrent requests on one connection (limit {0})")]
    TooManyRequests(usize),
    #[error("unexpected record type {0}")]
    UnexpectedRecord(u8),
}
