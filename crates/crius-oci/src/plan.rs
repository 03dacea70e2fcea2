//! Parent side: turns an OCI spec into the [`InitPlan`] the children execute. All
//! parsing and validation happens here, before fork, so bad specs fail with
//! `InvalidArgument` and the children only meet kernel errors.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use caps::CapsHashSet;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::stat::SFlag;
use oci_spec::runtime::{
    Capabilities, LinuxDevice, LinuxDeviceType, LinuxNamespaceType, PosixRlimitType,
    Process as ProcessSpec, Spec,
};

use crate::error::{Error, Result};
use crate::init::{CapsPlan, ContainerPlan, InitPlan, NamespacePlan, ProcessPlan, StdioPlan};
use crate::rootfs::{
    parse_options, propagation_flag, DevicePlan, DeviceSource, MountPlan, RootfsPlan,
};
use crate::runtime::Stdio;

/// Default PATH when the process env has none (the value runc and containerd use).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Devices every container gets, bind-mounted from the host.
const DEFAULT_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The descriptors the parent keeps open until the child has them.
#[derive(Debug, Default)]
pub(crate) struct HeldFds {
    pub(crate) fds: Vec<OwnedFd>,
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Namespaces to join and create; also whether a cgroup namespace is new (the init
/// creates it) and whether the container has a UTS namespace (hostname allowed).
fn namespace_plan(linux: &oci_spec::runtime::Linux) -> Result<(NamespacePlan, bool, bool)> {
    let mut namespaces = NamespacePlan::default();
    let (mut new_cgroup_ns, mut has_mount_ns, mut has_uts) = (false, false, false);
    for ns in linux.namespaces().iter().flatten() {
        let flag = ns_flag(ns.typ());
        has_mount_ns |= flag == CloneFlags::CLONE_NEWNS;
        has_uts |= flag == CloneFlags::CLONE_NEWUTS;
        match (ns.path(), ns.typ()) {
            (Some(p), LinuxNamespaceType::User) => namespaces.join_user = Some(open_ns(p)?),
            (Some(p), _) => namespaces.join.push((flag, open_ns(p)?)),
            (None, LinuxNamespaceType::User) => namespaces.new_user = true,
            (None, LinuxNamespaceType::Cgroup) => new_cgroup_ns = true,
            (None, _) => namespaces.create |= flag,
        }
    }
    if !has_mount_ns {
        return Err(Error::InvalidSpec("a mount namespace is required".into()));
    }
    if namespaces.new_user && (linux.uid_mappings().is_none() || linux.gid_mappings().is_none()) {
        return Err(Error::InvalidSpec(
            "a new user namespace needs uidMappings and gidMappings".into(),
        ));
    }
    Ok((namespaces, new_cgroup_ns, has_uts))
}

fn open_ns(path: &Path) -> Result<OwnedFd> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::InvalidSpec(format!("namespace {}: {e}", path.display())))
}

/// Builds the plan for a container init.
pub(crate) fn for_container(
    spec: &Spec,
    bundle: &Path,
    rootfs: &Path,
    stdio: Stdio,
    held: &mut HeldFds,
) -> Result<InitPlan> {
    let linux = spec.linux().clone().unwrap_or_default();
    let (namespaces, new_cgroup_ns, has_uts) = namespace_plan(&linux)?;
    let in_userns = namespaces.new_user || namespaces.join_user.is_some();
    let rootfs_plan = rootfs_plan(spec, bundle, rootfs, in_userns)?;
    let process_spec = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("spec has no process".into()))?;
    let container = ContainerPlan {
        rootfs: Some(rootfs_plan),
        new_cgroup_ns,
        hostname: spec.hostname().clone().filter(|_| has_uts),
        domainname: spec.domainname().clone().filter(|_| has_uts),
        sysctls: linux
            .sysctl()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        masked: linux
            .masked_paths()
            .iter()
            .flatten()
            .map(PathBuf::from)
            .collect(),
        readonly: linux
            .readonly_paths()
            .iter()
            .flatten()
            .map(PathBuf::from)
            .collect(),
    };
    for (k, _) in &container.sysctls {
        if k.contains('/') || k.split('.').any(|c| c.is_empty() || c == "..") {
            return Err(Error::InvalidSpec(format!(
                "sysctl {k:?} is not a sysctl name"
            )));
        }
    }
    let process = process_plan(process_spec, spec, stdio, held)?;
    Ok(InitPlan {
        namespaces,
        container: Some(container),
        process,
    })
}

