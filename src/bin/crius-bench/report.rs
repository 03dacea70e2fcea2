//! The result of a run: latency rows, scalar figures, notes; printed as a table or JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::stats::{ratio, Summary};

/// One runtime under test.
#[derive(Debug, Clone, Serialize)]
pub struct SideInfo {
    /// `A` or `B`.
    pub side: String,
    pub endpoint: String,
    pub runtime_name: String,
    pub runtime_version: String,
    /// Why this side stopped early, if it did ("RunPodSandbox unimplemented").
    pub failure: Option<String>,
    pub notes: Vec<String>,
    /// Command names of the processes counted as this runtime.
    pub processes: Vec<String>,
    /// The pod network the side's pods got, when the runtime says (`cni:<name>`,
    /// `builtin:<bridge>`); two crius daemons differing only in it are told apart by it.
    pub network: Option<String>,
}

impl SideInfo {
    /// "crius" or "containerd", with the kind of pod network when known ("crius/cni");
    /// "A" when the runtime did not say.
    pub fn label(&self) -> String {
        let name = if self.runtime_name.is_empty() {
            &self.side
        } else {
            &self.runtime_name
        };
        match self.network.as_deref().and_then(|n| n.split(':').next()) {
            Some(kind) if !kind.is_empty() => format!("{name}/{kind}"),
            _ => name.clone(),
        }
    }
}

/// A latency distribution per side.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    pub metric: String,
    pub sides: Vec<Option<Summary>>,
    /// A's p50 over B's p50.
    pub ratio_p50: Option<f64>,
    /// Why a side has no samples in this row only (the side went on with other rows).
    pub errors: Vec<Option<String>>,
}

/// A single number per side (CPU seconds per 1000 execs, MiB per pod, MB/s).
#[derive(Debug, Clone, Serialize)]
pub struct FigureRow {
    pub metric: String,
    pub unit: String,
    pub sides: Vec<Option<f64>>,
    /// A over B.
    pub ratio: Option<f64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub date_unix: u64,
    pub date: String,
    pub iterations: usize,
    pub concurrency: usize,
    pub image: String,
    pub machine: String,
    pub sides: Vec<SideInfo>,
    pub latencies: Vec<LatencyRow>,
    pub figures: Vec<FigureRow>,
}

impl Report {
    /// Adds a latency row from per-side samples.
    pub fn latency(&mut self, metric: impl Into<String>, samples: &[Vec<Duration>]) {
        self.latency_with_errors(metric, samples, Vec::new());
    }

    /// Adds a latency row with per-side errors that concern this row only.
    pub fn latency_with_errors(
        &mut self,
        metric: impl Into<String>,
        samples: &[Vec<Duration>],
        errors: Vec<Option<String>>,
    ) {
        let sides: Vec<Option<Summary>> = samples.iter().map(|s| Summary::of(s)).collect();
        let p50 = |i: usize| sides.get(i).copied().flatten().map(|s| s.p50_ms);
        let ratio_p50 = ratio(p50(0), p50(1));
        self.latencies.push(LatencyRow {
            metric: metric.into(),
            sides,
            ratio_p50,
            errors,
        });
    }

    /// Adds a figure row.
    pub fn figure(&mut self, metric: impl Into<String>, unit: &str, sides: Vec<Option<f64>>) {
        // A ratio of counts (pods started, processes) says nothing about speed or cost.
        let ratio = ratio(
            sides.first().copied().flatten(),
            sides.get(1).copied().flatten(),
        )
        .filter(|_| unit != "count");
        self.figures.push(FigureRow {
            metric: metric.into(),
            unit: unit.into(),
            sides,
            ratio,
        });
    }

    /// Adds a figure row whose sides measured different things (say, different pod
    /// counts), so no ratio is given.
    pub fn figure_unpaired(
        &mut self,
        metric: impl Into<String>,
        unit: &str,
        sides: Vec<Option<f64>>,
    ) {
        self.figure(metric, unit, sides);
        if let Some(row) = self.figures.last_mut() {
            row.ratio = None;
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {}: iterations {}, concurrency {}, image {}\n{}, {}",
            self.scenario, self.iterations, self.concurrency, self.image, self.date, self.machine
        );
        for s in &self.sides {
            let _ = writeln!(
                out,
                "{} = {} {} ({})",
                s.side,
                if s.runtime_name.is_empty() {
                    "?"
                } else {
                    &s.runtime_name
                },
                s.runtime_version,
                s.endpoint
            );
            if !s.processes.is_empty() {
                let _ = writeln!(out, "    processes counted: {}", s.processes.join(", "));
            }
            if let Some(n) = &s.network {
                let _ = writeln!(out, "    pod network: {n}");
            }
            for n in &s.notes {
                let _ = writeln!(out, "    note: {n}");
            }
            if let Some(f) = &s.failure {
                let _ = writeln!(out, "    {}: {f}", s.label());
            }
        }
        self.render_latencies(&mut out);
        self.render_figures(&mut out);
        out
    }

