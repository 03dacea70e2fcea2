//! cgroup v2 device control: the OCI device rules compiled into a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program and attached to the container's cgroup
//! (v2 has no devices.allow/deny files; see the kernel's Documentation/admin-guide/cgroup-v2.rst,
//! "Device controller").
//!
//! Program shape: load type, access, major and minor from `struct bpf_cgroup_dev_ctx`,
//! then one block per rule, **last rule first** (a later rule overrides an earlier one, as
//! with v1's files); a matching block returns 1 (allow) or 0 (deny); nothing matched
//! returns 0. An allow matches a request whose every access bit it grants; a deny matches
//! a request holding any of its bits. Known gap: access granted piecewise by several
//! allow rules of one device (`r` then `w`) does not add up for a read-write open, as it
//! would with v1's files; write one `rw` rule instead.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

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
const JMP_JNE_X: u8 = 0x5d;
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

/// Compiles `rules` into the program's instructions.
pub(crate) fn compile(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut prog = vec![
        // r2 = type (low 16 bits of access_type), r3 = access (high 16 bits)
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let block = rule_block(rule);
        // A block without conditions always returns: anything after it is unreachable,
        // which the verifier refuses.
        let unconditional = block.len() == 2;
        prog.extend(block);
        if unconditional {
            return prog;
        }
    }
    prog.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

fn rule_block(rule: &LinuxDeviceCgroup) -> Vec<Insn> {
    // Jumps are patched to "past the block" once its length is known (marked off = -1).
    let mut block = Vec::new();
    let dev_type = match rule.typ() {
        None | Some(LinuxDeviceType::A) => None,
        Some(LinuxDeviceType::B) => Some(1),
        Some(LinuxDeviceType::C | LinuxDeviceType::U | LinuxDeviceType::P) => Some(2),
    };
    if let Some(t) = dev_type {
        block.push(insn(JMP_JNE_K, R2, 0, -1, t));
    }
    let access = access_mask(rule.access().as_deref());
    if access != 0b111 {
        block.push(insn(ALU64_MOV_X, R1, R3, 0, 0));
        block.push(insn(ALU32_AND_K, R1, 0, 0, access));
        if rule.allow() {
            // an allow matches only if it grants every requested access bit
            block.push(insn(JMP_JNE_X, R1, R3, -1, 0));
        } else {
            // a deny matches if it names any requested bit (as v1's devices.deny takes
            // that access away: a read-write open of a device denied "w" fails)
            block.push(insn(JMP_JEQ_K, R1, 0, -1, 0));
        }
    }
    for (reg, value) in [(R4, rule.major()), (R5, rule.minor())] {
        if let Some(v) = value
            .filter(|v| *v >= 0)
            .and_then(|v| i32::try_from(v).ok())
        {
            block.push(insn(JMP_JNE_K, reg, 0, -1, v));
        }
    }
    block.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(rule.allow())));
    block.push(insn(JMP_EXIT, 0, 0, 0, 0));
    let len = block.len();
    for (i, ins) in block.iter_mut().enumerate() {
        if ins.off == -1 {
            ins.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
        }
    }
    block
}

/// `BPF_DEVCG_ACC_MKNOD` = 1, `READ` = 2, `WRITE` = 4.
fn access_mask(access: Option<&str>) -> i32 {
    let access = access.filter(|a| !a.is_empty()).unwrap_or("rwm");
    access.chars().fold(0, |m, c| match c {
        'm' => m | 1,
        'r' => m | 2,
        'w' => m | 4,
        _ => m,
    })
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
    let prog = compile(rules);
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
    use super::*;

    fn rule(v: serde_json::Value) -> LinuxDeviceCgroup {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rules_compile_last_first_with_jumps_past_their_block() {
        let rules = [
            rule(serde_json::json!({"allow": false, "access": "rwm"})),
            rule(
                serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}),
            ),
        ];
        let prog = compile(&rules);
        // 6 loads, the c 1:3 block (type, 3 access, major, minor, mov, exit = 8),
        // the unconditional deny-all block (mov, exit = 2) ends the program
        assert_eq!(prog.len(), 6 + 8 + 2);
        let first = &prog[6..14];
        assert_eq!(first[0].code, JMP_JNE_K);
        assert_eq!(first[0].off, 7, "type mismatch skips the rest of the block");
        assert_eq!(first[6], insn(ALU64_MOV_K, R0, 0, 0, 1));
        assert_eq!(prog[14], insn(ALU64_MOV_K, R0, 0, 0, 0));
    }

    #[test]
    fn a_partial_deny_matches_any_request_that_includes_its_access() {
        let deny_w = rule(
            serde_json::json!({"allow": false, "type": "c", "major": 10, "minor": 229, "access": "w"}),
        );
        let block = rule_block(&deny_w);
        assert_eq!(block[3], insn(JMP_JEQ_K, R1, 0, 4, 0), "{block:?}");
        let allow_r = rule(
            serde_json::json!({"allow": true, "type": "c", "major": 10, "minor": 229, "access": "r"}),
        );
        assert_eq!(rule_block(&allow_r)[3].code, JMP_JNE_X);
    }

    #[test]
    fn access_letters_map_to_kernel_bits() {
        assert_eq!(access_mask(Some("m")), 1);
        assert_eq!(access_mask(Some("rw")), 6);
        assert_eq!(access_mask(None), 7);
    }
}
