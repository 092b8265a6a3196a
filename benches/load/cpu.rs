//! CPU time of a process, from `/proc/<pid>/stat`, and of the machine, from
//! `/proc/stat`: what each phase cost the daemon and the harness (fakes and
//! clients), per push or report. Unlike rates, these barely move with other
//! work on the machine, so they show which side a change made cheaper.

use std::collections::BTreeMap;

use crate::daemon::Res;

/// Linux reports `utime`/`stime` in USER_HZ ticks, 100 per second on every
/// mainstream kernel configuration.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds of `pid` (`None`: this process) so far.
pub fn seconds(pid: Option<u32>) -> Res<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    stat_seconds(&std::fs::read_to_string(path)?)
}

/// User + system CPU seconds of a `stat` line.
fn stat_seconds(stat: &str) -> Res<f64> {
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let rest = stat.rsplit_once(')').ok_or("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Res<f64> { Ok(fields.get(i).ok_or("short stat")?.parse::<f64>()?) };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after ')'.
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

/// CPU seconds so far of each thread of `pid`, summed by thread name (the
/// HTTP workers share one), from `/proc/<pid>/task/*/stat`.
pub fn threads(pid: u32) -> Res<BTreeMap<String, f64>> {
    let mut by_name = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended since the listing has no stat any more.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map_or("?", |(n, _)| n);
        *by_name.entry(name.to_owned()).or_default() += stat_seconds(&stat)?;
    }
    Ok(by_name)
}

/// CPU seconds of every process on the machine so far, from `/proc/stat`.
pub struct Machine {
    /// Not idle: user, nice, system, irq, softirq, steal.
    pub busy: f64,
    /// Of that, in niced processes.
    pub niced: f64,
}

/// The machine's CPU seconds so far.
pub fn machine() -> Res<Machine> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let tick = |i: usize| -> Res<f64> { Ok(*ticks.get(i).ok_or("short /proc/stat")?) };
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|i| tick(*i))
        .sum::<Res<f64>>()?;
    Ok(Machine {
        busy: busy / TICKS_PER_SECOND,
        niced: tick(1)? / TICKS_PER_SECOND,
    })
}

/// CPU seconds spent by the daemon `pid` and by the harness while `work` ran.
pub async fn measure<T>(pid: Option<u32>, work: impl Future<Output = Res<T>>) -> Res<(T, Spent)> {
    let (daemon, harness) = (pid.map(|p| seconds(Some(p))).transpose()?, seconds(None)?);
    let value = work.await?;
    let spent = Spent {
        daemon: match (pid, daemon) {
            (Some(p), Some(before)) => seconds(Some(p))? - before,
            _ => 0.0,
        },
        harness: seconds(None)? - harness,
    };
    Ok((value, spent))
}

/// CPU seconds spent during one phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spent {
    /// By the daemon.
    pub daemon: f64,
    /// By the harness process: fake providers, clients, collectors.
    pub harness: f64,
}

impl Spent {
    /// Microseconds per operation, for the daemon and the harness.
    pub fn per(self, ops: usize) -> (f64, f64) {
        let n = ops.max(1) as f64;
        (self.daemon * 1e6 / n, self.harness * 1e6 / n)
    }
}
