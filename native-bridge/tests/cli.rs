//! The `kathon-bridge` binary as a user runs it: starts with no configuration, prints where its
//! status is, answers there, and stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn runs_reports_status_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kathon-bridge"))
        .args(["run", "--listen", "127.0.0.1:0", "--name", "cli test"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("the bridge exited before printing its status URL").unwrap();
        if let Some(url) = line.trim().strip_prefix("status:") {
            break url.trim().to_owned();
        }
    };
    let status: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(status["machine_name"], "cli test");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "the bridge did not exit cleanly: {exit}");
    assert!(lines.any(|l| l.unwrap().contains("stopped")));
}
