//! The API against its own OpenAPI description: the schema-driven fuzzer
//! schemathesis generates requests from `docs/openapi.yaml` (as served at
//! `/openapi.json`), valid and invalid, sends them to the real daemon with
//! fake providers behind it, and checks every answer: no 5xx, each status
//! and body as described, invalid input refused, wrong methods 405 with
//! `Allow`, missing keys 401 (`--checks all`). Its settings, and why a few
//! checks allow a 400, are in `tests/schemathesis.toml`; the hook that
//! keeps a generated `%` in a path id literal is `tests/schemathesis_hooks.py`.
//!
//! `.ci/run` installs schemathesis (`pip install schemathesis`); elsewhere
//! the test is skipped, saying so, when it is missing. Each run prints its
//! seed; `PUSHD_TEST_SEED=<seed>` replays one.

mod support;

use pushd::sim::FaultMix;
use serde_json::Value;
use support::{API_KEY, Daemon, fakes};

/// Test cases per operation and phase: enough to find a broken rule, few
/// enough that the run takes seconds.
const EXAMPLES: &str = "25";

fn schemathesis_installed() -> bool {
    std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_description_matches_the_api_under_a_schema_driven_fuzzer() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = Daemon::start(&dir.path().join("data"), &fakes.env());

    let (status, spec) = {
        let resp = reqwest::get(d.url("/openapi.json")).await.unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "served without a key");
    assert_eq!(spec["info"]["title"], "pushd HTTP API");

    if !schemathesis_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis is missing on CI: .ci/run installs it"
        );
        eprintln!(
            "openapi fuzz test skipped: schemathesis is not installed (pip install schemathesis)"
        );
        return;
    }
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let work = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("schemathesis")
        .current_dir(work.path())
        .args(["--config-file", config, "--no-color", "run"])
        .arg(d.url("/openapi.json"))
        .args(["--checks", "all"])
        .args(["--header", &format!("Authorization: Bearer {API_KEY}")])
        .args(["--max-examples", EXAMPLES])
        .args(["--seed", &support::seed("schemathesis").to_string()])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "30"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env(
            "SCHEMATHESIS_HOOKS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis_hooks.py"),
        )
        .output()
        .await
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(" passed"),
        "schemathesis ran no test case:\n{report}"
    );
}
