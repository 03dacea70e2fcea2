//! Crash safety: a child process writes multi-record transactions in a loop and is
//! killed with SIGKILL at a random point; the store must reopen holding exactly the
//! committed transactions, with its indexes in agreement.
//!
//! The child is this test binary re-executed on the ignored `crash_writer_child` test,
//! with `CRASH_WRITER_ENV` naming the store.

// An integration test crate: clippy's allow-unwrap-in-tests covers only `#[test]`
// functions, not the helpers they share here.
#![allow(clippy::unwrap_used)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crius_store::{
    ContainerMetadata, ContainerRecord, ContainerState, ImageRecord, LeaseRecord, PodMetadata,
    PodRecord, PodState, Store, WriteTxn,
};

const CRASH_WRITER_ENV: &str = "CRIUS_STORE_CRASH_WRITER";
const READY: &str = "crash-writer-ready";
const IMAGE: &str = "sha256:img";

fn pod_id(j: u64) -> String {
    format!("pod-{j}")
}

fn container_ids(j: u64) -> Vec<String> {
    (0..3).map(|k| format!("ctr-{j}-{k}")).collect()
}

/// One transaction of the writer: pod `i` is born, `i-1` starts, `i-2` exits, `i-3` is
/// removed, the lease and the image tag move to `i`, and `seq` becomes `i`.
fn step(t: &WriteTxn, i: u64) -> crius_store::Result<()> {
    t.pods().insert(&PodRecord {
        id: pod_id(i),
        metadata: PodMetadata {
            name: format!("web-{i}"),
            namespace: "default".into(),
            uid: format!("uid-{i}"),
            attempt: 0,
        },
        state: PodState::Ready,
        ..Default::default()
    })?;
    for (k, id) in container_ids(i).into_iter().enumerate() {
        t.containers().insert(&ContainerRecord {
            id,
            pod_id: pod_id(i),
            metadata: ContainerMetadata {
                name: format!("app-{k}"),
                attempt: 0,
            },
            state: ContainerState::Created,
            ..Default::default()
        })?;
    }
    for mut c in t.containers_of_pod(&pod_id(i.saturating_sub(1)))? {
        c.state = ContainerState::Running;
        t.containers().update(&c)?;
    }
    for mut c in t.containers_of_pod(&pod_id(i.saturating_sub(2)))? {
        c.state = ContainerState::Exited;
        c.exit_code = i32::try_from(i - 2).unwrap_or(-1);
        t.containers().update(&c)?;
        let mut p = t.pods().require(&c.pod_id)?;
        p.state = PodState::NotReady;
        t.pods().update(&p)?;
    }
    let old = pod_id(i.saturating_sub(3));
    for c in t.containers_of_pod(&old)? {
        t.containers().remove(&c.id)?;
    }
    t.pods().remove(&old)?;
    t.leases().remove(&format!("lease-{}", i - 1))?;
    t.leases().insert(&LeaseRecord {
        id: format!("lease-{i}"),
        resources: vec![IMAGE.into()],
        ..Default::default()
    })?;
    let image = ImageRecord {
        id: IMAGE.into(),
        repo_tags: vec![format!("app:v{i}")],
        ..Default::default()
    };
    if i == 1 {
        t.images().insert(&image)?;
    } else {
        t.images().update(&image)?;
    }
    t.set_setting("seq", &i)
}

/// The whole store must be exactly what `n` committed steps produce.
fn check_state(store: &Store) -> u64 {
    let problems = store.check_consistency().unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let r = store.read().unwrap();
    let n: u64 = r.setting("seq").unwrap().unwrap_or(0);
    let live: Vec<u64> = (n.saturating_sub(2).max(1)..=n).collect();
    let pods: Vec<String> = r.pods().list().unwrap().into_iter().map(|p| p.id).collect();
    let mut expected: Vec<String> = live.iter().map(|&j| pod_id(j)).collect();
    expected.sort();
    assert_eq!(pods, expected, "pods after {n} steps");
    assert_eq!(r.containers().list().unwrap().len(), 3 * live.len());
    for &j in &live {
        let (pod_state, state) = match n - j {
            0 => (PodState::Ready, ContainerState::Created),
            1 => (PodState::Ready, ContainerState::Running),
            _ => (PodState::NotReady, ContainerState::Exited),
        };
        assert_eq!(r.pods().require(&pod_id(j)).unwrap().state, pod_state);
        let ctrs = r.containers_of_pod(&pod_id(j)).unwrap();
        let ids: Vec<String> = ctrs.iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids, container_ids(j));
        assert!(
            ctrs.iter().all(|c| c.state == state),
            "pod {j} after {n}: {ctrs:?}"
        );
    }
    let leases: Vec<String> = r
        .leases()
        .list()
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    let tag = format!("app:v{n}");
    if n == 0 {
        assert!(leases.is_empty() && r.images().list().unwrap().is_empty());
    } else {
        assert_eq!(leases, [format!("lease-{n}")]);
        assert_eq!(r.image_by_tag(&tag).unwrap().unwrap().repo_tags, [tag]);
        assert_eq!(r.image_by_tag(&format!("app:v{}", n - 1)).unwrap(), None);
    }
    n
}

#[test]
#[ignore = "child process of store_survives_sigkill_mid_write; does nothing when run directly"]
fn crash_writer_child() {
    let Some(path) = std::env::var_os(CRASH_WRITER_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&path)).unwrap();
    let mut i = check_state(&store);
    println!("{READY}");
    loop {
        i += 1;
        store.update(|t| step(t, i)).unwrap();
    }
}

fn random_delay(round: u32) -> Duration {
    let bits = RandomState::new().hash_one((round, Instant::now()));
    Duration::from_millis(10 + bits % 240)
}

#[test]
fn store_survives_sigkill_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let exe = std::env::current_exe().unwrap();
    for round in 0..10 {
        let mut child = Command::new(&exe)
            .args(["crash_writer_child", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CRASH_WRITER_ENV, &path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains(READY));
        assert!(ready, "round {round}: the writer died before it was ready");
        std::thread::sleep(random_delay(round));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "round {round}: writer {status}");
        let store = Store::open(&path).unwrap();
        let n = check_state(&store);
        eprintln!("round {round}: {n} transactions committed so far");
    }
    let store = Store::open(&path).unwrap();
    assert!(
        check_state(&store) >= 10,
        "the writer made too little progress"
    );
}
