//! The `kathon-bridge` binary as a user runs it: starts with no configuration, prints where its
//! status is, answers there, and stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn runs_reports_status_and_stops_on_sigterm() {
    // Loopback only: no discovery (this test runs outside a private namespace).
    let data = std::env::temp_dir().join(format!("kathon-cli-test-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kathon-bridge"))
        .arg("--data-dir")
        .arg(&data)
        .args(["run", "--listen", "127.0.0.1:0", "--no-discovery", "--name", "cli test"])
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
    let _ = std::fs::remove_dir_all(&data);
}

fn cli(data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    // Port 1 on loopback: nothing listens, so each command runs its own in-process bridge.
    let out = Command::new(env!("CARGO_BIN_EXE_kathon-bridge"))
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:1"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn offline_commands_create_import_export_and_list() {
    let data = std::env::temp_dir().join(format!("kathon-cli-offline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures");

    let (ok, _, err) = cli(&data, &["devices", "list"]);
    assert!(!ok && err.contains("no identity yet"), "a clear error before an identity exists: {err}");

    let (ok, out, err) = cli(&data, &["--json", "identity", "create"]);
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["state"], "enrolled");
    let (ok, _, err) = cli(&data, &["identity", "create"]);
    assert!(!ok && err.contains("already belongs"), "{err}");

    let html = fixtures.join("bookmarks_firefox.html");
    let (ok, out, err) = cli(&data, &["--json", "import", "--format", "bookmarks-html", html.to_str().unwrap()]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["bookmarksAdded"].as_u64().unwrap() > 0, "{report}");
    // Importing twice adds nothing.
    let (_, out, _) = cli(&data, &["--json", "import", "--format", "bookmarks-html", html.to_str().unwrap()]);
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["bookmarksAdded"], 0, "{again}");

    // A malformed file: a clear error, nothing changed.
    let bad = data.join("bad.csv");
    std::fs::write(&bad, "url,username,password\n\"unterminated,x,y\n").unwrap();
    let (ok, _, err) = cli(&data, &["import", "--format", "passwords-csv", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("line"), "the error names the line: {err}");

    let (ok, exported, err) = cli(&data, &["export", "--format", "bookmarks-html"]);
    assert!(ok, "{err}");
    assert!(exported.contains("<DT><A HREF="), "{exported}");

    let (ok, out, err) = cli(&data, &["--json", "devices", "list"]);
    assert!(ok, "{err}");
    let devices: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(devices.as_array().unwrap().len(), 1);
    assert_eq!(devices[0]["this_device"], true);

    let (ok, out, err) = cli(&data, &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("State:        enrolled") && out.contains("bookmarks"), "{out}");
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn a_config_file_sets_defaults_and_flags_win() {
    let dir = std::env::temp_dir().join(format!("kathon-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("name = \"from the file\"\ndiscovery = false\npeer = false\ndata_dir = {:?}\n", dir.join("data")),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kathon-bridge"))
        .arg("--config")
        .arg(&config)
        .args(["run", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let url = loop {
        let line = lines.next().expect("the bridge exited early").unwrap();
        printed.push(line.clone());
        if let Some(url) = line.trim().strip_prefix("status:") {
            break url.trim().to_owned();
        }
    };
    let status: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(status["machine_name"], "from the file");
    assert!(status["discovery"].is_null() && status["peer"].is_null(), "{status}");
    assert!(printed.iter().any(|l| l.contains("native peer:  off")), "{printed:?}");
    let _ = child.kill();
    let _ = child.wait();

    // An unknown key is a clear error, not silently ignored.
    std::fs::write(&config, "nmae = \"typo\"\n").unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_kathon-bridge")).arg("--config").arg(&config).args(["run"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nmae"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