    fn render_latencies(&self, out: &mut String) {
        if self.latencies.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n{:<28} {:<12} {:>6} {:>9} {:>9} {:>9} {:>9}  {:>8}",
            "latency (ms)", "side", "n", "p50", "p90", "p99", "max", "A/B p50"
        );
        for row in &self.latencies {
            for (i, side) in self.sides.iter().enumerate() {
                let metric = if i == 0 { row.metric.as_str() } else { "" };
                let ratio = match (i, row.ratio_p50) {
                    (0, Some(r)) => format!("{r:.2}x"),
                    _ => String::new(),
                };
                match row.sides.get(i).copied().flatten() {
                    Some(s) => {
                        let _ = writeln!(
                            out,
                            "{metric:<28} {:<12} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {ratio:>8}",
                            side.label(),
                            s.n,
                            s.p50_ms,
                            s.p90_ms,
                            s.p99_ms,
                            s.max_ms
                        );
                    }
                    None => {
                        let why = row.errors.get(i).and_then(Option::as_deref);
                        let why = why.or(side.failure.as_deref()).unwrap_or("no samples");
                        let _ = writeln!(out, "{metric:<28} {:<12} {why}", side.label());
                    }
                }
            }
        }
    }

    fn render_figures(&self, out: &mut String) {
        if self.figures.is_empty() {
            return;
        }
        let _ = writeln!(out);
        for row in &self.figures {
            let values: Vec<String> = self
                .sides
                .iter()
                .enumerate()
                .map(|(i, side)| match row.sides.get(i).copied().flatten() {
                    Some(v) => format!("{} {v:.3}", side.label()),
                    None => format!("{} -", side.label()),
                })
                .collect();
            let ratio = row
                .ratio
                .map(|r| format!("  A/B {r:.2}x"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<44} {}{ratio}",
                format!("{} ({})", row.metric, row.unit),
                values.join("   ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(name: &str, failure: Option<&str>) -> SideInfo {
        SideInfo {
            side: "A".into(),
            endpoint: "unix:///x.sock".into(),
            runtime_name: name.into(),
            runtime_version: "1".into(),
            failure: failure.map(str::to_string),
            notes: vec![],
            processes: vec![],
            network: None,
        }
    }

    fn report() -> Report {
        Report {
            scenario: "pod-start".into(),
            date_unix: 0,
            date: "1970-01-01 00:00 UTC".into(),
            iterations: 2,
            concurrency: 1,
            image: "busybox".into(),
            machine: "test".into(),
            sides: vec![
                side("crius", Some("RunPodSandbox unimplemented")),
                side("containerd", None),
            ],
            latencies: vec![],
            figures: vec![],
        }
    }

    #[test]
    fn latency_row_has_a_ratio_only_when_both_sides_have_samples() {
        let mut r = report();
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        r.latency("both", &[ms(&[2, 2]), ms(&[4, 4])]);
        r.latency("one", &[vec![], ms(&[4])]);
        assert_eq!(r.latencies[0].ratio_p50, Some(0.5));
        assert_eq!(r.latencies[1].ratio_p50, None);
    }

    #[test]
    fn a_failed_side_is_reported_by_name_and_rpc() {
        let mut r = report();
        r.latency("pod-start", &[vec![], vec![Duration::from_millis(100)]]);
        let text = r.render();
        assert!(
            text.contains("crius: RunPodSandbox unimplemented"),
            "{text}"
        );
        assert!(text.contains("containerd"), "{text}");
    }

    #[test]
    fn a_row_error_is_shown_on_that_row_only() {
        let mut r = report();
        r.sides[0].failure = None;
        let one = vec![Duration::from_millis(1)];
        let err = Some("ListContainerStats unimplemented".to_string());
        r.latency_with_errors(
            "ListContainerStats @100",
            &[vec![], one.clone()],
            vec![err, None],
        );
        r.latency("ListContainers @100", &[one.clone(), one]);
        let text = r.render();
        assert_eq!(
            text.matches("ListContainerStats unimplemented").count(),
            1,
            "{text}"
        );
        assert_eq!(r.latencies[1].ratio_p50, Some(1.0));
    }

    #[test]
    fn json_carries_the_same_figures() {
        let mut r = report();
        r.figure("cpu per 1000 execs", "s", vec![Some(1.0), Some(4.0)]);
        let json = serde_json::to_value(&r).expect("serialises");
        assert_eq!(json["figures"][0]["ratio"], 0.25);
        assert_eq!(json["sides"][0]["failure"], "RunPodSandbox unimplemented");
    }
}
