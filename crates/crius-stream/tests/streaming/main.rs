//! End-to-end tests: a raw client speaks WebSocket and SPDY to the server.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns
#![allow(clippy::cast_possible_truncation)]

mod common;
mod fuzz_tests;
mod kubectl_tests;
mod spdy_tests;
mod tls_tests;
mod ws_tests;
