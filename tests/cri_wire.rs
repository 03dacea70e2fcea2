//! Every message of the CRI contract, fully populated, survives encode → decode → encode
//! byte for byte. The wire bytes are built from the compiled descriptor, not from the Rust
//! types, so a field the Rust type lacked or typed differently would change the bytes.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: panics are failures

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/runtime_v1_descriptor.bin"));

struct Contract {
    messages: Vec<DescriptorProto>,
    enums: Vec<prost_types::EnumDescriptorProto>,
}

impl Contract {
    fn load() -> Self {
        let set = FileDescriptorSet::decode(DESCRIPTORS).unwrap();
        let file = set
            .file
            .into_iter()
            .find(|f| f.package() == "runtime.v1")
            .unwrap();
        let mut enums = file.enum_type.clone();
        for m in &file.message_type {
            enums.extend(m.enum_type.iter().cloned());
        }
        Self {
            messages: file.message_type,
            enums,
        }
    }

    fn message(&self, type_name: &str) -> &DescriptorProto {
        let name = type_name.trim_start_matches(".runtime.v1.");
        let mut parts = name.split('.');
        let outer = parts.next().unwrap();
        let mut found = self.messages.iter().find(|m| m.name() == outer);
        // Map entries are nested messages: Outer.FieldEntry.
        for inner in parts {
            found = found.and_then(|m| m.nested_type.iter().find(|n| n.name() == inner));
        }
        found.unwrap_or_else(|| panic!("no message {name}"))
    }

    fn last_enum_value(&self, type_name: &str) -> u64 {
        let name = type_name.rsplit('.').next().unwrap();
        let e = self
            .enums
            .iter()
            .find(|e| e.name() == name)
            .unwrap_or_else(|| panic!("no enum {name}"));
        e.value.iter().map(|v| v.number()).max().unwrap_or(0) as u64
    }

    /// The canonical encoding of `message` with every field set to a non-default value.
    fn populated(&self, message: &DescriptorProto, depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut fields = message.field.clone();
        fields.sort_by_key(|f| f.number());
        for f in &fields {
            let n = f.number() as u64;
            let repeated = f.label() == Label::Repeated;
            match f.r#type() {
                Type::Message => {
                    let sub = self.message(f.type_name());
                    let body = if sub.options.as_ref().is_some_and(|o| o.map_entry()) {
                        map_entry(self, sub)
                    } else if depth < 8 {
                        self.populated(sub, depth + 1)
                    } else {
                        Vec::new()
                    };
                    let copies = if repeated && !sub.options.as_ref().is_some_and(|o| o.map_entry())
                    {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        put_len(&mut out, n, &body);
                    }
                }
                Type::String | Type::Bytes => {
                    let copies = if repeated { 2 } else { 1 };
                    for i in 0..copies {
                        put_len(
                            &mut out,
                            n,
                            format!("{}-{n}-{i}", message.name()).as_bytes(),
                        );
                    }
                }
                Type::Double => {
                    let mut body = Vec::new();
                    let copies = if repeated { 2 } else { 1 };
                    for _ in 0..copies {
                        body.extend_from_slice(&1.5f64.to_le_bytes());
                    }
                    if repeated {
                        put_len(&mut out, n, &body);
                    } else {
                        put_varint(&mut out, n << 3 | 1);
                        out.extend_from_slice(&body);
                    }
                }
                other => {
                    let value = match other {
                        Type::Bool => 1,
                        Type::Enum => self.last_enum_value(f.type_name()),
                        Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 => 100 + n,
                        t => panic!("{}.{}: type {t:?} not covered", message.name(), f.name()),
                    };
                    if repeated {
                        let mut body = Vec::new();
                        put_varint(&mut body, value);
                        put_varint(&mut body, value + 1);
                        put_len(&mut out, n, &body);
                    } else {
                        put_varint(&mut out, n << 3);
                        put_varint(&mut out, value);
                    }
                }
            }
        }
        out
    }
}

fn map_entry(contract: &Contract, entry: &DescriptorProto) -> Vec<u8> {
    // Every CRI map is map<string, string>; check that rather than assume it.
    assert!(
        entry.field.iter().all(|f| f.r#type() == Type::String),
        "{} is not string→string",
        entry.name()
    );
    let _ = contract;
    let mut body = Vec::new();
    put_len(&mut body, 1, b"key");
    put_len(&mut body, 2, b"value");
    body
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(out: &mut Vec<u8>, field: u64, body: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn round_trip<M: Message + Default + PartialEq>(contract: &Contract, name: &str) -> usize {
    let descriptor = contract.message(name);
    let wire = contract.populated(descriptor, 0);
    let decoded = M::decode(wire.as_slice()).unwrap_or_else(|e| panic!("{name}: decode: {e}"));
    assert_eq!(
        decoded.encode_to_vec(),
        wire,
        "{name}: re-encoding differs (missing or mistyped field)"
    );
    if !descriptor.field.is_empty() {
        assert!(
            decoded != M::default(),
            "{name}: populated message decoded as empty"
        );
    }
    1
}

#[test]
fn every_message_round_trips_fully_populated() {
    let contract = Contract::load();
    let mut checked = 0;
    macro_rules! check {
        ($rust:ident, $proto:literal) => {
            checked += round_trip::<crius::api::$rust>(&contract, $proto);
        };
    }
    crius::cri_for_each_message!(check);
    assert_eq!(checked, contract.messages.len());
    assert_eq!(checked, 170, "the v0.36 contract has 170 messages");
}

#[test]
fn services_have_every_rpc_of_the_contract() {
    let set = FileDescriptorSet::decode(DESCRIPTORS).unwrap();
    let file = set
        .file
        .into_iter()
        .find(|f| f.package() == "runtime.v1")
        .unwrap();
    let count = |name: &str| {
        file.service
            .iter()
            .find(|s| s.name() == name)
            .unwrap()
            .method
            .len()
    };
    assert_eq!(count("RuntimeService"), 35);
    assert_eq!(count("ImageService"), 6);
}
