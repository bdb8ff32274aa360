//! Running commands and steps with clear progress and loud failures.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Why a task failed.
#[derive(Debug)]
pub(crate) struct TaskError(String);

impl TaskError {
    pub(crate) fn msg(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        Self(format!("{}: {error}", path.display()))
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Prints each step with its start time and duration, and a summary at the end.
pub(crate) struct Runner {
    start: Instant,
    done: Vec<(String, Duration)>,
}

impl Runner {
    pub(crate) fn new() -> Self {
        Self { start: Instant::now(), done: Vec::new() }
    }

    pub(crate) fn elapsed(&self) -> String {
        format_duration(self.start.elapsed())
    }

    pub(crate) fn step(&mut self, name: &str, f: impl FnOnce() -> Result<(), TaskError>) -> Result<(), TaskError> {
        println!("\n==> [{}] {name}", self.elapsed());
        let started = Instant::now();
        match f() {
            Ok(()) => {
                let took = started.elapsed();
                println!("    ok: {name} ({})", format_duration(took));
                self.done.push((name.to_owned(), took));
                Ok(())
            }
            Err(e) => Err(TaskError(format!("step \"{name}\": {e}"))),
        }
    }

    pub(crate) fn summary(&self) {
        println!("\n==> all {} steps passed in {}", self.done.len(), self.elapsed());
        for (name, took) in &self.done {
            println!("    {:>9}  {name}", format_duration(*took));
        }
    }
}

fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 { format!("{secs:.1} s") } else { format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60) }
}

/// A command that echoes itself and fails loudly.
pub(crate) struct Cmd {
    inner: Command,
    shown: String,
}

impl Cmd {
    pub(crate) fn new(program: impl AsRef<OsStr>) -> Self {
        let shown = program.as_ref().to_string_lossy().into_owned();
        let mut inner = Command::new(program);
        inner.current_dir(crate::root());
        Self { inner, shown }
    }

    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.shown.push(' ');
        self.shown.push_str(&arg.as_ref().to_string_lossy());
        self.inner.arg(arg);
        self
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    pub(crate) fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.inner.current_dir(dir.as_ref());
        self
    }

    pub(crate) fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.inner.env(key, value);
        self
    }

    /// Runs with inherited stdio; fails on a non-zero exit.
    pub(crate) fn run(mut self) -> Result<(), TaskError> {
        println!("    $ {}", self.shown);
        let status = self.inner.status().map_err(|e| TaskError(format!("could not start `{}`: {e}", self.shown)))?;
        if status.success() { Ok(()) } else { Err(TaskError(format!("`{}` failed ({status})", self.shown))) }
    }

    /// Runs like [`Cmd::run`] with `TMPDIR` set to `dir`, made empty first and removed after,
    /// pass or fail. For chromedriver's Chromium: it makes its profile in the temp directory
    /// and leaves it behind (60 MB each) when the driver ends it without a clean shutdown.
    pub(crate) fn run_with_own_tmp(self, dir: &Path) -> Result<(), TaskError> {
        remove_dir_if_present(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| TaskError::io(dir, e))?;
        let ran = self.env("TMPDIR", dir).run();
        let removed = remove_dir_if_present(dir);
        ran.and(removed)
    }

    /// Runs quietly and returns stdout; fails on a non-zero exit.
    pub(crate) fn output(mut self) -> Result<String, TaskError> {
        let out = self.inner.output().map_err(|e| TaskError(format!("could not start `{}`: {e}", self.shown)))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(TaskError(format!(
                "`{}` failed ({}): {}",
                self.shown,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

fn remove_dir_if_present(dir: &Path) -> Result<(), TaskError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(TaskError::io(dir, e)),
        _ => Ok(()),
    }
}

/// Whether `cargo <name>` exists.
pub(crate) fn have_cargo_subcommand(name: &str) -> bool {
    Command::new("cargo").args([name, "--version"]).output().is_ok_and(|o| o.status.success())
}

/// Whether `program` can be started (found on `PATH`).
pub(crate) fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Copies the directory `from` into `to`, recursively (what is already in `to` stays); returns
/// the files copied, relative to `from`, in a stable order.
pub(crate) fn copy_dir(from: &Path, to: &Path) -> Result<Vec<PathBuf>, TaskError> {
    std::fs::create_dir_all(to).map_err(|e| TaskError::io(to, e))?;
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .map_err(|e| TaskError::io(from, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| TaskError::io(from, e))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    let mut copied = Vec::new();
    for entry in entries {
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(|e| TaskError::io(&source, e))?.is_dir() {
            let inner = copy_dir(&source, &target)?;
            copied.extend(inner.into_iter().map(|p| PathBuf::from(entry.file_name()).join(p)));
        } else {
            std::fs::copy(&source, &target).map_err(|e| TaskError::io(&source, e))?;
            copied.push(PathBuf::from(entry.file_name()));
        }
    }
    Ok(copied)
}

/// The module names of a wasm binary's imports.
pub(crate) fn wasm_import_modules(bytes: &[u8]) -> Result<Vec<String>, TaskError> {
    let mut modules = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| TaskError(format!("not a valid wasm module: {e}")))?;
        if let wasmparser::Payload::ImportSection(reader) = payload {
            for import in reader {
                let import = import.map_err(|e| TaskError(format!("bad import section: {e}")))?;
                if !modules.iter().any(|m| m == import.module) {
                    modules.push(import.module.to_owned());
                }
            }
        }
    }
    Ok(modules)
}
