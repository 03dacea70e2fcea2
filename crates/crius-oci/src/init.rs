//! The named steps a container init (or exec) child runs between fork and `execve`.
//! Everything here executes in the child; the plan was built and validated by the parent,
//! so the child parses nothing and fails only on kernel answers.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, CapsHashSet};
use nix::sched::CloneFlags;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chdir, execve, setgroups, setresgid, setresuid, Gid, Uid};
use seccompiler::BpfProgram;

use crate::clone::{
    cloexec_from, dup_above, dup_onto, exit_now, install_seccomp, reset_signals,
    set_controlling_tty,
};
use crate::error::InitError;
use crate::message::{Channel, Message};
use crate::rootfs::{self, RootfsPlan};

/// Namespaces to join (by an fd opened in the parent) and to create.
#[derive(Debug)]
pub(crate) struct NamespacePlan {
    /// A user namespace to join first.
    pub(crate) join_user: Option<OwnedFd>,
    /// Other namespaces to join, with their type.
    pub(crate) join: Vec<(CloneFlags, OwnedFd)>,
    /// Unshare a new user namespace (the parent writes its maps).
    pub(crate) new_user: bool,
    /// Other namespaces to create (a cgroup namespace is created by the init itself,
    /// after the parent placed it in its cgroup).
    pub(crate) create: CloneFlags,
}

impl Default for NamespacePlan {
    fn default() -> Self {
        Self {
            join_user: None,
            join: Vec::new(),
            new_user: false,
            create: CloneFlags::empty(),
        }
    }
}

/// Where the process's 0, 1, 2 come from.
#[derive(Debug)]
pub(crate) enum StdioPlan {
    /// Caller-supplied descriptors for stdin, stdout, stderr.
    Fds([RawFd; 3]),
    /// A pty allocated inside the container (its own devpts, so `ttyname` works there);
    /// the master goes to the parent, the slave becomes the controlling terminal and 0, 1, 2.
    Terminal,
}

/// The capability sets to end up with.
#[derive(Debug, Default, Clone)]
pub(crate) struct CapsPlan {
    pub(crate) bounding: CapsHashSet,
    pub(crate) effective: CapsHashSet,
    pub(crate) inheritable: CapsHashSet,
    pub(crate) permitted: CapsHashSet,
    pub(crate) ambient: CapsHashSet,
}

/// The process part, shared by container init and exec.
#[derive(Debug)]
pub(crate) struct ProcessPlan {
    pub(crate) args: Vec<CString>,
    pub(crate) env: Vec<CString>,
    /// `PATH` from the process env, used to find args[0].
    pub(crate) path_var: String,
    pub(crate) cwd: PathBuf,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
    pub(crate) umask: u32,
    pub(crate) rlimits: Vec<(Resource, u64, u64)>,
    /// Already clamped to be no lower than the caller's own value.
    pub(crate) oom_score_adj: Option<i32>,
    pub(crate) caps: CapsPlan,
    pub(crate) no_new_privs: bool,
    pub(crate) seccomp: Vec<BpfProgram>,
    pub(crate) apparmor: Option<String>,
    pub(crate) selinux: Option<String>,
    pub(crate) stdio: StdioPlan,
    /// Extra descriptors that become 3, 4, ... in the process.
    pub(crate) extra_fds: Vec<RawFd>,
}

/// The container part (absent for exec).
#[derive(Debug)]
pub(crate) struct ContainerPlan {
    /// Present when the container has its own mount namespace.
    pub(crate) rootfs: Option<RootfsPlan>,
    pub(crate) new_cgroup_ns: bool,
    pub(crate) hostname: Option<String>,
    pub(crate) domainname: Option<String>,
    pub(crate) sysctls: Vec<(String, String)>,
    pub(crate) masked: Vec<PathBuf>,
    pub(crate) readonly: Vec<PathBuf>,
}

/// Everything the children need, prepared by the parent before fork.
#[derive(Debug)]
pub(crate) struct InitPlan {
    pub(crate) namespaces: NamespacePlan,
    pub(crate) container: Option<ContainerPlan>,
    pub(crate) process: ProcessPlan,
}

