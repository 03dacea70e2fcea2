//! crius-bench: the same CRI workload against one or two runtimes, side by side.
//!
//! `crius-bench --endpoint unix:///run/crius/crius.sock --vs unix:///run/crius-bench/containerd.sock
//! --scenario pod-start --iterations 50` runs side A and side B alternately in one process
//! and reports each side's p50/p90/p99/max and the ratio A/B of the medians. A side whose
//! RPC is not implemented (or fails) is reported as such ("crius: RunPodSandbox
//! unimplemented") and the other side goes on. Every pod the bench creates is removed at
//! the end, also after an error or Ctrl-C. See docs/benchmarks.md.
#![forbid(unsafe_code)]

mod cri;
mod procs;
mod report;
mod scenario;
mod stats;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use crius::api;

use crate::cri::{timed, Workload};
use crate::report::{Report, SideInfo};
use crate::scenario::Side;

/// Benchmark CRI runtimes side by side: the same workload, alternating A and B.
#[derive(Debug, Parser)]
#[command(name = "crius-bench", version, about)]
struct Args {
    /// CRI endpoint of side A.
    #[arg(long, default_value = "unix:///run/crius/crius.sock")]
    endpoint: String,
    /// CRI endpoint of side B; A and B then run alternately (A B A B ...).
    #[arg(long)]
    vs: Option<String>,
    /// What to measure.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Measured iterations per side (pull: pulls; list: calls per RPC and size).
    #[arg(long, default_value_t = 20, value_parser = positive)]
    iterations: usize,
    /// Iterations in flight at once on a side (pull and list calls always run one at a time).
    #[arg(long, default_value_t = 1, value_parser = positive)]
    concurrency: usize,
    /// Image for the containers (pod-start, exec-sync, list, density) or to pull (pull).
    /// Needs /bin/sleep and /bin/true.
    #[arg(long, default_value = "127.0.0.1:5055/crius-bench/busybox:1")]
    image: String,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Extra process names (comma-separated) counted as side A's runtime, beside the
    /// daemon, its descendants and the known shims/monitors of the runtime.
    #[arg(long, value_delimiter = ',')]
    procs: Vec<String>,
    /// Like --procs, for side B.
    #[arg(long, value_delimiter = ',')]
    vs_procs: Vec<String>,
    /// density: the number of pods to start.
    #[arg(long, default_value_t = 100, value_parser = positive)]
    pods: usize,
    /// list: the container counts to measure at (comma-separated, ascending).
    #[arg(long, value_delimiter = ',', default_value = "100,1000", value_parser = positive)]
    list_sizes: Vec<usize>,
    /// list: containers per pod while filling up.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    containers_per_pod: usize,
    /// Cgroup parent of every bench pod (cgroupfs form).
    #[arg(long, default_value = "/crius-bench")]
    cgroup_parent: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Version RPC latency.
    Version,
    /// RunPodSandbox + CreateContainer + StartContainer, then StopPodSandbox + RemovePodSandbox.
    PodStart,
    /// ExecSync /bin/true in a running container; latency and runtime CPU per 1000 execs.
    ExecSync,
    /// ListContainers / ListPodSandbox / ListContainerStats with --list-sizes containers.
    List,
    /// RemoveImage then PullImage of --image; latency and MB/s.
    Pull,
    /// Start --pods pods; runtime RSS/PSS per pod, pod-start latency at N vs at 1.
    Density,
    /// RunPodSandbox alone with the pod network on, then StopPodSandbox + RemovePodSandbox;
    /// network setup time as the daemon reports it (crius: verbose PodSandboxStatus).
    /// Compare CNI and the built-in network with two daemons, one configured for each.
    PodNetwork,
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main() {
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .and_then(|rt| rt.block_on(run(args)));
    if let Err(e) = result {
        eprintln!("crius-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let run_id = run_id();
    let mut endpoints = vec![(args.endpoint.clone(), args.procs.clone())];
    if let Some(vs) = &args.vs {
        endpoints.push((vs.clone(), args.vs_procs.clone()));
    }
    let mut sides = Vec::new();
    for (i, (endpoint, procs)) in endpoints.into_iter().enumerate() {
        let letter = if i == 0 { "A" } else { "B" };
        sides.push(connect(letter, &endpoint, procs, &args, &run_id).await?);
    }
    if sides.iter().all(|s| s.work.is_none()) {
        let why: Vec<String> = sides
            .iter()
            .filter_map(|s| s.info.failure.clone())
            .collect();
        bail!("no runtime reachable: {}", why.join("; "));
    }
    let mut report = new_report(&args, &sides);
    let outcome = tokio::select! {
        () = run_scenario(&mut sides, &args, &mut report) => None,
        _ = tokio::signal::ctrl_c() => Some("interrupted"),
    };
    cleanup(&mut sides).await;
    report.sides = sides.iter().map(|s| s.info.clone()).collect();
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("write {}", path.display()))?;
    }
    match outcome {
        Some(why) => bail!("{why}; bench pods were removed"),
        None => Ok(()),
    }
}

async fn run_scenario(sides: &mut [Side], args: &Args, report: &mut Report) {
    let (n, c) = (args.iterations, args.concurrency);
    match args.scenario {
        Scenario::Version => scenario::version(sides, n, c, report).await,
        Scenario::PodStart => scenario::pod_start(sides, n, c, report).await,
        Scenario::ExecSync => scenario::exec_sync(sides, n, c, report).await,
        Scenario::List => {
            let (sizes, per_pod) = (&args.list_sizes, args.containers_per_pod);
            scenario::list(sides, n, c, sizes, per_pod, report).await;
        }
        Scenario::Pull => scenario::pull(sides, n, report).await,
        Scenario::Density => scenario::density(sides, args.pods, c, report).await,
        Scenario::PodNetwork => scenario::pod_network(sides, n, c, report).await,
    }
}

/// Connects to one side and asks its name. An unreachable side is kept, marked failed,
/// so the report says so and the other side still runs.
async fn connect(
    letter: &str,
    endpoint: &str,
    extra_procs: Vec<String>,
    args: &Args,
    run_id: &str,
) -> Result<Side> {
    let socket = crius::client::endpoint_path(endpoint)
        .with_context(|| format!("endpoint {endpoint:?} is not unix:///absolute/path"))?;
    let mut info = SideInfo {
        side: letter.into(),
        endpoint: endpoint.into(),
        runtime_name: String::new(),
        runtime_version: String::new(),
        failure: None,
        notes: Vec::new(),
        processes: Vec::new(),
        network: None,
    };
    let mut work = None;
    match crius::client::connect(&socket).await {
        Ok(mut client) => {
            let request = api::VersionRequest::default();
            match timed("Version", client.runtime.version(request)).await {
                Ok((v, _)) => {
                    info.runtime_name = v.runtime_name;
                    info.runtime_version = v.runtime_version;
                }
                Err(e) => info.failure = Some(e.to_string()),
            }
            work = Some(Workload::new(
                client,
                &args.image,
                run_id,
                &args.cgroup_parent,
            ));
        }
        Err(e) => info.failure = Some(format!("connect {}: {}", socket.display(), chain(&e))),
    }
    let proc_names = procs::ProcNames {
        known: known_processes(&info.runtime_name),
        extra: extra_procs,
    };
    Ok(Side {
        info,
        socket,
        proc_names,
        work,
        procs: None,
        cpu_seconds: 0.0,
    })
}

/// An error and its sources, `a: b: c` (tonic's transport error says little on its own).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let cause = s.to_string();
        if !text.ends_with(&cause) {
            text = format!("{text}: {cause}");
        }
        source = s.source();
    }
    text
}