/// Builds the plan for an exec into the container whose init is `pid`: every namespace
/// of the init that differs from ours is joined.
pub(crate) fn for_exec(
    spec: &Spec,
    pid: i32,
    process: &ProcessSpec,
    stdio: Stdio,
    held: &mut HeldFds,
) -> Result<InitPlan> {
    let mut namespaces = NamespacePlan::default();
    for (name, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
        let (a, b) = (std::fs::metadata(&theirs), std::fs::metadata(&ours));
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return Err(Error::io(theirs, e)),
        };
        if a.ino() == b.ino() && a.dev() == b.dev() {
            continue;
        }
        let fd = open_ns(&theirs)?;
        if flag == CloneFlags::CLONE_NEWUSER {
            namespaces.join_user = Some(fd);
        } else {
            namespaces.join.push((flag, fd));
        }
    }
    let process = process_plan(process, spec, stdio, held)?;
    Ok(InitPlan {
        namespaces,
        container: None,
        process,
    })
}

fn rootfs_plan(spec: &Spec, bundle: &Path, rootfs: &Path, in_userns: bool) -> Result<RootfsPlan> {
    let linux = spec.linux().clone().unwrap_or_default();
    let host_v1 = cgroup_v1_hierarchies();
    let mounts = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| mount_plan(m, bundle, host_v1.is_empty()))
        .collect::<Result<Vec<_>>>()?;
    let spec_devices = linux.devices().clone().unwrap_or_default();
    // A spec device at a default path replaces the default.
    let mut devices: Vec<DevicePlan> = DEFAULT_DEVICES
        .iter()
        .map(|d| PathBuf::from(format!("/dev/{d}")))
        .filter(|p| !spec_devices.iter().any(|d| d.path() == p))
        .map(|p| DevicePlan {
            source: DeviceSource::Bind(p.clone()),
            path: p,
        })
        .collect();
    for d in &spec_devices {
        devices.push(device_plan(d, in_userns)?);
    }
    let propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => MsFlags::MS_PRIVATE,
        Some(p) => propagation_flag(p) - MsFlags::MS_REC,
    };
    Ok(RootfsPlan {
        path: rootfs.to_path_buf(),
        readonly: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        propagation,
        mounts,
        devices,
        cgroup_v1: host_v1,
        cwd: spec
            .process()
            .as_ref()
            .map(|p| p.cwd().clone())
            .unwrap_or_else(|| "/".into()),
    })
}

/// One `linux.devices` entry: its node type and number checked; a fresh node (mknod with
/// the spec's mode, uid and gid) at the container path, or in a user namespace (where
/// mknod of a device is refused) a bind of the host node with that number.
fn device_plan(d: &LinuxDevice, in_userns: bool) -> Result<DevicePlan> {
    let path = d.path();
    let invalid = |why: String| Error::InvalidSpec(format!("device {}: {why}", path.display()));
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid("the path must be absolute, without '..'".into()));
    }
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(invalid(
                "type \"a\" is only for cgroup rules; use c, b, u or p".into(),
            ))
        }
    };
    let number = |n: i64, what: &str| {
        u64::try_from(n).map_err(|_| invalid(format!("{what} {n} must not be negative")))
    };
    let (major, minor) = (number(d.major(), "major")?, number(d.minor(), "minor")?);
    let rdev = if kind == SFlag::S_IFIFO {
        0
    } else {
        nix::sys::stat::makedev(major, minor)
    };
    if in_userns && kind != SFlag::S_IFIFO {
        let host = host_node(path, kind, rdev).ok_or_else(|| {
            invalid(format!(
                "in a user namespace the node is bound from the host, and no host node \
                 under /dev is {} {major}:{minor}",
                if kind == SFlag::S_IFBLK {
                    "block"
                } else {
                    "char"
                },
            ))
        })?;
        return Ok(DevicePlan {
            path: path.clone(),
            source: DeviceSource::Bind(host),
        });
    }
    Ok(DevicePlan {
        path: path.clone(),
        source: DeviceSource::Mknod {
            kind,
            rdev,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        },
    })
}

