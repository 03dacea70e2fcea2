//! Which processes belong to a runtime, and what they cost, read from /proc.
//!
//! A runtime's processes are the daemon (the process that owns the listening CRI socket),
//! every process whose name is in the side's name list (shims and monitors, which detach
//! from the daemon), and every descendant of those that lives in the bench's own PID
//! namespace. Descendants in another PID namespace are the pods' workload (pause, sleep,
//! exec'd commands) and are counted apart.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use serde::Serialize;

/// Linux reports /proc/<pid>/stat times in USER_HZ, which is 100 on every architecture
/// the kernel exports to user space (`sysconf(_SC_CLK_TCK)` returns the same constant).
const TICKS_PER_SECOND: f64 = 100.0;

/// The parts of /proc/<pid>/stat the bench uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub ppid: i32,
    /// utime + stime + cutime + cstime: the process and its reaped children, in ticks.
    pub cpu_ticks: u64,
    /// Start time since boot in ticks; with the pid it names a process uniquely.
    pub start: u64,
}

/// Parses one /proc/<pid>/stat line. `comm` may hold spaces and parentheses, so the
/// fields after it are found from the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line.get(..open)?.trim().parse().ok()?;
    let comm = line.get(open + 1..close)?.to_string();
    // Fields from 3 (state) on; field k is at index k - 3.
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    let field = |k: usize| -> Option<u64> { rest.get(k - 3)?.parse().ok() };
    let ppid = rest.get(1)?.parse().ok()?;
    let cpu_ticks = field(14)? + field(15)? + field(16)? + field(17)?;
    Some(Stat {
        pid,
        comm,
        ppid,
        cpu_ticks,
        start: field(22)?,
    })
}

/// Resident and proportional set size in KiB, from a smaps_rollup text.
pub fn parse_smaps_rollup(text: &str) -> Option<Memory> {
    let mut rss = None;
    let mut pss = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("Rss:") => &mut rss,
            Some("Pss:") => &mut pss,
            _ => continue,
        };
        *slot = words.next().and_then(|v| v.parse::<u64>().ok());
    }
    Some(Memory {
        rss_kib: rss?,
        pss_kib: pss?,
    })
}

/// Memory of one process or a sum of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl std::ops::AddAssign for Memory {
    fn add_assign(&mut self, other: Memory) {
        self.rss_kib += other.rss_kib;
        self.pss_kib += other.pss_kib;
    }
}

/// Memory of one process, if it is still there.
pub fn memory_of(pid: i32) -> Option<Memory> {
    parse_smaps_rollup(&fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn all_stats() -> Vec<Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pid_namespace(pid: &str) -> Option<std::path::PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// Inodes of the unix sockets bound to `path`, from /proc/net/unix.
fn socket_inodes(path: &Path) -> BTreeSet<u64> {
    let text = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let want = path.to_string_lossy();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.get(7) == Some(&want.as_ref())).then(|| cols.get(6)?.parse().ok())?
        })
        .collect()
}

/// The process that holds the socket bound at `path` (the runtime daemon), if visible.
pub fn socket_owner(path: &Path) -> Option<i32> {
    let targets: BTreeSet<String> = socket_inodes(path)
        .into_iter()
        .map(|i| format!("socket:[{i}]"))
        .collect();
    if targets.is_empty() {
        return None;
    }
    let me = std::process::id().to_string();
    let mut pids: Vec<i32> = fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| pid.to_string() != me)
        .collect();
    pids.sort_unstable();
    pids.into_iter().find(|pid| {
        fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
                .any(|l| targets.contains(l.to_string_lossy().as_ref()))
        })
    })
}

/// The names of a runtime's per-pod helper processes.
#[derive(Debug, Clone, Default)]
pub struct ProcNames {
    /// Known helpers of the runtime (shims, monitors): counted only when they serve this
    /// runtime's socket (see [`matches_name`]).
    pub known: Vec<String>,
    /// Names the user gave with `--procs`: counted by name alone.
    pub extra: Vec<String>,
}

