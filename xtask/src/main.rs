//! Kathon Sync's task runner (`cargo xtask <command>`).
//!
//! The two commands the README gives are the whole interface for people and for CI:
//!
//! * `cargo xtask test` — installs what the tests need (idempotently: anything already present is
//!   skipped) and runs every test: formatting, clippy for native and wasm32, the native tests, the
//!   check that the wasm build imports nothing from `env`, and the wasm tests under Node and in
//!   headless Chromium. `.ci/run` calls exactly this.
//! * `cargo xtask run` — the main job: sets up, builds, and runs the bridge.
//!
//! Every step prints what it does and how long it took, and the first failure stops the run with a
//! non-zero exit code and the failing command.

mod setup;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use util::{Cmd, Runner, TaskError};

const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut runner = Runner::new();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&mut runner),
        Some("run") => run(&mut runner, args.get(1..).unwrap_or_default()),
        Some("setup") => setup::all(&mut runner),
        Some("build-wasm") => build_wasm(&mut runner).map(|_| ()),
        Some("build-pkg") => build_pkg_with(&mut runner, args.iter().any(|a| a == "--keep-names")),
        Some("build-demo") => build_pkg(&mut runner).and_then(|()| build_demo(&mut runner)),
        Some("soak") => soak(&mut runner, args.get(1).map(String::as_str)),
        Some("fuzz") => fuzz(
            &mut runner,
            args.iter().skip(1).find(|a| !a.starts_with("--")).map(String::as_str),
            args.iter().any(|a| a == "--no-sanitizer"),
        ),
        Some("bench") => bench(&mut runner),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => {
            runner.summary();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nxtask: FAILED after {}: {e}", runner.elapsed());
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test         install what the tests need, then run every test (what CI runs)
  run [ARGS]   the main job: set up, build and start the bridge (ARGS go to kathon-bridge run)
  setup        only install what the tests and the demo need
  build-wasm   build the browser .wasm and check its imports
  build-demo   build the npm package and assemble the demo page into target/web-demo/
  build-pkg [--keep-names]
               build the npm package in pkg/ (web target at the root, bundler target in pkg/bundler);
               --keep-names keeps the function names in the .wasm, for CPU profiles
               (benches/browser/profile.mjs), and makes it larger than what ships
  soak [N]     N random model and engine schedules beyond the ones CI runs (default 200000)
  fuzz [SECS] [--no-sanitizer]
               run every cargo-fuzz target for SECS seconds each (default 600; needs nightly);
               --no-sanitizer builds without AddressSanitizer: 3-6x more executions per second
               (the core forbids unsafe code; the sanitizer guards its dependencies' unsafe)
  bench        every benchmark: criterion (crypto, profile), sync cost, edit cost, and Kathon
               side by side with Yjs and Automerge in headless Chromium (see benches/README.md)";

/// Every benchmark, one after the other (never two heavy jobs at once on this machine).
fn bench(runner: &mut Runner) -> Result<(), TaskError> {
    setup::all(runner)?;
    build_pkg(runner)?;
    let criterion = |bench: &'static str| {
        move || {
            Cmd::new("cargo")
                .args(["bench", "--locked", "-p", "kathon-benches", "--bench", bench, "--"])
                .args(["--warm-up-time", "1", "--measurement-time", "4"])
                .run()
        }
    };
    runner.step("criterion: Ed25519 and envelopes", criterion("crypto"))?;
    runner.step("criterion: the realistic profile (apply, encode, verified load)", criterion("profile"))?;
    runner.step("sync cost in the simulated network (full, incremental k = 1..1000)", || {
        Cmd::new("cargo").args(["bench", "--locked", "-p", "kathon-benches", "--bench", "sync"]).run()
    })?;
    runner.step("cost of one local edit as the tree grows", || {
        Cmd::new("cargo").args(["run", "--locked", "--release", "-p", "kathon-benches", "--example", "edit_cost"]).run()
    })?;
    runner.step("peak and resident memory of the realistic profile, Kathon and yrs", || {
        Cmd::new("cargo").args(["run", "--locked", "--release", "-p", "kathon-benches", "--example", "memory"]).run()
    })?;
    runner.step("time-to-discover between bridges in namespaces (500 newcomers)", || {
        Cmd::new("cargo")
            .args(["test", "--locked", "--release", "-p", "kathon-bridge", "--test", "discovery_latency"])
            .args(["--", "--ignored", "--nocapture"])
            .run()
    })?;
    runner.step(
        "headless Chromium: Kathon, Yjs + y-indexeddb, Automerge; signatures; full sync; WebRTC (artifacts/bench/browser.json)",
        || Cmd::new("node").args(["benches/browser/run.mjs"]).run(),
    )
}

/// The repository root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn test(runner: &mut Runner) -> Result<(), TaskError> {
    setup::all(runner)?;
    runner
        .step("formatting (cargo fmt --check)", || Cmd::new("cargo").args(["fmt", "--all", "--", "--check"]).run())?;
    runner.step("clippy, native, all targets", || {
        Cmd::new("cargo").args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]).run()
    })?;
    runner.step("clippy, wasm32 (core, bindings, import/export module)", || {
        Cmd::new("cargo")
            .args([
                "clippy",
                "-p",
                "kathon-core",
                "-p",
                "kathon-wasm",
                "-p",
                "kathon-formats",
                "--all-targets",
                "--locked",
                "--target",
                WASM_TARGET,
            ])
            .args(["--", "-D", "warnings"])
            .run()
    })?;
    runner.step("crate docs (cargo doc, warnings denied: broken or private links)", || {
        Cmd::new("cargo").args(["doc", "--workspace", "--no-deps", "--locked"]).env("RUSTDOCFLAGS", "-D warnings").run()
    })?;
    runner.step("native tests", || Cmd::new("cargo").args(["test", "--workspace", "--locked"]).run())?;
    build_pkg(runner)?;
    runner.step("core tests in wasm under Node", || {
        Cmd::new("cargo").args(["test", "-p", "kathon-core", "--locked", "--target", WASM_TARGET]).run()
    })?;
    runner.step("core tests in wasm in headless Chromium", || {
        Cmd::new("cargo")
            .args(["test", "-p", "kathon-core", "--locked", "--target", WASM_TARGET])
            .env("WASM_BINDGEN_USE_BROWSER", "1")
            .env("CHROMEDRIVER", "/usr/bin/chromedriver")
            .env("WASM_BINDGEN_TEST_TIMEOUT", "120")
            .env("WASM_BINDGEN_TEST_WEBDRIVER_JSON", root().join("xtask/webdriver.json"))
            .run_with_own_tmp(&root().join("target/tmp/chromedriver-core"))
    })?;
    runner.step("npm package in headless Chromium (IndexedDB, WebRTC, a man in the middle)", || {
        Cmd::new("cargo")
            .args(["test", "-p", "kathon-wasm", "--locked", "--target", WASM_TARGET, "--test", "browser"])
            .env("CHROMEDRIVER", "/usr/bin/chromedriver")
            .env("WASM_BINDGEN_TEST_TIMEOUT", "300")
            .env("WASM_BINDGEN_TEST_WEBDRIVER_JSON", root().join("xtask/webdriver.json"))
            .run_with_own_tmp(&root().join("target/tmp/chromedriver-package"))
    })?;
    runner.step(
        "npm package installed into fresh Vite and webpack projects, plain ES modules, quota (Playwright)",
        || Cmd::new("node").args(["tests/e2e/npm-package.test.mjs", "pkg"]).run(),
    )?;
    runner.step("native peer and Chromium pages sync across a namespaced LAN (Playwright)", || {
        Cmd::new("cargo").args(["build", "-p", "kathon-bridge", "--locked"]).run()?;
        Cmd::new("node").args(["tests/e2e/native-peer.test.mjs", "target/debug/kathon-bridge", "pkg"]).run()
    })?;
    build_demo(runner)?;
    runner.step(
        "the demo page on three machines of a namespaced LAN (Playwright; screenshots in artifacts/e2e/)",
        || {
            Cmd::new("cargo")
                .args(["build", "-p", "kathon-bridge", "--locked", "--example", "tampering_bridge"])
                .run()?;
            Cmd::new("node")
                .args([
                    "tests/e2e/demo.test.mjs",
                    "target/debug/kathon-bridge",
                    "target/debug/examples/tampering_bridge",
                    "target/web-demo",
                ])
                .run()
        },
    )?;
    runner.step("browser benches, smoke run (small profile, one round; figures are printed, not checked)", || {
        Cmd::new("node").args(["benches/browser/run.mjs", "--small", "--rounds", "1", "--writes", "200"]).run()
    })?;
    Ok(())
}

