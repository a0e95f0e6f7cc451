//! Shared harness for crashcart's end-to-end tests.
//!
//! The tests drive the real binaries against the real kernel and a real Docker engine. This
//! module finds the built executables, starts distroless containers (removed on drop), and
//! makes small ext3 images with `mke2fs -d`.
//!
//! # Where the binaries come from
//!
//! These tests run the executables `cargo test --workspace` builds next to them (see [`bin`]).
//! Cargo builds a member's binary for a test run only when that member has integration tests of
//! its own (they are what `CARGO_BIN_EXE_<name>` is for), so each member whose binary is used
//! here keeps one: `crates/inject/tests/cli.rs` and `crates/imgbuild/tests/cli.rs`. A narrower
//! run (`cargo test -p crashcart-tests`, `--test host`) builds neither binary: run `cargo build
//! --workspace` before it, or it uses whatever binaries the last build left.
//!
//! # Skips
//!
//! A test whose requirement is missing calls [`skip`] and returns. A skip is a result, not a
//! silence: `SKIP: <test>: <reason>` goes straight to the stderr handle (libtest's capture only
//! intercepts the `print!` family, so the line shows even when the test passes) and one line is
//! appended to the skip log ([`skip_log`]), from which `tests/run.sh` prints how many tests
//! skipped when the run ends. Under `CI=true` a skip is a failure: CI installs everything, so
//! nothing may be skipped there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

mod terminal;
pub use terminal::Terminal;

/// Name of the distroless test image built from `tests/fixtures/distroless`.
pub const DISTROLESS_IMAGE: &str = "crashcart-test-distroless:latest";

/// Environment variable naming the skip log; `tests/run.sh` sets it, empties the file before
/// the tests and prints its summary (`tests/common/skipped.sh`) after them.
pub const SKIP_LOG_ENV: &str = "CRASHCART_SKIP_LOG";

/// Reports a test (or a case of it) that cannot run here: visibly and counted, see the module
/// docs. Panics under `CI=true`.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("required for CI but missing: {reason}");
    }
    record_skip(&skip_log(), &current_test(), reason);
}

/// The skip log: `$CRASHCART_SKIP_LOG`, or `crashcart-tests-skipped.tsv` next to the binaries
/// (where `tests/run.sh` puts it too; only that script empties it).
pub fn skip_log() -> PathBuf {
    match std::env::var_os(SKIP_LOG_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => bin_dir().join("crashcart-tests-skipped.tsv"),
    }
}

/// Writes `SKIP: <test>: <reason>` past libtest's capture and appends `<test>\t<reason>` to
/// `log`. Panics when the log cannot be written: an unrecorded skip would be a silent one.
pub fn record_skip(log: &Path, test: &str, reason: &str) {
    // One line each: the log is read line by line, tab-separated.
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // `std::io::stderr()` writes to fd 2 directly; only `eprint!`/`eprintln!` are captured.
    let _ = std::io::stderr().write_all(format!("SKIP: {test}: {reason}\n").as_bytes());
    // One `write(2)` on an `O_APPEND` file: lines of tests running in parallel stay whole.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut f| f.write_all(format!("{test}\t{reason}\n").as_bytes()))
        .unwrap_or_else(|e| panic!("cannot record the skip in {}: {e}", log.display()));
}

/// `<test binary>::<test>` for the running test, e.g. `host::wrapped_tools_run`: libtest runs
/// each test on a thread named after it.
fn current_test() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Cargo names test executables `<target>-<16 hex digits>`.
    let binary = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => stem,
    };
    match std::thread::current().name() {
        Some(test) if test != "main" => format!("{binary}::{test}"),
        _ => binary,
    }
}

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory holding the workspace's binaries (`target/<profile>/`): test executables
/// live in its `deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps/")
        .to_path_buf()
}

