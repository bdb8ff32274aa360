//! Installs what the tests and the demo need, skipping whatever is already present.
//!
//! The traps this avoids are written down in the README's "Set-up" section: the wasm-bindgen CLI
//! must be exactly the version in `Cargo.lock` (and `cargo install --locked` fails for it here);
//! Chromium and ChromeDriver come from Debian together so their versions match; nothing ever
//! downloads a browser of its own.

use std::path::Path;

use crate::util::{Cmd, Runner, TaskError, have};

pub(crate) fn all(runner: &mut Runner) -> Result<(), TaskError> {
    runner.step("set-up: rust target wasm32-unknown-unknown", wasm_target)?;
    runner.step("set-up: Debian chromium + chromium-driver", chromium)?;
    runner.step("set-up: wasm-bindgen-cli pinned to Cargo.lock", wasm_bindgen_cli)?;
    runner.step("set-up: node and npm", node)?;
    runner.step("set-up: npm packages of the browser tests (playwright-core, vite, webpack)", npm_packages)?;
    runner.step("set-up: npm packages of the demo page (qrcode-generator)", demo_packages)?;
    runner.step("set-up: npm packages of the browser benches (yjs, y-indexeddb, automerge)", bench_packages)?;
    Ok(())
}

pub(crate) fn bench_packages() -> Result<(), TaskError> {
    let dir = crate::root().join("benches/browser");
    let present = ["yjs", "y-indexeddb", "@automerge/automerge"]
        .iter()
        .all(|p| dir.join("node_modules").join(p).join("package.json").exists());
    if present {
        println!("    present");
        return Ok(());
    }
    Cmd::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(dir).run()
}

/// What the main job needs: the wasm toolchain and the demo page's one npm package.
pub(crate) fn for_demo(runner: &mut Runner) -> Result<(), TaskError> {
    runner.step("set-up: rust target wasm32-unknown-unknown", wasm_target)?;
    runner.step("set-up: wasm-bindgen-cli pinned to Cargo.lock", wasm_bindgen_cli)?;
    runner.step("set-up: node and npm", node)?;
    runner.step("set-up: npm packages of the demo page (qrcode-generator)", demo_packages)?;
    Ok(())
}

fn demo_packages() -> Result<(), TaskError> {
    let dir = crate::root().join("web-demo");
    if dir.join("node_modules/qrcode-generator/dist/qrcode.mjs").exists() {
        println!("    present");
        return Ok(());
    }
    Cmd::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(dir).run()
}

fn wasm_target() -> Result<(), TaskError> {
    let installed = Cmd::new("rustup").args(["target", "list", "--installed"]).output()?;
    if installed.lines().any(|l| l.trim() == crate::WASM_TARGET) {
        println!("    present");
        return Ok(());
    }
    Cmd::new("rustup").args(["target", "add", crate::WASM_TARGET]).run()
}

fn chromium() -> Result<(), TaskError> {
    if Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists() {
        println!("    present: {}", Cmd::new("/usr/bin/chromium").arg("--version").output()?.trim());
        return Ok(());
    }
    apt_install(&["chromium", "chromium-driver"])
}

fn node() -> Result<(), TaskError> {
    if have("node") && have("npm") {
        println!("    present: node {}", Cmd::new("node").arg("--version").output()?.trim());
        return Ok(());
    }
    apt_install(&["nodejs", "npm"])
}

fn npm_packages() -> Result<(), TaskError> {
    let dir = crate::root().join("tests/e2e");
    let present = ["playwright-core", "vite", "webpack"]
        .iter()
        .all(|p| dir.join("node_modules").join(p).join("package.json").exists());
    if present {
        println!("    present");
        return Ok(());
    }
    // Never `npx playwright install`: the tests drive Debian's /usr/bin/chromium.
    Cmd::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(dir).run()
}

fn apt_install(packages: &[&str]) -> Result<(), TaskError> {
    Cmd::new("apt-get").args(["update", "-qq"]).run()?;
    Cmd::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
}

/// The `wasm-bindgen` version recorded in `Cargo.lock`.
pub(crate) fn locked_wasm_bindgen_version() -> Result<String, TaskError> {
    let lock_path = crate::root().join("Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path).map_err(|e| TaskError::io(&lock_path, e))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\"" {
            let version = lines.next().unwrap_or_default().trim();
            if let Some(v) = version.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"')) {
                return Ok(v.to_owned());
            }
        }
    }
    Err(TaskError::msg("Cargo.lock has no wasm-bindgen entry"))
}

fn wasm_bindgen_cli() -> Result<(), TaskError> {
    let wanted = locked_wasm_bindgen_version()?;
    let installed = Cmd::new("wasm-bindgen").arg("--version").output().unwrap_or_default();
    if installed.trim() == format!("wasm-bindgen {wanted}") && have("wasm-bindgen-test-runner") {
        println!("    present: {}", installed.trim());
        return Ok(());
    }
    println!("    installing wasm-bindgen-cli {wanted} (takes several minutes on a cold machine)");
    // No `--locked`: the CLI's own lockfile pins a crate version the registry mirror lacks.
    Cmd::new("cargo").args(["install", "wasm-bindgen-cli", "--force", "--version", &format!("={wanted}")]).run()
}
