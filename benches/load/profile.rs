//! `--profile`: `perf record` (software clock) attached to the daemon during
//! the sends phase and during the reports phase, and a flat report of where
//! it spent its time in each. `--profile-graph` records call graphs too
//! (DWARF unwinding: heavier, for `perf report --children` on
//! `target/load/perf-<phase>.data`).

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
    /// Attaches to `pid`; samples of `phase` (with call graphs if `graph`)
    /// go to `out/perf-<phase>.data`.
    pub fn start(pid: u32, out: &Path, graph: bool, phase: &str) -> Res<Perf> {
        let data = out.join(format!("perf-{phase}.data"));
        let mut perf = Command::new("perf");
        perf.args(["record", "-e", "cpu-clock"]);
        match graph {
            true => perf.args(["-F", "1999", "--call-graph", "dwarf,16384"]),
            false => perf.args(["-F", "499"]),
        };
        let child = perf
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Perf {
            child,
            data,
            text: out.join(format!("perf-{phase}.txt")),
        })
    }

    /// Stops recording (SIGINT, so perf writes its file) and answers the
    /// CPU share by thread, by binary, and the top symbols; the whole
    /// symbol report is kept in perf-<phase>.txt.
    pub fn finish(mut self) -> Res<String> {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        let symbols = self.report("overhead,comm,dso,sym")?;
        std::fs::write(&self.text, &symbols)?;
        Ok(format!(
            "by thread:\n{}\n\nby binary:\n{}\n\ntop symbols:\n{}",
            top(&self.report("overhead,comm")?, 12),
            top(&self.report("overhead,dso")?, 6),
            top(&symbols, TOP)
        ))
    }

    /// `perf report` with the fields given.
    fn report(&self, fields: &str) -> Res<String> {
        let out = Command::new("perf")
            .args(["report", "--stdio", "-F", fields, "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The first `n` rows of a `perf report`, headers dropped.
fn top(report: &str, n: usize) -> String {
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::trim_end)
        .take(n)
        .collect();
    rows.join("\n")
}
