//! herd: a FastCGI process manager.
//!
//! Layout:
//! - `config`: php-fpm's ini dialect, read in two stages into typed config.
//! - `fastcgi`: the record codec shared by every side herd speaks.

pub mod config;
pub mod fastcgi;