/// Runs the steps in the container process; never returns.
pub(crate) fn run(plan: &InitPlan, ch: &Channel) -> ! {
    let err = match steps(plan, ch) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = ch.send(&Message::Failed(err), None);
    exit_now(127)
}

fn steps(plan: &InitPlan, ch: &Channel) -> Result<Infallible, InitError> {
    reset_signals();
    let _ = nix::sys::prctl::set_dumpable(false);
    ch.expect(&Message::Continue)
        .map_err(|r| r.into_init_error())?;
    let terminal = matches!(plan.process.stdio, StdioPlan::Terminal);
    if !terminal {
        setup_stdio(&plan.process, None)?;
    }
    if let Some(c) = &plan.container {
        container_steps(c)?;
    }
    if terminal {
        let slave = open_terminal(ch, &plan.process)?;
        setup_stdio(&plan.process, Some(slave))?;
    }
    apply_rlimits(&plan.process)?;
    set_cwd(&plan.process.cwd)?;
    if plan.container.is_some() {
        ch.send(&Message::Created, None).map_err(InitError::Sync)?;
        ch.expect(&Message::Start)
            .map_err(|r| r.into_init_error())?;
    }
    privilege_steps(&plan.process)
}

fn container_steps(c: &ContainerPlan) -> Result<(), InitError> {
    if c.new_cgroup_ns {
        crate::clone::unshare_cgroup_ns()?;
    }
    if let Some(r) = &c.rootfs {
        rootfs::prepare_rootfs(r)?;
        crate::clone::pivot_root(&r.path)?;
    }
    set_hostname(c)?;
    apply_sysctls(&c.sysctls)?;
    if let Some(r) = &c.rootfs {
        rootfs::mask_paths(&c.masked, &c.readonly)?;
        if r.readonly {
            rootfs::readonly_root()?;
        }
    }
    Ok(())
}

/// Identity, capabilities, LSM, seccomp, fd hygiene, exec. When no_new_privs is off,
/// seccomp must be installed while CAP_SYS_ADMIN is still held (seccomp(2)).
fn privilege_steps(p: &ProcessPlan) -> Result<Infallible, InitError> {
    if !p.no_new_privs {
        apply_seccomp(&p.seccomp)?;
    }
    set_user(p)?;
    drop_capabilities(&p.caps)?;
    apply_lsm(p)?;
    if p.no_new_privs {
        apply_seccomp(&p.seccomp)?;
    }
    exec(p)
}