/// Whether the process with `argv` is a helper of the runtime serving `socket`.
///
/// A name from `extra` is enough. A `known` name must also belong to this runtime, since
/// other daemons (a host containerd, a test criusd) run helpers of the same name: when its
/// command line names a daemon (`-address <sock>`, as containerd shims do) that must be
/// our socket; otherwise one of its arguments must lie under the socket's directory (a
/// crius-monitor gets `--config <state>/pods/<id>/pod.json`, its daemon's state dir).
pub fn matches_name(argv: &[String], comm: &str, names: &ProcNames, socket: &Path) -> bool {
    let base = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("");
    let is = |list: &[String]| list.iter().any(|n| n == base || n == comm);
    if is(&names.extra) {
        return true;
    }
    if !is(&names.known) {
        return false;
    }
    let address = argv
        .iter()
        .position(|a| a == "-address" || a == "--address")
        .and_then(|i| argv.get(i + 1));
    match (address, socket.parent()) {
        (Some(a), _) => Path::new(a) == socket,
        (None, Some(dir)) => argv.iter().skip(1).any(|a| Path::new(a).starts_with(dir)),
        (None, None) => false,
    }
}

/// The processes of one runtime, as (pid, start) pairs so a reused pid is not mistaken.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcSet {
    pub daemon: Option<i32>,
    pub runtime: Vec<(i32, u64)>,
    pub workload: Vec<(i32, u64)>,
}

impl ProcSet {
    /// Finds the runtime serving `socket`: daemon, named processes and their descendants.
    pub fn discover(socket: &Path, names: &ProcNames) -> ProcSet {
        let daemon = socket_owner(socket);
        let stats = all_stats();
        let me = i32::try_from(std::process::id()).unwrap_or(-1);
        let mut children: HashMap<i32, Vec<&Stat>> = HashMap::new();
        for s in &stats {
            children.entry(s.ppid).or_default().push(s);
        }
        let mut todo: Vec<&Stat> = stats
            .iter()
            .filter(|s| s.pid != me)
            .filter(|s| {
                Some(s.pid) == daemon || matches_name(&cmdline(s.pid), &s.comm, names, socket)
            })
            .collect();
        let host = pid_namespace("self");
        let mut seen = BTreeSet::new();
        let mut set = ProcSet {
            daemon,
            ..ProcSet::default()
        };
        while let Some(s) = todo.pop() {
            if !seen.insert(s.pid) {
                continue;
            }
            let ns = pid_namespace(&s.pid.to_string());
            if ns.is_some() && ns == host {
                set.runtime.push((s.pid, s.start));
            } else {
                set.workload.push((s.pid, s.start));
            }
            todo.extend(children.get(&s.pid).into_iter().flatten());
        }
        set.runtime.sort_unstable();
        set.workload.sort_unstable();
        set
    }

