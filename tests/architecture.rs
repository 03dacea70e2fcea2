//! The crate graph and unsafe fences that ARCHITECTURE.md prescribes, checked from
//! `cargo metadata` and the crate roots, so a forbidden edge fails CI instead of review.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: panics are failures

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// The crius crates each crate may depend on (normal and build dependencies).
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        (
            "crius",
            &["crius-core", "crius-stream", "crius-monitor"][..],
        ),
        (
            "crius-core",
            &["crius-store", "crius-image", "crius-net", "crius-monitor"][..],
        ),
        ("crius-image", &["crius-store"][..]),
        ("crius-monitor", &["crius-oci"][..]),
        ("crius-store", &[][..]),
        ("crius-net", &[][..]),
        ("crius-oci", &[][..]),
        ("crius-stream", &[][..]),
        ("crius-testkit", &[][..]),
    ])
}

/// The only crates that may contain unsafe code (fork, clone, setns, raw syscalls).
const UNSAFE_ALLOWED: &[&str] = &["crius-oci", "crius-monitor"];

/// Wire-format crates that must stay inside the root package.
const WIRE_CRATES: &[&str] = &[
    "tonic",
    "prost",
    "prost-types",
    "tonic-prost",
    "tonic-prost-build",
    "tonic-build",
    "prost-build",
];

fn metadata() -> serde_json::Value {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metadata JSON")
}

#[test]
fn crate_dependencies_follow_the_architecture() {
    let allowed = allowed();
    let meta = metadata();
    let mut problems = Vec::new();
    for package in meta["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let Some(permitted) = allowed.get(name) else {
            problems.push(format!(
                "crate {name} is not in ARCHITECTURE.md's table; add it to both"
            ));
            continue;
        };
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            let dev = dep["kind"].as_str() == Some("dev");
            if dep_name.starts_with("crius") && !dev && !permitted.contains(&dep_name) {
                problems.push(format!(
                    "{name} depends on {dep_name}, which the architecture forbids"
                ));
            }
            if dev
                && dep_name.starts_with("crius")
                && dep_name != "crius-testkit"
                && !permitted.contains(&dep_name)
            {
                problems.push(format!(
                    "{name} has dev-dependency {dep_name}; only crius-testkit is shared for tests"
                ));
            }
            if WIRE_CRATES.contains(&dep_name) && name != "crius" {
                problems.push(format!(
                    "{name} depends on {dep_name}: CRI wire types stay in the root package"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "architecture violations:\n{}",
        problems.join("\n")
    );
}

#[test]
fn unsafe_code_is_fenced_in_every_crate_root() {
    let meta = metadata();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for package in meta["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        for target in package["targets"].as_array().unwrap() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|k| k.as_str())
                .collect();
            if !kinds.iter().any(|k| *k == "lib" || *k == "bin") {
                continue;
            }
            let src = Path::new(target["src_path"].as_str().unwrap());
            let text = std::fs::read_to_string(src).unwrap();
            seen.insert(name.to_string());
            let fence = if UNSAFE_ALLOWED.contains(&name) {
                "#![deny(unsafe_code)]"
            } else {
                "#![forbid(unsafe_code)]"
            };
            let binary_of_root = name == "crius" && kinds.contains(&"bin");
            // The root package's binaries inherit the workspace lint (unsafe_code = deny) and
            // only call the library, which forbids unsafe code.
            if !binary_of_root && !text.contains(fence) {
                problems.push(format!("{} lacks {fence}", src.display()));
            }
        }
    }
    assert!(seen.contains("crius"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
