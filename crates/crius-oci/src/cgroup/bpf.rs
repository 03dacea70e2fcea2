//! cgroup v2 device control: the OCI device rules compiled into a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program and attached to the container's cgroup
//! (v2 has no devices.allow/deny files; see the kernel's Documentation/admin-guide/cgroup-v2.rst,
//! "Device controller").
//!
//! The rule list is first turned into the exception list cgroup v1 would hold after the
//! same rules ([`super::devices::DeviceAccess`]), so both versions enforce the same thing;
//! that list is then compiled. Program shape: load type, access, major and minor from
//! `struct bpf_cgroup_dev_ctx`; then one block per exception, in any order (under deny-all
//! a block returns 1 when its device matches and it holds every requested bit; under
//! allow-all it returns 0 when its device matches and it holds any requested bit); then
//! the default (1 under allow-all, 0 under deny-all).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::LinuxDeviceCgroup;

use super::devices::{DeviceAccess, Exception, ACC_ALL};

use crate::error::{Error, Result};

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const JMP_EXIT: u8 = 0x95;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// Compiles the exception list into the program's instructions.
pub(crate) fn compile(access: &DeviceAccess) -> Vec<Insn> {
    let mut prog = vec![
        // r2 = type (low 16 bits of access_type), r3 = access (high 16 bits)
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for ex in &access.exceptions {
        if let Some(block) = exception_block(ex, access.default_allow) {
            prog.extend(block);
        }
    }
    // Every block starts with a type test, so none returns unconditionally and this
    // default is reachable (the verifier refuses unreachable instructions).
    prog.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(access.default_allow)));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

/// The block of one exception: an allow under deny-all, a deny under allow-all. `None`
/// for a number the immediate cannot hold (above 2^31-1): no device has it (majors have
/// 12 bits, minors 20), so the exception can never match.
fn exception_block(ex: &Exception, default_allow: bool) -> Option<Vec<Insn>> {
    // Jumps are patched to "past the block" once its length is known (marked off = -1).
    let mut block = vec![insn(JMP_JNE_K, R2, 0, -1, ex.typ as i32)];
    for (reg, value) in [(R4, ex.major), (R5, ex.minor)] {
        if let Some(v) = value {
            block.push(insn(JMP_JNE_K, reg, 0, -1, i32::try_from(v).ok()?));
        }
    }
    let bits = i32::from(ex.access);
    if default_allow {
        // a deny exception refuses a request holding any of its bits
        block.push(insn(ALU64_MOV_X, R1, R3, 0, 0));
        block.push(insn(ALU32_AND_K, R1, 0, 0, bits));
        block.push(insn(JMP_JEQ_K, R1, 0, -1, 0));
    } else if ex.access != ACC_ALL {
        // an allow exception grants a request only if it holds every requested bit
        block.push(insn(ALU64_MOV_X, R1, R3, 0, 0));
        block.push(insn(ALU32_AND_K, R1, 0, 0, !bits));
        block.push(insn(JMP_JNE_K, R1, 0, -1, 0));
    }
    block.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(!default_allow)));
    block.push(insn(JMP_EXIT, 0, 0, 0, 0));
    let len = block.len();
    for (i, ins) in block.iter_mut().enumerate() {
        if ins.off == -1 {
            ins.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
        }
    }
    Some(block)
}

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD, zero-padded (the kernel
/// requires unknown trailing bytes to be zero).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    pad: [u8; 64],
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    pad: [u8; 44],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// bpf(BPF_PROG_LOAD) of a device program; `log` receives the verifier's log when
/// `log_level` is 1.
fn load(prog: &[Insn], log_level: u32, log: &mut [u8]) -> nix::Result<libc::c_long> {
    let license = c"Apache-2.0";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(prog.len()).map_err(|_| nix::Error::E2BIG)?,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size: u32::try_from(log.len()).map_err(|_| nix::Error::E2BIG)?,
        // The kernel refuses a log buffer without a log level (EINVAL).
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        kern_version: 0,
        prog_flags: 0,
        pad: [0; 64],
    };
    // SAFETY: bpf(BPF_PROG_LOAD, &attr, size): `attr` is live and fully initialised; its
    // pointers name `prog` (insn_cnt entries), `license` (NUL-terminated) and `log`
    // (log_size writable bytes), all alive for the call. The result is a new fd or -1.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if ret < 0 {
        return Err(nix::Error::last());
    }
    Ok(ret)
}

