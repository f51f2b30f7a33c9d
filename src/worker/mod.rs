//! The Rust worker library (being written).
