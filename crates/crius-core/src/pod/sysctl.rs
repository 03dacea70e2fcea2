//! Which sysctls a pod may set. A sysctl written inside a pod's namespaces must not reach
//! the host: only namespaced ones are ever accepted, and an unprivileged pod gets only the
//! set Kubernetes calls safe (isolated and unable to starve other pods).

use std::collections::BTreeMap;

/// Sysctls Kubernetes deems safe (namespaced and without node-wide effects).
const SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_wmem",
];

/// IPC-namespaced sysctls (besides `fs.mqueue.*`).
const IPC: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shm_rmid_forced",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
];

/// The namespace a sysctl belongs to, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    Ipc,
    Net,
}

fn namespace_of(name: &str) -> Option<Namespace> {
    if IPC.contains(&name) || name.starts_with("fs.mqueue.") {
        Some(Namespace::Ipc)
    } else if name.starts_with("net.") {
        Some(Namespace::Net)
    } else {
        None
    }
}

/// Checks `sysctls` for a pod; the error says which sysctl and why.
pub fn validate(
    sysctls: &BTreeMap<String, String>,
    privileged: bool,
    host_network: bool,
    host_ipc: bool,
) -> Result<(), String> {
    for (raw, value) in sysctls {
        // Both spellings are accepted on the wire: net/ipv4/... and net.ipv4....
        let name = raw.replace('/', ".");
        let well_formed = !name.is_empty()
            && name.split('.').all(|p| !p.is_empty())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !well_formed {
            return Err(format!("sysctl {raw:?} is not a valid sysctl name"));
        }
        if value.contains(['\n', '\0']) {
            return Err(format!("sysctl {raw}: value must be a single line"));
        }
        let Some(ns) = namespace_of(&name) else {
            return Err(format!(
                "sysctl {raw} is not namespaced: setting it would change the host"
            ));
        };
        if ns == Namespace::Net && host_network {
            return Err(format!(
                "sysctl {raw} needs the pod's own network namespace, not the host's"
            ));
        }
        if ns == Namespace::Ipc && host_ipc {
            return Err(format!(
                "sysctl {raw} needs the pod's own IPC namespace, not the host's"
            ));
        }
        if !privileged && !SAFE.contains(&name.as_str()) {
            return Err(format!(
                "sysctl {raw} is not in the safe set; only privileged pods may set it"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(name.to_string(), "1".to_string())])
    }

    #[test]
    fn safe_sysctls_pass_for_any_pod() {
        validate(
            &one("net.ipv4.ip_unprivileged_port_start"),
            false,
            false,
            false,
        )
        .unwrap();
        validate(&one("net/ipv4/tcp_syncookies"), false, false, false).unwrap();
        validate(&one("kernel.shm_rmid_forced"), false, false, false).unwrap();
    }

    #[test]
    fn unsafe_namespaced_sysctls_need_privilege() {
        let err = validate(&one("net.core.somaxconn"), false, false, false).unwrap_err();
        assert!(err.contains("safe set"), "{err}");
        validate(&one("net.core.somaxconn"), true, false, false).unwrap();
        validate(&one("kernel.msgmax"), true, false, false).unwrap();
    }

    #[test]
    fn host_wide_sysctls_are_refused_even_when_privileged() {
        for name in [
            "kernel.panic",
            "vm.overcommit_memory",
            "kernel.hostname",
            "fs.file-max",
        ] {
            assert!(
                validate(&one(name), true, false, false).is_err(),
                "{name} accepted"
            );
        }
    }

    #[test]
    fn namespaced_sysctls_need_their_namespace() {
        assert!(validate(&one("net.ipv4.tcp_syncookies"), true, true, false).is_err());
        assert!(validate(&one("kernel.shm_rmid_forced"), true, false, true).is_err());
    }

    #[test]
    fn malformed_names_and_values_are_refused() {
        for name in ["", "net..ipv4", "net.ipv4.x y", "../../etc"] {
            assert!(
                validate(&one(name), true, false, false).is_err(),
                "{name:?} accepted"
            );
        }
        let bad = BTreeMap::from([("net.ipv4.tcp_syncookies".to_string(), "1\n2".to_string())]);
        assert!(validate(&bad, false, false, false).is_err());
    }
}
