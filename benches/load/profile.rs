//! `--profile`: `perf record` (software clock, no call graphs) attached to
//! the daemon, and a flat report of where it spent its time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::daemon::Res;

/// Lines of the flat report kept for report.md.
const TOP: usize = 30;

/// A running `perf record -p <pid>`.
pub struct Perf {
    child: Child,
    data: PathBuf,
    text: PathBuf,
}

impl Perf {
    /// Attaches to `pid`; samples go to `out/perf.data`.
    pub fn start(pid: u32, out: &Path) -> Res<Perf> {
        let data = out.join("perf.data");
        let child = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "499", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Perf {
            child,
            data,
            text: out.join("perf.txt"),
        })
    }

    /// Stops recording (SIGINT, so perf writes its file) and answers the
    /// top of `perf report`, by thread and symbol; also kept in perf.txt.
    pub fn finish(mut self) -> Res<String> {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        let report = Command::new("perf")
            .args(["report", "--stdio", "--sort", "comm,dso,symbol", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&report.stdout).into_owned();
        std::fs::write(&self.text, &text)?;
        let top: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(TOP)
            .collect();
        Ok(top.join("\n"))
    }
}