/// The package's two `.wasm` modules: the store, and the import/export module it loads on first
/// use (`wasm/formats/`).
const WASM_MODULES: [&str; 2] = ["kathon_wasm", "kathon_formats"];

/// Builds the browser `.wasm` modules (release profile for size) and refuses one that imports
/// anything from `env`: core must stay free of IO, clocks and C dependencies.
fn build_wasm(runner: &mut Runner) -> Result<Vec<PathBuf>, TaskError> {
    runner.step("build kathon-wasm and kathon-formats for wasm32 (wasm-release profile)", || {
        Cmd::new("cargo")
            .args(["build", "-p", "kathon-wasm", "-p", "kathon-formats", "--locked", "--profile", "wasm-release"])
            .args(["--target", WASM_TARGET])
            .run()
    })?;
    let dir = root().join("target").join(WASM_TARGET).join("wasm-release");
    let modules: Vec<PathBuf> = WASM_MODULES.iter().map(|name| dir.join(format!("{name}.wasm"))).collect();
    runner.step("wasm imports nothing from `env`", || {
        for wasm in &modules {
            let bytes = std::fs::read(wasm).map_err(|e| TaskError::io(wasm, e))?;
            let imports = util::wasm_import_modules(&bytes)?;
            println!("    {}: import modules {imports:?}", wasm.display());
            if imports.iter().any(|m| m == "env") {
                return Err(TaskError::msg(format!(
                    "{} imports from `env`: something in the core pulls in IO or a C library",
                    wasm.display()
                )));
            }
        }
        Ok(())
    })?;
    Ok(modules)
}

