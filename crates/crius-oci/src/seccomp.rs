//! Seccomp: the RuntimeDefault profile (data in `seccomp/default.json`, compiled into the
//! crate) and the translation of an OCI `LinuxSeccomp` into BPF with `seccompiler`.
//!
//! seccompiler builds filters with one match action each, so a profile becomes one filter
//! per action: the default action's filter (mismatch = default, match = allow) is installed
//! first, then one filter per other action (mismatch = allow). The kernel runs every
//! filter and keeps the most restrictive answer, and for equal actions the most recently
//! installed filter wins, so `clone3 -> ENOSYS` beats the default `EPERM`.
//!
//! Limits: x86_64 only (the syscall table is `seccomp/syscalls_x86_64.txt`); the
//! profile's `architectures` are not honoured: seccompiler's filter kills a process that
//! makes a syscall through the i386 ABI (so 32-bit binaries do not run under a profile),
//! and x32 syscall numbers match no rule (they get the default action); names unknown to the table are skipped, as libseccomp does; `flags` are
//! ignored; `SCMP_ACT_NOTIFY` is refused; all conditions of one rule are ANDed.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::{Error, Result};

const DEFAULT_PROFILE: &str = include_str!("seccomp/default.json");
const SYSCALLS_X86_64: &str = include_str!("seccomp/syscalls_x86_64.txt");

/// The RuntimeDefault profile: Docker's default semantics (allow-list with EPERM default,
/// namespace-creating `clone` flags refused, `clone3` answered with ENOSYS so libcs fall
/// back to `clone`, `personality` limited to the harmless domains), expressed as an OCI
/// `LinuxSeccomp` the spec builder can embed.
pub fn default_seccomp() -> LinuxSeccomp {
    // The file is part of the crate and checked by a unit test; a parse failure is a build
    // defect, and the empty deny-nothing fallback is never reached in a tested build.
    serde_json::from_str(DEFAULT_PROFILE).unwrap_or_default()
}

fn syscall_table() -> &'static HashMap<&'static str, i64> {
    static TABLE: OnceLock<HashMap<&'static str, i64>> = OnceLock::new();
    TABLE.get_or_init(|| {
        SYSCALLS_X86_64
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, nr) = l.split_once(' ')?;
                Some((name, nr.trim().parse().ok()?))
            })
            .collect()
    })
}

/// The syscall number of `name` on this architecture.
pub fn syscall_number(name: &str) -> Option<i64> {
    syscall_table().get(name).copied()
}

/// Compiles `profile` into the filters to install, in order.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => TargetArch::x86_64,
        other => {
            return Err(Error::Unavailable(format!(
                "seccomp syscall table for {other}"
            )))
        }
    };
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut groups: Vec<(SeccompAction, BTreeMap<i64, Vec<SeccompRule>>)> = Vec::new();
    for sc in profile.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret())?;
        if act == default {
            continue;
        }
        let idx = match groups.iter().position(|(a, _)| *a == act) {
            Some(i) => i,
            None => {
                groups.push((act, BTreeMap::new()));
                groups.len() - 1
            }
        };
        add_rules(&mut groups[idx].1, sc)?;
    }
    // The default action's filter first, then the others (evaluated before it).
    groups.sort_by_key(|(a, _)| *a != SeccompAction::Allow);
    let mut out = Vec::new();
    for (act, rules) in groups {
        let filter = if act == SeccompAction::Allow {
            SeccompFilter::new(rules, default.clone(), act, arch)
        } else {
            SeccompFilter::new(rules, SeccompAction::Allow, act, arch)
        };
        let filter = filter.map_err(|e| Error::Seccomp(e.to_string()))?;
        out.push(BpfProgram::try_from(filter).map_err(|e| Error::Seccomp(e.to_string()))?);
    }
    if out.is_empty() && default != SeccompAction::Allow {
        let filter = SeccompFilter::new(BTreeMap::new(), default, SeccompAction::Allow, arch)
            .map_err(|e| Error::Seccomp(e.to_string()))?;
        out.push(BpfProgram::try_from(filter).map_err(|e| Error::Seccomp(e.to_string()))?);
    }
    Ok(out)
}

fn add_rules(rules: &mut BTreeMap<i64, Vec<SeccompRule>>, sc: &LinuxSyscall) -> Result<()> {
    let conditions = sc
        .args()
        .iter()
        .flatten()
        .map(|a| {
            let (op, value) = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
                LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
                LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
                LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
                LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
                LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
                LinuxSeccompOperator::ScmpCmpMaskedEq => (
                    SeccompCmpOp::MaskedEq(a.value()),
                    a.value_two().unwrap_or(0),
                ),
            };
            let len = if value <= u64::from(u32::MAX) && a.value() <= u64::from(u32::MAX) {
                SeccompCmpArgLen::Dword
            } else {
                SeccompCmpArgLen::Qword
            };
            let index = u8::try_from(a.index()).map_err(|_| Error::Seccomp("arg index".into()))?;
            SeccompCondition::new(index, len, op, value).map_err(|e| Error::Seccomp(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    for name in sc.names() {
        let Some(nr) = syscall_number(name) else {
            continue;
        };
        if conditions.is_empty() {
            // An empty chain matches unconditionally and absorbs conditional rules.
            rules.insert(nr, Vec::new());
            continue;
        }
        let rule =
            SeccompRule::new(conditions.clone()).map_err(|e| Error::Seccomp(e.to_string()))?;
        match rules.get_mut(&nr) {
            Some(chain) if chain.is_empty() => {}
            Some(chain) => chain.push(rule),
            None => {
                rules.insert(nr, vec![rule]);
            }
        }
    }
    Ok(())
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp("SCMP_ACT_NOTIFY is not supported".into()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_parses_and_denies_by_default() {
        let p: LinuxSeccomp = serde_json::from_str(DEFAULT_PROFILE).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        let names: Vec<&String> = p
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names())
            .collect();
        for forbidden in [
            "mount",
            "unshare",
            "setns",
            "kexec_load",
            "bpf",
            "keyctl",
            "pivot_root",
        ] {
            assert!(
                !names.iter().any(|n| *n == forbidden),
                "{forbidden} is allowed"
            );
        }
    }

    #[test]
    fn every_allowed_name_is_in_the_syscall_table() {
        for s in default_seccomp().syscalls().iter().flatten() {
            for n in s.names() {
                assert!(syscall_number(n).is_some(), "{n} unknown");
            }
        }
    }

    #[test]
    fn the_default_profile_compiles_to_two_filters() {
        let filters = compile(&default_seccomp()).unwrap();
        assert_eq!(
            filters.len(),
            2,
            "allow-list filter plus the clone3 ENOSYS filter"
        );
    }

    #[test]
    fn notify_is_refused() {
        let mut p = default_seccomp();
        p.set_default_action(LinuxSeccompAction::ScmpActNotify);
        assert!(compile(&p).is_err());
    }
}