/// Loads the program for `rules` and attaches it to the cgroup directory `dir`.
pub(crate) fn attach(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let err = |op: &str, e: nix::Error| Error::Cgroup {
        path: dir.to_path_buf(),
        message: format!("{op}: {e}"),
    };
    let prog = compile(&DeviceAccess::from_rules(rules)?);
    let ret = match load(&prog, 0, &mut []) {
        Ok(fd) => fd,
        Err(e) => {
            // Load again with the verifier log, to say why.
            let mut log = vec![0u8; 1 << 20];
            let _ = load(&prog, 1, &mut log);
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let verifier = String::from_utf8_lossy(&log[..end]);
            let verifier = verifier.lines().last().unwrap_or_default();
            let message = format!("load device program: {e}: {verifier}");
            return Err(Error::Cgroup {
                path: dir.to_path_buf(),
                message,
            });
        }
    };
    let raw = i32::try_from(ret).map_err(|_| err("load", nix::Error::EBADF))?;
    // SAFETY: the kernel just returned this new program fd; nobody else owns it.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let cgroup = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    let attach = ProgAttachAttr {
        target_fd: u32::try_from(cgroup.as_raw_fd())
            .map_err(|_| err("attach", nix::Error::EBADF))?,
        attach_bpf_fd: u32::try_from(prog_fd.as_raw_fd())
            .map_err(|_| err("attach", nix::Error::EBADF))?,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
        pad: [0; 44],
    };
    // SAFETY: bpf(BPF_PROG_ATTACH, &attach, size): `attach` is live and initialised and
    // names two fds open for the call; the kernel only reads it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            std::ptr::addr_of!(attach),
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if ret != 0 {
        return Err(err("attach device program", nix::Error::last()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::devices::{DevType, ACC_MKNOD, ACC_READ, ACC_WRITE};
    use super::*;

    /// Runs `prog` on one request the way the kernel would: an interpreter of the few
    /// instructions `compile` emits, over a `struct bpf_cgroup_dev_ctx`.
    #[allow(clippy::cast_possible_truncation)] // ALU32 works on the low 32 bits, by design
    fn run(prog: &[Insn], typ: DevType, major: u32, minor: u32, access: u8) -> u64 {
        let ctx = [(u32::from(access) << 16) | typ as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            // BPF sign-extends a 32-bit immediate for 64-bit operations and comparisons.
            let imm = i64::from(i.imm) as u64;
            let mut jump = false;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads come from the context");
                    r[dst] = u64::from(ctx[usize::try_from(i.off).unwrap() / 4]);
                }
                ALU32_AND_K => r[dst] = u64::from((r[dst] as u32) & (i.imm as u32)),
                ALU32_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
                ALU64_MOV_K => r[dst] = imm,
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JNE_K => jump = r[dst] != imm,
                JMP_JEQ_K => jump = r[dst] == imm,
                JMP_EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
            pc += 1;
            if jump {
                pc += usize::try_from(i.off).unwrap();
            }
        }
    }

    fn access(v: serde_json::Value) -> DeviceAccess {
        DeviceAccess::from_rules(&serde_json::from_value::<Vec<LinuxDeviceCgroup>>(v).unwrap())
            .unwrap()
    }

    /// Every request over a few devices and all access combinations.
    fn requests() -> Vec<(DevType, u32, u32, u8)> {
        let mut out = Vec::new();
        for typ in [DevType::Char, DevType::Block] {
            for (major, minor) in [(1, 3), (1, 5), (10, 229), (136, 0), (136, 7), (5, 1)] {
                for bits in 1..=ACC_ALL {
                    out.push((typ, major, minor, bits));
                }
            }
        }
        out
    }

    #[test]
    fn the_program_decides_exactly_as_the_v1_emulation() {
        let cases = [
            serde_json::json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"}
            ]),
            serde_json::json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"},
                {"allow": true, "type": "c", "major": 136, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "access": "m"},
                {"allow": true, "type": "b", "access": "m"}
            ]),
            serde_json::json!([
                {"allow": true, "access": "rwm"},
                {"allow": false, "type": "c", "major": 10, "minor": 229, "access": "rw"},
                {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "r"},
                {"allow": false, "type": "b", "major": 1, "access": "m"}
            ]),
            serde_json::json!([{"allow": false, "access": "rwm"}]),
            serde_json::json!([]),
        ];
        for case in cases {
            let state = access(case.clone());
            let prog = compile(&state);
            for (typ, major, minor, bits) in requests() {
                assert_eq!(
                    run(&prog, typ, major, minor, bits) == 1,
                    state.permits(typ, major, minor, bits),
                    "{typ:?} {major}:{minor} access {bits} under {case}"
                );
            }
        }
    }

    #[test]
    fn split_rules_of_one_device_compile_to_one_block() {
        let state = access(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"}
        ]));
        let prog = compile(&state);
        // 6 loads; the c 1:3 rw block: type, major, minor, 3 access, mov, exit; the default
        assert_eq!(prog.len(), 6 + 8 + 2);
        assert_eq!(
            prog[6],
            insn(JMP_JNE_K, R2, 0, 7, 2),
            "a type mismatch skips the block"
        );
        assert_eq!(prog[11], insn(JMP_JNE_K, R1, 0, 2, 0));
        assert_eq!(prog[12], insn(ALU64_MOV_K, R0, 0, 0, 1));
        assert_eq!(
            prog[14],
            insn(ALU64_MOV_K, R0, 0, 0, 0),
            "deny-all by default"
        );
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(run(&prog, DevType::Char, 1, 3, rw), 1);
        assert_eq!(run(&prog, DevType::Char, 1, 3, ACC_MKNOD), 0);
    }

    #[test]
    fn a_number_no_device_can_have_never_matches() {
        let state = access(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 3_000_000_000u64, "access": "rwm"}
        ]));
        let prog = compile(&state);
        assert_eq!(prog.len(), 6 + 2);
        assert_eq!(run(&prog, DevType::Char, 1, 3, ACC_WRITE), 0);
    }
}