/// Per-pod helper processes a runtime is known to run detached from its daemon.
fn known_processes(runtime_name: &str) -> Vec<String> {
    let names: &[&str] = match runtime_name {
        "containerd" => &[
            "containerd-shim-runc-v2",
            "containerd-shim-runc-v1",
            "containerd-shim",
        ],
        "cri-o" => &["conmon", "conmonrs"],
        n if n.starts_with("crius") => &["crius-monitor"],
        _ => &[],
    };
    names.iter().map(|s| s.to_string()).collect()
}

async fn cleanup(sides: &mut [Side]) {
    for side in sides.iter_mut() {
        let Some(work) = &side.work else { continue };
        let (removed, error) = work.cleanup().await;
        if removed > 0 {
            side.info
                .notes
                .push(format!("cleanup removed {removed} pods"));
        }
        if let Some(e) = error {
            let label = side.info.label().to_string();
            eprintln!("crius-bench: {label}: cleanup: {e}");
            side.info.notes.push(format!("cleanup: {e}"));
        }
    }
}

fn new_report(args: &Args, sides: &[Side]) -> Report {
    let scenario = args
        .scenario
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Report {
        scenario,
        date_unix: now,
        date: utc(now),
        iterations: match args.scenario {
            Scenario::Density => args.pods,
            _ => args.iterations,
        },
        concurrency: args.concurrency,
        image: args.image.clone(),
        machine: machine(),
        sides: sides.iter().map(|s| s.info.clone()).collect(),
        latencies: Vec::new(),
        figures: Vec::new(),
    }
}

