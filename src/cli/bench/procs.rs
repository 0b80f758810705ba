//! Node processes for benchmarks: one `federact node` OS process per node
//! (the same binary, `std::env::current_exe()`), and CPU time and memory
//! read from `/proc` per process so reports can give CPU % and peak RSS
//! per node role.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::up::Procs;

/// The node processes of a benchmark (started and stopped by `up`'s
/// [`Procs`]: logs in `DIR/logs/`, nodes die with the bench), each with
/// the role its CPU and memory are reported under.
pub struct NodeProcs {
    procs: Procs,
    /// (node name, role).
    roles: Vec<(String, String)>,
}

/// CPU time of processes at one instant.
#[derive(Debug, Clone)]
pub struct CpuMark {
    at: Instant,
    /// (role, pid) → CPU ticks (user + system).
    ticks: Vec<(String, u32, u64)>,
}

/// Per-role resource use.
#[derive(Debug, Clone, Default)]
pub struct RoleUse {
    /// Processes of this role.
    pub processes: usize,
    /// Average CPU per process, in % of one core.
    pub cpu_pct_avg: f64,
    /// Sum over the role's processes, in % of one core.
    pub cpu_pct_sum: f64,
    /// Largest peak RSS (VmHWM) of a process of the role, MiB.
    pub peak_rss_mib: f64,
    /// CPU seconds used by the role's processes together.
    pub cpu_s: f64,
}

impl NodeProcs {
    /// Starts `federact node --config DIR/nodes/NAME.toml` for each
    /// `(name, role)`.
    pub fn spawn(dir: &Path, nodes: &[(String, String)]) -> anyhow::Result<NodeProcs> {
        let mut procs = Procs::new(dir, "warn", Vec::new())?;
        for (name, _) in nodes {
            procs.spawn(name)?;
        }
        Ok(NodeProcs {
            procs,
            roles: nodes.to_vec(),
        })
    }

    /// Fails if a node process has exited (with its name and status).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.procs.check_alive()
    }

    /// CPU ticks of every node process and of this process (role `driver`).
    pub fn cpu_mark(&self) -> CpuMark {
        let mut ticks: Vec<(String, u32, u64)> = self
            .roles
            .iter()
            .filter_map(|(name, role)| {
                let pid = self.procs.pid(name)?;
                cpu_ticks(pid).map(|t| (role.clone(), pid, t))
            })
            .collect();
        let me = std::process::id();
        if let Some(t) = cpu_ticks(me) {
            ticks.push(("driver".into(), me, t));
        }
        CpuMark {
            at: Instant::now(),
            ticks,
        }
    }

    /// Per-role CPU % between `from` and now, and peak RSS so far.
    pub fn usage_since(&self, from: &CpuMark) -> BTreeMap<String, RoleUse> {
        let now = self.cpu_mark();
        let wall = now.at.duration_since(from.at).as_secs_f64().max(1e-6);
        let hz = clock_ticks_per_s();
        let mut roles: BTreeMap<String, RoleUse> = BTreeMap::new();
        for (role, pid, t1) in &now.ticks {
            let Some((_, _, t0)) = from.ticks.iter().find(|(_, p, _)| p == pid) else {
                continue;
            };
            let cpu_s = t1.saturating_sub(*t0) as f64 / hz;
            let pct = cpu_s / wall * 100.0;
            let r = roles.entry(role.clone()).or_default();
            r.processes += 1;
            r.cpu_s += cpu_s;
            r.cpu_pct_sum += pct;
            r.peak_rss_mib = r
                .peak_rss_mib
                .max(peak_rss_kib(*pid).unwrap_or(0) as f64 / 1024.0);
        }
        for r in roles.values_mut() {
            r.cpu_pct_avg = r.cpu_pct_sum / r.processes.max(1) as f64;
        }
        roles
    }

    /// SIGTERM to every node (they flush their stores), then waits up to
    /// `grace` for each before killing it.
    pub fn terminate(&mut self, grace: Duration) {
        self.procs.stop_within(grace);
    }
}

/// User + system CPU ticks of `pid` (fields 14 and 15 of /proc/PID/stat,
/// counted after the parenthesised command name, which may hold spaces).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size (VmHWM) of `pid`, KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU seconds this process has used.
pub fn own_cpu_s() -> f64 {
    cpu_ticks(std::process::id()).map_or(0.0, |t| t as f64 / clock_ticks_per_s())
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_ticks_grow_and_peak_rss_is_read() {
        let me = std::process::id();
        let t0 = cpu_ticks(me).expect("stat");
        let start = Instant::now();
        let mut x = 0u64;
        // Spin until the kernel has charged at least one tick (bounded).
        while cpu_ticks(me).expect("stat") == t0 && start.elapsed() < Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        assert!(cpu_ticks(me).expect("stat") > t0);
        assert!(peak_rss_kib(me).expect("status") > 0);
    }
}
