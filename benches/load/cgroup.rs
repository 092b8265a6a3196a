//! `--node-cpus C`: each node of a `--cluster` run in a cgroup of its own
//! whose cpu controller caps it at C cores, so one node and N nodes get the
//! same CPU each, whatever else the machine runs (the nats-servers, the
//! fakes, the harness, other work). Supports cgroup v1 (a hierarchy with the
//! `cpu` controller: `cpu.cfs_quota_us` / `cpu.cfs_period_us`) and v2 (the
//! unified hierarchy with `cpu` in `cgroup.controllers`: `cpu.max`); needs
//! root.
//!
//! Written by hand rather than with `cgroups-rs` (kata-containers, the
//! maintained crate): all this needs is a directory, a quota, a pid and a
//! clean-up per node, on two layouts, while `cgroups-rs` 0.5 brings in zbus
//! (a D-Bus stack, for its systemd manager), nix and ~12,000 lines, and its
//! groups are not removed on drop, which the guard here is for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::daemon::Res;

/// Scheduling period of the quota, µs (the kernel's default).
const PERIOD_US: u64 = 100_000;

/// A node group's weight over the machine's other work, as a multiple of
/// the default: a node that has work gets its quota before the
/// nats-servers, fakes and harness get the rest of a full machine. Without
/// it, three nodes on 2 cores got 0.30-0.34 of their 0.4 while one node got
/// all of it, and the ratio measured the machine, not the nodes.
const WEIGHT: u64 = 10;

/// Which cgroup layout holds the cpu controller.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

/// One capped group per node; the groups are removed when this is dropped
/// (their processes, if any are left, go back to the parent first).
pub struct NodeGroups {
    version: Version,
    parent: PathBuf,
    dirs: Vec<PathBuf>,
}

impl NodeGroups {
    /// Creates `pushd-bench-<pid>-node<i>` for `i` in `0..nodes`, each
    /// capped at `cpus` cores.
    pub fn create(nodes: usize, cpus: f64) -> Res<NodeGroups> {
        let (version, parent) = hierarchy().ok_or(
            "--node-cpus needs the cgroup cpu controller (cgroup v1 with `cpu` mounted, \
             or cgroup v2 with `cpu` in cgroup.controllers); none is mounted here",
        )?;
        let quota = (cpus * PERIOD_US as f64).round() as u64;
        if quota < 1000 {
            return Err(format!("--node-cpus {cpus}: at least 0.01 of a core").into());
        }
        let mut groups = NodeGroups {
            version,
            parent,
            dirs: Vec::new(),
        };
        if let Version::V2 = version {
            write(&groups.parent.join("cgroup.subtree_control"), "+cpu")?;
        }
        for i in 0..nodes {
            let dir = groups
                .parent
                .join(format!("pushd-bench-{}-node{i}", std::process::id()));
            std::fs::create_dir(&dir).map_err(|e| {
                format!(
                    "--node-cpus: cannot create {} ({e}); a CPU quota needs root",
                    dir.display()
                )
            })?;
            groups.dirs.push(dir.clone());
            match version {
                Version::V1 => {
                    write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    write(&dir.join("cpu.shares"), &(1024 * WEIGHT).to_string())?;
                }
                Version::V2 => {
                    write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
                    write(&dir.join("cpu.weight"), &(100 * WEIGHT).to_string())?;
                }
            }
        }
        Ok(groups)
    }

    /// The layout in use.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Node `node`'s `cgroup.procs`: a process that writes its pid there
    /// joins the group.
    pub fn procs(&self, node: usize) -> PathBuf {
        self.dirs[node].join("cgroup.procs")
    }

    /// Node `node`'s scheduling periods so far in which it had work, and
    /// those in which it used up its quota (`cpu.stat`, both layouts).
    pub fn throttling(&self, node: usize) -> Res<(u64, u64)> {
        let stat = std::fs::read_to_string(self.dirs[node].join("cpu.stat"))?;
        let field = |name: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
                .ok_or(format!("no {name} in cpu.stat"))
        };
        Ok((field("nr_periods ")?, field("nr_throttled ")?))
    }
}

impl Drop for NodeGroups {
    fn drop(&mut self) {
        let back = self.parent.join("cgroup.procs");
        for dir in &self.dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(&back, pid);
            }
            if !remove(dir) {
                eprintln!("[cgroup] could not remove {}", dir.display());
            }
        }
    }
}

/// The cgroup hierarchy holding the cpu controller: v2 if the unified
/// hierarchy has it, else the v1 hierarchy it is mounted as.
fn hierarchy() -> Option<(Version, PathBuf)> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let mounts: Vec<Vec<&str>> = mounts.lines().map(|l| l.split(' ').collect()).collect();
    let unified = mounts.iter().find_map(|m| match m.as_slice() {
        [_, dir, "cgroup2", ..] => {
            let controllers = std::fs::read_to_string(Path::new(dir).join("cgroup.controllers"));
            controllers
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
                .then(|| (Version::V2, PathBuf::from(dir)))
        }
        _ => None,
    });
    unified.or_else(|| {
        mounts.iter().find_map(|m| match m.as_slice() {
            [_, dir, "cgroup", options, ..] if options.split(',').any(|o| o == "cpu") => {
                Some((Version::V1, PathBuf::from(dir)))
            }
            _ => None,
        })
    })
}

/// Removes the empty group `dir`, retrying for up to half a second: a
/// process killed just now may take a moment to leave it.
fn remove(dir: &Path) -> bool {
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Writes `value` to the control file `path`, naming it on failure.
fn write(path: &Path, value: &str) -> Res<()> {
    std::fs::write(path, value)
        .map_err(|e| format!("--node-cpus: writing {value:?} to {}: {e}", path.display()).into())
}