/// Long campaigns, outside CI: many more random schedules, from seeds CI does not run.
fn soak(runner: &mut Runner, count: Option<&str>) -> Result<(), TaskError> {
    let count = count.unwrap_or("200000");
    runner.step(&format!("{count} model convergence schedules (release build)"), || {
        Cmd::new("cargo")
            .args(["test", "--release", "--locked", "-p", "kathon-core", "--test", "convergence"])
            .env("KATHON_SCHEDULES", count)
            .env("KATHON_SEED_BASE", "1000000")
            .run()
    })?;
    runner.step(&format!("{count} engine schedules in the simulated network (release build)"), || {
        Cmd::new("cargo")
            .args(["test", "--release", "--locked", "-p", "kathon-core", "--test", "sim_schedules"])
            .env("KATHON_SIM_SCHEDULES", count)
            .env("KATHON_SEED_BASE", "1000000")
            .run()
    })
}

/// Each fuzz target for a while (libFuzzer, nightly); crashers land in `fuzz/artifacts/`.
fn fuzz(runner: &mut Runner, seconds: Option<&str>, no_sanitizer: bool) -> Result<(), TaskError> {
    let seconds = seconds.unwrap_or("600");
    runner.step("install cargo-fuzz if missing", || {
        if util::have_cargo_subcommand("fuzz") {
            return Ok(());
        }
        Cmd::new("cargo").args(["install", "cargo-fuzz"]).run()
    })?;
    let sanitizer = if no_sanitizer { "none" } else { "address" };
    for target in ["decoders", "envelope_ingest", "engine"] {
        runner.step(&format!("fuzz {target} for {seconds} s (sanitizer: {sanitizer})"), || {
            Cmd::new("cargo")
                .args(["+nightly", "fuzz", "run", "-s", sanitizer, target, "--"])
                .arg(format!("-max_total_time={seconds}"))
                .args(["-rss_limit_mb=512", "-max_len=8192", "-print_final_stats=1"])
                .current_dir(root().join("fuzz"))
                .run()
        })?;
    }
    Ok(())
}

/// Generates the npm package: wasm-bindgen's `web` target at the package root (works with Vite
/// and plain ES modules) and its `bundler` target under `bundler/` (webpack 5). Prints the
/// `.wasm` size raw and gzipped. Debian's `wasm-opt` breaks this output, so none is used.
fn build_pkg(runner: &mut Runner) -> Result<(), TaskError> {
    build_pkg_with(runner, false)
}

