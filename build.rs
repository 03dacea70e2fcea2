//! Compiles the CRI v1 contract in `proto/` into the `crius::api` module (tonic + prost),
//! and lists every message so tests can round-trip each one; compiles crius's own admin
//! service in `proto-admin/` (kept apart so the CRI contract checker, which reads all of
//! `proto/`, only ever sees `runtime.v1`) into `crius::admin::wire`.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/runtime/v1/api.proto";
    let admin = "proto-admin/crius/v1/admin.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed={admin}");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("runtime_v1_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .compile_protos(&[proto], &["proto"])?;
    // Compiled on its own so the CRI descriptor set (and the message list below) holds
    // `runtime.v1` alone.
    tonic_prost_build::configure().compile_protos(&[admin], &["proto-admin"])?;

    // `crius::cri_for_each_message!(m)` expands to `m!(RustName, "ProtoName");` for every message of the contract, so a
    // test can encode and decode each one without a hand-kept list that could drift.
    let bytes = std::fs::read(&descriptors)?;
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(bytes.as_slice())?;
    let mut list =
        String::from("#[doc(hidden)]\n#[macro_export]\nmacro_rules! cri_for_each_message {\n");
    list.push_str("    ($m:ident) => {\n");
    for file in &set.file {
        for message in &file.message_type {
            let name = message.name();
            writeln!(list, "        $m!({}, {name:?});", rust_name(name))?;
        }
    }
    list.push_str("    };\n}\n");
    std::fs::write(out.join("for_each_message.rs"), list)?;
    Ok(())
}

/// The Rust type name prost gives a message: words split at case changes, each word
/// capitalised (`DNSConfig` → `DnsConfig`, `PodIP` → `PodIp`).
fn rust_name(proto: &str) -> String {
    let chars: Vec<char> = proto.chars().collect();
    let mut out = String::new();
    let mut word_start = true;
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if !prev.is_ascii_uppercase() || next_lower {
                word_start = true;
            }
        }
        if word_start {
            out.push(c.to_ascii_uppercase());
            word_start = false;
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}