    /// CPU seconds the runtime processes (and the children they reaped) have used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks: u64 = self
            .runtime
            .iter()
            .filter_map(|(pid, start)| read_stat(*pid).filter(|s| s.start == *start))
            .map(|s| s.cpu_ticks)
            .sum();
        ticks as f64 / TICKS_PER_SECOND
    }

    /// Summed memory of the runtime processes and, apart, of the workload processes.
    pub fn memory(&self) -> (Memory, Memory) {
        let sum = |pids: &[(i32, u64)]| {
            let mut total = Memory::default();
            for (pid, _) in pids {
                if let Some(m) = memory_of(*pid) {
                    total += m;
                }
            }
            total
        };
        (sum(&self.runtime), sum(&self.workload))
    }

    /// Command names of the runtime processes, for the report.
    pub fn runtime_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .runtime
            .iter()
            .filter_map(|(pid, _)| read_stat(*pid).map(|s| s.comm))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_reads_a_comm_with_spaces_and_parentheses() {
        let line = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 \
                    7 3 2 1 20 0 1 0 987654 1000000 200 18446744073709551615";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "a (b) c");
        assert_eq!(s.ppid, 17);
        assert_eq!(s.cpu_ticks, 13);
        assert_eq!(s.start, 987654);
    }

    #[test]
    fn parse_stat_rejects_a_truncated_line() {
        assert_eq!(parse_stat("12 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parse_stat_reads_this_process_from_the_kernel() {
        let text = fs::read_to_string("/proc/self/stat").expect("own stat");
        let s = parse_stat(&text).expect("kernel format parses");
        assert_eq!(s.pid, i32::try_from(std::process::id()).expect("pid fits"));
        assert!(s.start > 0);
    }

    #[test]
    fn parse_smaps_rollup_reads_rss_and_pss() {
        let text = "00400000-7ff ---p 00000000 00:00 0 [rollup]\n\
                    Rss:                1604 kB\nPss:                 191 kB\n\
                    Pss_Dirty:           108 kB\n";
        assert_eq!(
            parse_smaps_rollup(text),
            Some(Memory {
                rss_kib: 1604,
                pss_kib: 191
            })
        );
        assert_eq!(parse_smaps_rollup("Rss: 1 kB\n"), None);
    }

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn known(name: &str) -> ProcNames {
        ProcNames {
            known: vec![name.to_string()],
            extra: vec![],
        }
    }

    #[test]
    fn a_shim_counts_only_for_the_socket_it_names() {
        let names = known("containerd-shim-runc-v2");
        let ours = Path::new("/run/crius-bench/containerd.sock");
        let shim = |addr: &str| {
            argv(&[
                "/usr/bin/containerd-shim-runc-v2",
                "-namespace",
                "k8s.io",
                "-address",
                addr,
            ])
        };
        let comm = "containerd-shim";
        assert!(matches_name(
            &shim("/run/crius-bench/containerd.sock"),
            comm,
            &names,
            ours
        ));
        assert!(!matches_name(
            &shim("/run/containerd/containerd.sock"),
            comm,
            &names,
            ours
        ));
    }

    #[test]
    fn a_monitor_counts_only_when_its_config_lies_under_the_socket_directory() {
        let names = known("crius-monitor");
        let ours = Path::new("/run/crius/crius.sock");
        let mine = argv(&[
            "/usr/bin/crius-monitor",
            "--config",
            "/run/crius/pods/p1/pod.json",
        ]);
        let other = argv(&["crius-monitor", "--config", "/tmp/test-1/pods/p1/pod.json"]);
        let sibling = argv(&["crius-monitor", "--config", "/run/crius2/pods/p1/pod.json"]);
        assert!(matches_name(&mine, "crius-monitor", &names, ours));
        assert!(!matches_name(&other, "crius-monitor", &names, ours));
        assert!(!matches_name(&sibling, "crius-monitor", &names, ours));
        assert!(!matches_name(
            &mine,
            "crius-monitor",
            &known("conmon"),
            ours
        ));
    }

    #[test]
    fn a_user_given_name_counts_by_name_alone() {
        let names = ProcNames {
            known: vec![],
            extra: vec!["my-shim".into()],
        };
        let ours = Path::new("/run/x.sock");
        assert!(matches_name(
            &argv(&["/opt/my-shim"]),
            "my-shim",
            &names,
            ours
        ));
        assert!(!matches_name(&argv(&["/opt/other"]), "other", &names, ours));
    }

    #[test]
    fn discover_finds_nothing_for_an_unbound_socket() {
        let names = ProcNames::default();
        let set = ProcSet::discover(Path::new("/nonexistent/crius-bench.sock"), &names);
        assert_eq!(set.daemon, None);
        assert!(set.runtime.is_empty());
        assert_eq!(set.cpu_seconds(), 0.0);
    }

    #[test]
    fn socket_owner_finds_the_process_holding_a_listening_socket() {
        let dir = std::env::temp_dir().join(format!("crius-bench-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        // The owner is this very process, which socket_owner skips on purpose: a bench
        // never measures itself.
        assert_eq!(socket_owner(&path), None);
        assert!(!socket_inodes(&path).is_empty());
        drop(listener);
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