/// A host node of type `kind` and number `rdev`: the spec path itself when it is one,
/// else udev's `/dev/{char,block}/M:m` link, else a search of `/dev`.
fn host_node(path: &Path, kind: SFlag, rdev: u64) -> Option<PathBuf> {
    let is_it = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            SFlag::from_bits_truncate(m.mode()) & SFlag::S_IFMT == kind && m.rdev() == rdev
        })
    };
    let dir = if kind == SFlag::S_IFBLK {
        "block"
    } else {
        "char"
    };
    let link = PathBuf::from(format!(
        "/dev/{dir}/{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    ));
    [path.to_path_buf(), link]
        .into_iter()
        .find(|p| is_it(p))
        .or_else(|| find_node(Path::new("/dev"), &is_it, 0))
}

fn find_node(dir: &Path, is_it: &dyn Fn(&Path) -> bool, depth: u32) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let Ok(t) = entry.file_type() else { continue };
        let p = entry.path();
        if t.is_dir() && depth < 3 {
            if let Some(found) = find_node(&p, is_it, depth + 1) {
                return Some(found);
            }
        } else if (t.is_char_device() || t.is_block_device()) && is_it(&p) {
            return Some(p);
        }
    }
    None
}

/// One spec mount: options parsed, bind sources resolved against the bundle and checked,
/// `cgroup` turned into `cgroup2` on a v2-only host, id-mapped trees prepared.
fn mount_plan(m: &oci_spec::runtime::Mount, bundle: &Path, v2_only: bool) -> Result<MountPlan> {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "mount destination {} is not absolute",
            dest.display()
        )));
    }
    let parsed = parse_options(m.options().as_deref().unwrap_or(&[]));
    let mut flags = parsed.flags;
    if !parsed.recursive.is_empty() && !crate::clone::has_mount_setattr() {
        return Err(Error::Unavailable(format!(
            "mount {}: recursive mount options (rro, rnosuid, ...) need mount_setattr(2), \
             Linux 5.12 or later; this kernel lacks it",
            dest.display()
        )));
    }
    let mut fstype = m.typ().clone().filter(|t| t != "bind" && t != "none");
    if m.typ().as_deref() == Some("bind") {
        flags |= MsFlags::MS_BIND;
    }
    if fstype.as_deref() == Some("cgroup") && v2_only {
        fstype = Some("cgroup2".into());
    }
    let bind = flags.contains(MsFlags::MS_BIND);
    let source = m.source().as_ref().map(|s| {
        if s.is_relative() && bind {
            bundle.join(s)
        } else {
            s.clone()
        }
    });
    if bind {
        match &source {
            Some(s) if s.exists() => {}
            Some(s) => {
                return Err(Error::InvalidSpec(format!(
                    "bind source {} does not exist",
                    s.display()
                )))
            }
            None => {
                return Err(Error::InvalidSpec(format!(
                    "bind mount {} has no source",
                    dest.display()
                )))
            }
        }
    }
    let idmapped = idmapped_tree(m, flags, source.as_deref())?;
    Ok(MountPlan {
        fstype,
        source,
        dest: dest.clone(),
        flags,
        propagation: parsed.propagation,
        data: parsed.data,
        recursive: parsed.recursive,
        idmapped,
    })
}

/// For a bind mount with `uidMappings`/`gidMappings`: a detached tree of the source,
/// id-mapped through a user namespace holding those maps (made here, in the parent,
/// because only a parent can write arbitrary maps).
fn idmapped_tree(
    m: &oci_spec::runtime::Mount,
    flags: MsFlags,
    source: Option<&Path>,
) -> Result<Option<OwnedFd>> {
    let (Some(uids), Some(gids)) = (m.uid_mappings(), m.gid_mappings()) else {
        return Ok(None);
    };
    let Some(source) = source.filter(|_| flags.contains(MsFlags::MS_BIND)) else {
        return Err(Error::InvalidSpec(format!(
            "id-mapped mount {} must be a bind mount",
            m.destination().display()
        )));
    };
    let fmt = |maps: &Vec<oci_spec::runtime::LinuxIdMapping>| {
        maps.iter()
            .map(|x| format!("{} {} {}\n", x.container_id(), x.host_id(), x.size()))
            .collect::<String>()
    };
    let userns =
        crate::clone::userns_with_maps(&fmt(uids), &fmt(gids)).map_err(Error::Unavailable)?;
    let tree = crate::clone::idmapped_tree(source, &userns).map_err(Error::Unavailable)?;
    Ok(Some(tree))
}

