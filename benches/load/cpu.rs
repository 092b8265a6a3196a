//! CPU time of a process, from `/proc/<pid>/stat`: what each phase cost the
//! daemon and the harness (fakes and clients), per push or report. Unlike
//! rates, these barely move with other work on the machine, so they show
//! which side a change made cheaper.

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
    let stat = std::fs::read_to_string(path)?;
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let rest = stat.rsplit_once(')').ok_or("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Res<f64> { Ok(fields.get(i).ok_or("short stat")?.parse::<f64>()?) };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after ')'.
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
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
