//! How much of the machine other processes used while a scenario ran (Linux `/proc`), so a
//! report says whether its numbers were taken on a quiet machine; and a wait for quiet.
//!
//! "Ours" is this process (server, load generator), its Redis and any `postgres` process;
//! interrupt time is left out on both sides (loopback traffic is mostly accounted there).

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// All CPU time of the machine, ticks.
    total: u64,
    /// Busy time outside interrupts (user, nice, system, steal), ticks.
    busy: u64,
    /// Our processes' user + system time, ticks.
    ours: u64,
}

fn proc_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based 11, 12).
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let comm = std::fs::read_to_string(format!("/proc/{name}/comm")).ok()?;
            comm.starts_with("postgres")
                .then(|| proc_ticks(&name))
                .flatten()
        })
        .sum()
}

/// A snapshot; `None` off Linux.
pub fn sample(redis_pid: Option<u32>) -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let field = |i: usize| cpu.get(i).copied().unwrap_or(0);
    let total = (0..8).map(field).sum();
    let busy = field(0) + field(1) + field(2) + field(7);
    let ours = proc_ticks("self").unwrap_or(0)
        + redis_pid
            .and_then(|p| proc_ticks(&p.to_string()))
            .unwrap_or(0)
        + postgres_ticks();
    Some(Sample { total, busy, ours })
}

/// The share (0–1) of the machine's CPU that other processes used between `a` and `b`.
pub fn others(a: Option<Sample>, b: Option<Sample>) -> Option<f64> {
    let (a, b) = (a?, b?);
    let total = b.total.checked_sub(a.total)?;
    if total == 0 {
        return None;
    }
    let busy = b.busy.saturating_sub(a.busy);
    let ours = b.ours.saturating_sub(a.ours);
    Some(busy.saturating_sub(ours) as f64 / total as f64)
}

/// Wait until other processes use less than `threshold` of the machine over one second, for
/// at most `limit`. Returns the last share seen.
pub fn wait_quiet(
    redis_pid: Option<u32>,
    threshold: f64,
    limit: Duration,
    mut say: impl FnMut(String),
) -> Option<f64> {
    let deadline = Instant::now() + limit;
    let mut told = false;
    loop {
        let a = sample(redis_pid);
        std::thread::sleep(Duration::from_secs(1));
        let share = others(a, sample(redis_pid));
        match share {
            Some(s) if s >= threshold && Instant::now() < deadline => {
                if !told {
                    say(format!(
                        "    waiting for the machine to be quiet: other processes use {:.0} % \
                         of the CPU (up to {:.0} s)",
                        s * 100.0,
                        limit.as_secs_f64()
                    ));
                    told = true;
                }
            }
            _ => return share,
        }
    }
}