/// CPU model, core count, memory and kernel, from /proc.
fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .unwrap_or("unknown cpu")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease");
    format!(
        "{cores} cores ({model}), {} MiB, Linux {}",
        mem_kib / 1024,
        kernel.trim()
    )
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time (civil-from-days over the proleptic Gregorian
/// calendar: 400-year eras of 146097 days, years starting on 1 March).
fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (hour, minute) = (secs % 86_400 / 3_600, secs % 3_600 / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// A run id unique enough to label this run's pods: pid and start time.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos % (1 << 40))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("crius-bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_need_only_a_scenario() {
        let a = parse(&["--scenario", "version"]).expect("parses");
        assert_eq!(a.scenario, Scenario::Version);
        assert_eq!(a.endpoint, "unix:///run/crius/crius.sock");
        assert_eq!(a.vs, None);
        assert_eq!((a.iterations, a.concurrency, a.pods), (20, 1, 100));
        assert_eq!(a.list_sizes, vec![100, 1000]);
        assert!(a.procs.is_empty());
    }

    #[test]
    fn every_scenario_name_parses_in_kebab_case() {
        for (name, want) in [
            ("pod-start", Scenario::PodStart),
            ("exec-sync", Scenario::ExecSync),
            ("list", Scenario::List),
            ("pull", Scenario::Pull),
            ("density", Scenario::Density),
            ("pod-network", Scenario::PodNetwork),
        ] {
            assert_eq!(parse(&["--scenario", name]).expect(name).scenario, want);
        }
    }

    #[test]
    fn full_command_line_parses() {
        let a = parse(&[
            "--endpoint",
            "unix:///run/crius/crius.sock",
            "--vs",
            "unix:///run/crius-bench/containerd.sock",
            "--scenario",
            "exec-sync",
            "--iterations",
            "500",
            "--concurrency",
            "4",
            "--image",
            "busybox:1",
            "--json",
            "/tmp/out.json",
            "--procs",
            "crius-monitor,extra",
            "--vs-procs",
            "containerd-shim-runc-v2",
            "--list-sizes",
            "10,20",
        ])
        .expect("parses");
        assert_eq!(
            a.vs.as_deref(),
            Some("unix:///run/crius-bench/containerd.sock")
        );
        assert_eq!((a.iterations, a.concurrency), (500, 4));
        assert_eq!(a.procs, vec!["crius-monitor", "extra"]);
        assert_eq!(a.vs_procs, vec!["containerd-shim-runc-v2"]);
        assert_eq!(a.list_sizes, vec![10, 20]);
        assert_eq!(a.json, Some(PathBuf::from("/tmp/out.json")));
    }

    #[test]
    fn scenario_is_required_and_unknown_ones_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--scenario", "fork-bomb"]).is_err());
    }

    #[test]
    fn zero_iterations_concurrency_or_sizes_are_refused() {
        assert!(parse(&["--scenario", "version", "--iterations", "0"]).is_err());
        assert!(parse(&["--scenario", "version", "--concurrency", "0"]).is_err());
        assert!(parse(&["--scenario", "list", "--list-sizes", "100,0"]).is_err());
        assert!(parse(&["--scenario", "version", "--iterations", "-3"]).is_err());
    }

    #[test]
    fn utc_dates_match_the_calendar() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_795_938_333), "2026-11-29 07:45 UTC");
    }

    #[test]
    fn error_chain_names_every_cause() {
        let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "no socket");
        let outer = std::io::Error::other(inner);
        assert_eq!(chain(&outer), "no socket");
        let e = anyhow::anyhow!("x");
        assert_eq!(chain(e.as_ref()), "x");
    }

    #[test]
    fn known_shims_follow_the_runtime_name() {
        assert!(known_processes("containerd").contains(&"containerd-shim-runc-v2".to_string()));
        assert_eq!(known_processes("crius"), vec!["crius-monitor"]);
        assert!(known_processes("something-else").is_empty());
    }
}