/// Path of a binary built by this workspace (`crashcart`, `crashcart-imgbuild`); see the module
/// docs for which cargo runs build it.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not built. `cargo test --workspace` builds it, because its package has an \
         integration test of its own (crates/*/tests/; keep one there). A narrower run \
         (`cargo test -p crashcart-tests`, `--test NAME`) does not: run `cargo build --workspace` \
         first.",
        path.display()
    );
    path
}

/// True when running as root (uid 0).
pub fn is_root() -> bool {
    // Reading /proc avoids a libc dependency in the harness.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Whether `program` can be found on `PATH`.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command, returning its output; panics if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and asserts success, returning trimmed stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Checks root and a responding Docker engine; returns false (after [`skip`]) otherwise.
pub fn docker_ready() -> bool {
    if !is_root() {
        skip("needs root");
        return false;
    }
    if !have("docker") {
        skip("docker CLI not installed");
        return false;
    }
    let ok = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("docker engine not answering on /var/run/docker.sock");
    }
    ok
}

/// Builds the distroless test image once per test process.
pub fn distroless_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox missing: apt-get install busybox-static"
        );
        let ctx = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            workspace_root().join("tests/fixtures/distroless/Dockerfile"),
            ctx.path().join("Dockerfile"),
        )
        .expect("copy Dockerfile");
        std::fs::copy(busybox, ctx.path().join("busybox")).expect("copy busybox");
        docker_build(ctx.path(), DISTROLESS_IMAGE);
    });
    DISTROLESS_IMAGE
}

/// `docker build -t TAG CONTEXT` with the classic builder (it needs no registry and no
/// buildx plugin; the tests' images are all `FROM scratch`).
pub fn docker_build(context: &Path, tag: &str) {
    run_ok(
        Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", tag])
            .arg(context),
    );
}

/// A running distroless container, force-removed on drop.
pub struct Container {
    /// Full 64-hex container ID.
    pub id: String,
    /// The container's name (`--name`).
    pub name: String,
}

impl Container {
    /// Starts a distroless container running `busybox sleep` as PID 1.
    ///
    /// `docker_args` go before the image (e.g. `--read-only`); `cmd` replaces the default
    /// `sleep` when not empty (arguments to `/busybox`).
    pub fn start(docker_args: &[&str], cmd: &[&str]) -> Container {
        Container::start_image(distroless_image(), docker_args, cmd)
    }

    /// Starts a container of `image` (one of the tests' FROM-scratch images) the same way.
    pub fn start_image(image: &str, docker_args: &[&str], cmd: &[&str]) -> Container {
        let name = unique_name("cc");
        let id = run_ok(
            Command::new("docker")
                .args(["run", "-d", "--name", &name])
                .args(docker_args)
                .arg(image)
                .args(cmd),
        );
        Container { id, name }
    }

    /// The host PID of the container's init process.
    pub fn pid(&self) -> u32 {
        run_ok(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &self.id]))
            .parse()
            .expect("pid")
    }

    /// Runs `busybox ARGS...` inside the container with `docker exec`.
    pub fn exec(&self, args: &[&str]) -> Output {
        run(Command::new("docker")
            .args(["exec", &self.id, "/busybox"])
            .args(args))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A name unique within this machine for this run: prefix, PID, counter.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes an ext3 image of `dir` with `mke2fs -d` at `out` (for tests that do not exercise
/// crashcart-imgbuild).
pub fn mke2fs_image(dir: &Path, out: &Path, size_mb: u32) {
    run_ok(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext3", "-d"])
            .arg(dir)
            .arg(out)
            .arg(format!("{size_mb}M")),
    );
}

/// Loop devices currently backed by `image` (as `losetup -j` reports them).
pub fn loop_devices_for(image: &Path) -> Vec<String> {
    let out = run(Command::new("losetup").arg("-j").arg(image));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .collect()
}

/// Fills `dir` with a busybox tool tree as an image root: `bin/busybox` (Debian's static
/// build) and a `bin/<applet>` symlink for every applet it lists (no `bash`: `sh` is ash).
pub fn busybox_tree(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("create bin/");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy /bin/busybox");
    let list = run_ok(Command::new("/bin/busybox").arg("--list"));
    for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet symlink");
    }
}

/// Spawns `cmd`, a wrapper such as `unshare ... -f` whose only child becomes the target, and
/// waits (at most 5 s) until that child runs `sleep`; returns the wrapper and the target's host
/// PID. Panics, naming `what`, if it does not start.
pub fn spawn_wrapped_target(cmd: &mut Command, what: &str) -> (std::process::Child, u32) {
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut pid = 0;
    let started = wait_until(std::time::Duration::from_secs(5), || {
        pid = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0);
        pid != 0
            && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("sleep"))
    });
    if !started {
        let _ = child.kill();
        panic!("{what} did not start");
    }
    (child, pid)
}

/// Asserts a crashcart error: exit 125, one `crashcart: ...` line on stderr containing
/// `needle` (case-insensitively).
pub fn assert_crashcart_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err:?}");
    assert!(lines[0].starts_with("crashcart: "), "{err:?}");
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "{err:?} should mention {needle:?}"
    );
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REASON: &str = "the harness test skips on purpose";

    /// A test that skips, run as a child process by [`a_skip_is_shown_and_counted`] exactly as
    /// libtest runs any test: with its output captured.
    #[test]
    #[ignore = "run in a child process by a_skip_is_shown_and_counted"]
    fn skipping_test() {
        eprintln!("captured by libtest");
        skip(REASON);
    }

    #[test]
    fn a_skip_is_shown_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("skipped.tsv");
        let exe = std::env::current_exe().expect("current_exe");
        let out = run(Command::new(exe)
            .args(["--ignored", "--exact", "tests::skipping_test"])
            .env(SKIP_LOG_ENV, &log)
            .env_remove("CI"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let test = "crashcart_tests::tests::skipping_test";
        // Shown: the capture was on (the eprintln! line is gone), the skip got past it.
        assert!(!stderr.contains("captured by libtest"), "{stderr}");
        assert!(!stdout.contains("captured by libtest"), "{stdout}");
        assert!(
            stderr.contains(&format!("SKIP: {test}: {REASON}\n")),
            "{stderr}"
        );
        // Counted: the line is in the log tests/run.sh reads, and its summary counts it.
        let logged = std::fs::read_to_string(&log).expect("read the skip log");
        assert_eq!(logged, format!("{test}\t{REASON}\n"));
        let summary = run_ok(
            Command::new("bash")
                .arg(workspace_root().join("tests/common/skipped.sh"))
                .arg(&log),
        );
        assert_eq!(
            summary.lines().collect::<Vec<_>>(),
            [
                "1 test skipped (under CI=true a skip is a failure):",
                &format!("  {test}: {REASON}"),
            ]
        );
    }
}