/// Part of setup_stdio for terminals: opens a pty on the container's /dev/ptmx, sends the
/// master to the parent and returns the slave (owned by the process's uid/gid).
fn open_terminal(ch: &Channel, p: &ProcessPlan) -> Result<OwnedFd, InitError> {
    use nix::fcntl::OFlag;
    let err = |what: &str, e: nix::Error| InitError::SetupStdio(format!("{what}: {e}"));
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| err("open /dev/ptmx", e))?;
    nix::pty::grantpt(&master).map_err(|e| err("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| err("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| err("ptsname", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(&format!("open {name}"), e))?;
    nix::unistd::fchown(
        &slave,
        Some(Uid::from_raw(p.uid)),
        Some(Gid::from_raw(p.gid)),
    )
    .map_err(|e| err(&format!("chown {name}"), e))?;
    let master: OwnedFd = master.into();
    ch.send(&Message::Pty, Some(std::os::fd::AsFd::as_fd(&master)))
        .map_err(InitError::Sync)?;
    Ok(slave)
}

/// The setup_stdio step: caller fds (or the pty slave) become 0, 1, 2; extras become 3...
fn setup_stdio(p: &ProcessPlan, pty_slave: Option<OwnedFd>) -> Result<(), InitError> {
    let err = |what: &str, e: nix::Error| InitError::SetupStdio(format!("{what}: {e}"));
    // Move every source above the targets first so no dup2 clobbers a later source.
    let floor = 3 + RawFd::try_from(p.extra_fds.len()).unwrap_or(0) + 64;
    let extras: Vec<RawFd> = p
        .extra_fds
        .iter()
        .map(|fd| dup_above(*fd, floor))
        .collect::<Result<_, _>>()
        .map_err(|e| err("dup extra fd", e))?;
    match &p.stdio {
        StdioPlan::Fds(fds) => {
            // Own session and process group: signals to the caller's group (a terminal's
            // Ctrl-C, a killpg of the monitor) never reach the container.
            nix::unistd::setsid().map_err(|e| err("setsid", e))?;
            let moved: Vec<RawFd> = fds
                .iter()
                .map(|fd| dup_above(*fd, floor))
                .collect::<Result<_, _>>()
                .map_err(|e| err("dup stdio", e))?;
            for (target, src) in (0..).zip(moved.iter()) {
                dup_onto(*src, target).map_err(|e| err("dup2 stdio", e))?;
            }
        }
        StdioPlan::Terminal => {
            let slave = pty_slave.ok_or_else(|| InitError::SetupStdio("no pty slave".into()))?;
            let slave = std::os::fd::AsRawFd::as_raw_fd(&slave);
            nix::unistd::setsid().map_err(|e| err("setsid", e))?;
            set_controlling_tty(slave).map_err(|e| err("TIOCSCTTY", e))?;
            for target in 0..3 {
                dup_onto(slave, target).map_err(|e| err("dup2 pty", e))?;
            }
        }
    }
    for (target, src) in (3..).zip(extras.iter()) {
        dup_onto(*src, target).map_err(|e| err("dup2 extra fd", e))?;
    }
    Ok(())
}

/// The set_hostname step (UTS namespace only).
fn set_hostname(c: &ContainerPlan) -> Result<(), InitError> {
    if let Some(h) = &c.hostname {
        nix::unistd::sethostname(h)
            .map_err(|e| InitError::SetHostname(format!("sethostname {h}: {e}")))?;
    }
    if let Some(d) = &c.domainname {
        std::fs::write("/proc/sys/kernel/domainname", d)
            .map_err(|e| InitError::SetHostname(format!("domainname {d}: {e}")))?;
    }
    Ok(())
}

/// The apply_sysctls step: the caller decides which keys are allowed; we only refuse
/// keys that would walk out of /proc/sys.
fn apply_sysctls(sysctls: &[(String, String)]) -> Result<(), InitError> {
    for (key, value) in sysctls {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value)
            .map_err(|e| InitError::ApplySysctls(format!("{key}={value}: {e}")))?;
    }
    Ok(())
}

/// The apply_rlimits step, with umask (oom_score_adj is the parent's to write: see
/// `builtin::launch`).
fn apply_rlimits(p: &ProcessPlan) -> Result<(), InitError> {
    for (res, soft, hard) in &p.rlimits {
        setrlimit(*res, *soft, *hard)
            .map_err(|e| InitError::ApplyRlimits(format!("setrlimit {res:?}: {e}")))?;
    }
    umask(Mode::from_bits_truncate(p.umask));
    Ok(())
}

/// The set_cwd step: resolved inside the container (we are past pivot_root or setns).
fn set_cwd(cwd: &Path) -> Result<(), InitError> {
    chdir(cwd).map_err(|e| InitError::SetCwd(format!("chdir {}: {e}", cwd.display())))
}

/// The set_user step: groups, gid, uid, always explicit; caps survive via keepcaps.
fn set_user(p: &ProcessPlan) -> Result<(), InitError> {
    let err = |what: &str, e: nix::Error| InitError::SetUser(format!("{what}: {e}"));
    nix::sys::prctl::set_keepcaps(true).map_err(|e| err("PR_SET_KEEPCAPS", e))?;
    let groups: Vec<Gid> = p.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&groups).map_err(|e| err("setgroups", e))?;
    let gid = Gid::from_raw(p.gid);
    setresgid(gid, gid, gid).map_err(|e| err(&format!("setresgid {}", p.gid), e))?;
    let uid = Uid::from_raw(p.uid);
    setresuid(uid, uid, uid).map_err(|e| err(&format!("setresuid {}", p.uid), e))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| err("PR_SET_KEEPCAPS", e))
}

