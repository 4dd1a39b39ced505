//! Running programs inside the benchmark's network namespaces.

#![allow(unsafe_code)] // libc calls (sockets, signals, namespaces, CPU clocks)

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{bail, Context};

/// A network namespace created by bench/packet.sh (which also deletes it).
#[derive(Debug, Clone)]
pub struct Netns(pub String);

impl Netns {
    /// `ip netns exec NAME program args...`; `ip` execs the program, so the
    /// child's pid is the program's own.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c
    }

    /// Runs to completion; fails with its stderr unless it exits 0.
    pub fn run(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> anyhow::Result<String> {
        let program = program.as_ref().to_owned();
        let out = self
            .command(&program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program:?} in {}", self.0))?;
        if !out.status.success() {
            bail!(
                "{program:?} {args:?} in {}: {}: {}",
                self.0,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn iptables(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run("iptables", args)
    }
}

/// A child whose stdout we read line by line; killed and reaped on drop so
/// that an error path never leaves a consumer bound to a queue.
pub struct Proc {
    pub name: &'static str,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    pub fn spawn(name: &'static str, mut cmd: Command) -> anyhow::Result<Proc> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        Ok(Proc { name, child, lines: BufReader::new(stdout).lines() })
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it.
    pub fn expect(&mut self, prefix: &str) -> anyhow::Result<String> {
        for line in self.lines.by_ref() {
            let line = line.with_context(|| format!("reading {}", self.name))?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim().to_string());
            }
        }
        bail!("{} ended without printing {prefix:?}", self.name)
    }

    /// Reads `prefix N secs S` and returns (N, S).
    pub fn expect_count(&mut self, prefix: &str) -> anyhow::Result<(u64, f64)> {
        let rest = self.expect(prefix)?;
        let mut words = rest.split_whitespace();
        let n = words.next().and_then(|w| w.parse().ok());
        let secs = match (words.next(), words.next()) {
            (Some("secs"), Some(s)) => s.parse().ok(),
            _ => Some(0.0),
        };
        match (n, secs) {
            (Some(n), Some(s)) => Ok((n, s)),
            _ => bail!("{}: unexpected line {prefix}{rest:?}", self.name),
        }
    }

    /// CPU time the whole process (every thread, also those that ended; user + system) has
    /// used so far, in seconds, to the nanosecond: the process's CPU-time clock, which any
    /// process may read of another. `/proc/PID/stat` holds the same sum, but in clock ticks
    /// (10 ms), too coarse for a consumer at 10k packets/s; it is the fallback.
    pub fn cpu_secs(&self) -> anyhow::Result<f64> {
        // The kernel's encoding of a process CPU clock (what glibc's clock_getcpuclockid
        // returns): the complemented pid shifted left by 3, clock type 2 (scheduler runtime).
        let pid = self.child.id() as libc::clockid_t;
        let clock = ((!pid) << 3) | 2;
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec we own.
        if unsafe { libc::clock_gettime(clock, &mut ts) } == 0 {
            return Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9);
        }
        self.stat_cpu_secs()
    }

    fn stat_cpu_secs(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .with_context(|| format!("reading /proc stat of {}", self.name))?;
        // Fields after the command name, which is in parentheses and may hold spaces: state is
        // field 3, utime 14 and stime 15.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
        let (Some(user), Some(system)) = (ticks(14), ticks(15)) else {
            bail!("{}: unexpected /proc stat {stat:?}", self.name)
        };
        // SAFETY: sysconf with a valid name has no other effect.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        Ok((user + system) as f64 / hz as f64)
    }

    /// Times the process's threads have gone to sleep waiting (voluntary context switches), so
    /// far: for a queue consumer, about how often a packet had to wake it.
    pub fn sleeps(&self) -> anyhow::Result<u64> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut total = 0;
        for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
            // A thread may end between listing and reading: it no longer counts.
            let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else { continue };
            let switches = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            total += switches.unwrap_or(0);
        }
        Ok(total)
    }

    pub fn wait(mut self) -> anyhow::Result<()> {
        let status = self.child.wait().with_context(|| format!("waiting for {}", self.name))?;
        anyhow::ensure!(status.success(), "{} exited with {status}", self.name);
        Ok(())
    }

    /// SIGTERM (daemons shut down cleanly on it), then reap.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A sibling binary of this one in the target directory.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(Path::new(&path).exists(), "{} not built", path.display());
    Ok(path)
}
