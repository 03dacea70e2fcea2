//! stub
/// A runc-compatible CLI (runc, crun, youki).
#[derive(Debug)]
pub struct BinaryRuntime;