/// The host's cgroup v1 hierarchies under /sys/fs/cgroup as (dir name, mount options);
/// the v2 mount of a hybrid host appears with options "cgroup2". Empty on a v2-only host.
fn cgroup_v1_hierarchies() -> Vec<(String, String)> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mountpoint = left.split(' ').nth(4).unwrap_or_default();
        let Some(name) = mountpoint.strip_prefix("/sys/fs/cgroup/") else {
            continue;
        };
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or_default();
        let options = r.nth(1).unwrap_or_default();
        let opts: Vec<&str> = options
            .split(',')
            .filter(|o| *o != "rw" && *o != "ro")
            .collect();
        match fstype {
            "cgroup" => v1.push((name.to_string(), opts.join(","))),
            "cgroup2" => v2.push((name.to_string(), "cgroup2".to_string())),
            _ => {}
        }
    }
    if v1.is_empty() {
        return Vec::new();
    }
    v1.extend(v2);
    v1
}

fn cstrings(items: &[String], what: &str) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::InvalidSpec(format!("{what} {s:?} contains a NUL byte")))
        })
        .collect()
}

fn caps_set(set: &Option<Capabilities>) -> Result<CapsHashSet> {
    set.iter()
        .flatten()
        .map(|c| {
            let name = format!("CAP_{c}");
            name.parse::<caps::Capability>()
                .map_err(|_| Error::InvalidSpec(format!("unknown capability {name}")))
        })
        .collect()
}

fn process_plan(
    p: &ProcessSpec,
    spec: &Spec,
    stdio: Stdio,
    held: &mut HeldFds,
) -> Result<ProcessPlan> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::InvalidSpec("process.args is empty".into()));
    }
    let env = p.env().clone().unwrap_or_default();
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    if !p.cwd().is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "process.cwd {} is not absolute",
            p.cwd().display()
        )));
    }
    let caps = caps_plan(p)?;
    let linux = spec.linux().clone().unwrap_or_default();
    let seccomp = match linux.seccomp() {
        Some(s) => crate::seccomp::compile(s)?,
        None => Vec::new(),
    };
    let rlimits = p
        .rlimits()
        .iter()
        .flatten()
        .map(|r| Ok((rlimit(r.typ())?, r.soft(), r.hard())))
        .collect::<Result<_>>()?;
    let (apparmor, selinux) = lsm_labels(p)?;
    let stdio_plan = stdio_plan(p, stdio.stdin, stdio.stdout, stdio.stderr, held)?;
    let extra_fds: Vec<RawFd> = stdio.extra_fds.iter().map(AsRawFd::as_raw_fd).collect();
    held.fds.extend(stdio.extra_fds);
    Ok(ProcessPlan {
        args: cstrings(&args, "argument")?,
        env: cstrings(&env, "environment entry")?,
        path_var,
        cwd: p.cwd().clone(),
        uid: p.user().uid(),
        gid: p.user().gid(),
        groups: p.user().additional_gids().clone().unwrap_or_default(),
        umask: p.user().umask().unwrap_or(0o022),
        rlimits,
        oom_score_adj: p.oom_score_adj().map(clamp_oom_score_adj),
        caps,
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        seccomp,
        apparmor,
        selinux,
        stdio: stdio_plan,
        extra_fds,
    })
}

fn caps_plan(p: &ProcessSpec) -> Result<CapsPlan> {
    let Some(c) = p.capabilities() else {
        return Ok(CapsPlan::default());
    };
    Ok(CapsPlan {
        bounding: caps_set(c.bounding())?,
        effective: caps_set(c.effective())?,
        inheritable: caps_set(c.inheritable())?,
        permitted: caps_set(c.permitted())?,
        ambient: caps_set(c.ambient())?,
    })
}

