//! End-to-end tests: a raw client speaks WebSocket and SPDY to the server.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
mod ws_tests;