/// The drop_capabilities step: every set exactly as planned.
fn drop_capabilities(c: &CapsPlan) -> Result<(), InitError> {
    let err = |what: &str, e: caps::errors::CapsError| {
        InitError::DropCapabilities(format!("{what}: {e}"))
    };
    // After setuid with keepcaps the effective set is empty; raise it to drop bounding.
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| err("read permitted", e))?;
    caps::set(None, CapSet::Effective, &permitted).map_err(|e| err("raise effective", e))?;
    for cap in caps::all() {
        if !c.bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| err(&format!("drop bounding {cap}"), e))?;
        }
    }
    caps::set(None, CapSet::Inheritable, &c.inheritable).map_err(|e| err("inheritable", e))?;
    caps::set(None, CapSet::Effective, &c.effective).map_err(|e| err("effective", e))?;
    caps::set(None, CapSet::Permitted, &c.permitted).map_err(|e| err("permitted", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| err("clear ambient", e))?;
    for cap in &c.ambient {
        caps::raise(None, CapSet::Ambient, *cap).map_err(|e| err(&format!("ambient {cap}"), e))?;
    }
    Ok(())
}

/// The apply_lsm step: no_new_privs, then AppArmor/SELinux exec labels.
fn apply_lsm(p: &ProcessPlan) -> Result<(), InitError> {
    if p.no_new_privs {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| InitError::ApplyLsm(format!("PR_SET_NO_NEW_PRIVS: {e}")))?;
    }
    if let Some(profile) = &p.apparmor {
        let attr = if Path::new("/proc/self/attr/apparmor/exec").exists() {
            "/proc/self/attr/apparmor/exec"
        } else {
            "/proc/self/attr/exec"
        };
        std::fs::write(attr, format!("exec {profile}"))
            .map_err(|e| InitError::ApplyLsm(format!("apparmor profile {profile}: {e}")))?;
    }
    if let Some(label) = &p.selinux {
        std::fs::write("/proc/self/attr/exec", label)
            .map_err(|e| InitError::ApplyLsm(format!("selinux label {label}: {e}")))?;
    }
    Ok(())
}

/// The apply_seccomp step: install the filters compiled by the parent.
fn apply_seccomp(filters: &[BpfProgram]) -> Result<(), InitError> {
    for f in filters {
        install_seccomp(f).map_err(|e| InitError::ApplySeccomp(format!("install: {e}")))?;
    }
    Ok(())
}

/// The exec step: only 0, 1, 2 and the extras stay open; args[0] is looked up in the
/// process's own PATH inside the container.
fn exec(p: &ProcessPlan) -> Result<Infallible, InitError> {
    let keep = 3 + u32::try_from(p.extra_fds.len()).unwrap_or(0);
    cloexec_from(keep).map_err(|e| InitError::Exec(format!("close_range: {e}")))?;
    let arg0 = p
        .args
        .first()
        .ok_or_else(|| InitError::Exec("empty args".into()))?;
    let path = find_executable(arg0, &p.path_var)?;
    let err = execve(&path, &p.args, &p.env).unwrap_err();
    Err(InitError::Exec(format!(
        "execve {}: {err}",
        path.to_string_lossy()
    )))
}

fn find_executable(arg0: &CString, path_var: &str) -> Result<CString, InitError> {
    let bytes = arg0.as_bytes();
    if bytes.contains(&b'/') {
        return Ok(arg0.clone());
    }
    let name = std::ffi::OsStr::from_bytes(bytes);
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && !candidate.is_dir()
        {
            return CString::new(candidate.as_os_str().as_bytes())
                .map_err(|e| InitError::Exec(e.to_string()));
        }
    }
    Err(InitError::Exec(format!(
        "executable {} not found in PATH {path_var}",
        name.to_string_lossy()
    )))
}