/// `keep_names`: the `.wasm` keeps its name section (function names in CPU profiles).
fn build_pkg_with(runner: &mut Runner, keep_names: bool) -> Result<(), TaskError> {
    let modules = build_wasm(runner)?;
    let pkg = root().join("pkg");
    runner.step("wasm-bindgen: web target into pkg/, bundler target into pkg/bundler/", || {
        // Start clean: a stale snippet folder (its name carries a hash) or a file an older build
        // wrote would be packed with the package. Only package.json and README.md are kept.
        for entry in std::fs::read_dir(&pkg).map_err(|e| TaskError::io(&pkg, e))? {
            let path = entry.map_err(|e| TaskError::io(&pkg, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name == "snippets" || name == "bundler" {
                std::fs::remove_dir_all(&path).map_err(|e| TaskError::io(&path, e))?;
            } else if [".js", ".wasm", ".d.ts"].iter().any(|ext| name.ends_with(ext)) {
                std::fs::remove_file(&path).map_err(|e| TaskError::io(&path, e))?;
            }
        }
        for wasm in &modules {
            for (target, dir) in [("web", pkg.clone()), ("bundler", pkg.join("bundler"))] {
                let names: &[&str] = if keep_names { &[] } else { &["--remove-name-section"] };
                // The import/export module is the package's own business: no public types.
                let types: &[&str] = if wasm.ends_with("kathon_wasm.wasm") { &[] } else { &["--no-typescript"] };
                Cmd::new("wasm-bindgen")
                    .args(["--target", target, "--remove-producers-section"])
                    .args(names)
                    .args(types)
                    .arg("--out-dir")
                    .arg(&dir)
                    .arg(wasm)
                    .run()?;
            }
        }
        Ok(())
    })?;
    runner.step("package size", || {
        for name in WASM_MODULES {
            let path = pkg.join(format!("{name}_bg.wasm"));
            let bytes = std::fs::read(&path).map_err(|e| TaskError::io(&path, e))?;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::Write::write_all(&mut gz, &bytes).map_err(|e| TaskError::io(&path, e))?;
            let gzipped = gz.finish().map_err(|e| TaskError::io(&path, e))?.len();
            let when = if name == "kathon_wasm" { "loaded by init()" } else { "loaded on the first import or export" };
            println!("    {name}_bg.wasm: {} bytes raw, {gzipped} bytes gzipped (-9); {when}", bytes.len());
        }
        Ok(())
    })
}

/// The demo site: the page's files, the package's JS and `.wasm`, and the QR library.
fn build_demo(runner: &mut Runner) -> Result<(), TaskError> {
    runner.step("assemble the demo page into target/web-demo/", || {
        let root = root();
        let site = root.join("target/web-demo");
        std::fs::create_dir_all(&site).map_err(|e| TaskError::io(&site, e))?;
        let files = [
            ("web-demo/index.html", "index.html"),
            ("web-demo/app.js", "app.js"),
            ("web-demo/style.css", "style.css"),
            ("web-demo/node_modules/qrcode-generator/dist/qrcode.mjs", "qrcode.mjs"),
            ("pkg/kathon_wasm.js", "kathon_wasm.js"),
            ("pkg/kathon_wasm_bg.wasm", "kathon_wasm_bg.wasm"),
            ("pkg/kathon_formats.js", "kathon_formats.js"),
            ("pkg/kathon_formats_bg.wasm", "kathon_formats_bg.wasm"),
        ];
        for (from, to) in files {
            let from = root.join(from);
            std::fs::copy(&from, site.join(to)).map_err(|e| TaskError::io(&from, e))?;
        }
        // The package's JS snippets (the loader of the import/export module), under a path with
        // a hash in it: the service worker's list of files to keep offline names them.
        let snippets = site.join("snippets");
        if snippets.exists() {
            std::fs::remove_dir_all(&snippets).map_err(|e| TaskError::io(&snippets, e))?;
        }
        let copied = util::copy_dir(&root.join("pkg/snippets"), &snippets)?;
        let listed: String = copied.iter().map(|p| format!("'snippets/{}', ", p.display())).collect();
        let sw = root.join("web-demo/sw.js");
        let text = std::fs::read_to_string(&sw).map_err(|e| TaskError::io(&sw, e))?;
        let marker = "/* the package's snippets */";
        if !text.contains(marker) {
            return Err(TaskError::msg(format!("{} lacks the marker {marker}", sw.display())));
        }
        let out = site.join("sw.js");
        std::fs::write(&out, text.replace(marker, &listed)).map_err(|e| TaskError::io(&out, e))?;
        println!("    {}", site.display());
        Ok(())
    })
}

/// The main job: the bridge with its native peer, serving the demo page on 127.0.0.1.
fn run(runner: &mut Runner, args: &[String]) -> Result<(), TaskError> {
    setup::for_demo(runner)?;
    build_pkg(runner)?;
    build_demo(runner)?;
    runner.step("build kathon-bridge (release)", || {
        Cmd::new("cargo").args(["build", "-p", "kathon-bridge", "--release", "--locked"]).run()
    })?;
    let bridge = root().join("target/release/kathon-bridge");
    let site = root().join("target/web-demo");
    println!("\nstarting the bridge with the native peer; open the page it prints (Ctrl-C to stop)\n");
    Cmd::new(bridge).arg("run").arg("--site").arg(site).args(args).run()
}