/// The AppArmor profile and SELinux label to apply; asking for one the host does not
/// run is a clear `Unavailable` error rather than a silent no-op.
fn lsm_labels(p: &ProcessSpec) -> Result<(Option<String>, Option<String>)> {
    let apparmor = p.apparmor_profile().clone().filter(|s| !s.is_empty());
    if let Some(profile) = &apparmor {
        let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .map(|s| s.trim() == "Y")
            .unwrap_or(false);
        if !enabled {
            return Err(Error::Unavailable(format!(
                "apparmor profile {profile} requested but AppArmor is not enabled on this host"
            )));
        }
    }
    let selinux = p.selinux_label().clone().filter(|s| !s.is_empty());
    if let Some(label) = &selinux {
        if !Path::new("/sys/fs/selinux/enforce").exists() {
            return Err(Error::Unavailable(format!(
                "selinux label {label} requested but SELinux is not enabled on this host"
            )));
        }
    }
    Ok((apparmor, selinux))
}

fn stdio_plan(
    p: &ProcessSpec,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    held: &mut HeldFds,
) -> Result<StdioPlan> {
    if p.terminal().unwrap_or(false) {
        return Ok(StdioPlan::Terminal);
    }
    let mut raw = [0; 3];
    for (i, fd) in [stdin, stdout, stderr].into_iter().enumerate() {
        let fd = match fd {
            Some(fd) => fd,
            None => File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| Error::io("/dev/null", e))?,
        };
        raw[i] = fd.as_raw_fd();
        held.fds.push(fd);
    }
    Ok(StdioPlan::Fds(raw))
}

/// Never lower than our own value: lowering needs CAP_SYS_RESOURCE, which the runtime
/// may lack (containerd's restrict_oom_score_adj does the same).
fn clamp_oom_score_adj(wanted: i32) -> i32 {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-1000);
    wanted.clamp(own, 1000)
}

fn rlimit(t: PosixRlimitType) -> Result<Resource> {
    Ok(match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_score_adj_is_never_lowered_below_our_own() {
        let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(clamp_oom_score_adj(-1000), own);
        assert_eq!(clamp_oom_score_adj(1000), 1000);
    }

    fn device(v: serde_json::Value) -> LinuxDevice {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_device_becomes_a_node_with_its_number_mode_and_owner() {
        let d = device(serde_json::json!({
            "path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
            "fileMode": 0o620, "uid": 7, "gid": 8
        }));
        let plan = device_plan(&d, false).unwrap();
        assert_eq!(plan.path, Path::new("/dev/mynull"));
        match plan.source {
            DeviceSource::Mknod {
                kind,
                rdev,
                mode,
                uid,
                gid,
            } => {
                assert_eq!(kind, SFlag::S_IFCHR);
                assert_eq!(rdev, nix::sys::stat::makedev(1, 3));
                assert_eq!((mode, uid, gid), (0o620, 7, 8));
            }
            other => panic!("{other:?}"),
        }
        // in a user namespace: the host node with that number, found by number
        match device_plan(&d, true).unwrap().source {
            DeviceSource::Bind(host) => {
                let meta = std::fs::metadata(&host).unwrap();
                assert_eq!(meta.rdev(), nix::sys::stat::makedev(1, 3), "{host:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_devices_are_invalid_arguments() {
        for bad in [
            serde_json::json!({"path": "dev/x", "type": "c", "major": 1, "minor": 3}),
            serde_json::json!({"path": "/dev/../x", "type": "c", "major": 1, "minor": 3}),
            serde_json::json!({"path": "/dev/x", "type": "a", "major": 1, "minor": 3}),
            serde_json::json!({"path": "/dev/x", "type": "c", "major": -1, "minor": 3}),
        ] {
            let err = device_plan(&device(bad.clone()), false).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn a_hybrid_host_lists_its_v1_hierarchies() {
        let h = cgroup_v1_hierarchies();
        if Path::new("/sys/fs/cgroup/memory").is_dir() {
            assert!(
                h.iter().any(|(n, o)| n == "memory" && o.contains("memory")),
                "{h:?}"
            );
        }
    }
}
