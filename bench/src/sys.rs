//! Process and thread facts the benchmarks need: pinning to a core, CPU time of this thread and
//! of another process, precise timer wake-ups, and a monotonic nanosecond clock.
//!
//! Thin wrappers over `libc` and `/proc`; every function is called from the thread it concerns.
//! Must never: be called per request except [`Clock::now_ns`].

use std::time::Instant;

use anyhow::{Context, bail};

/// Pins the calling thread to `cpu` (`sched_setaffinity`).
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("cpu {cpu} is out of range");
    }
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set, CPU_SET writes inside it (cpu is
    // checked against CPU_SETSIZE above), and sched_setaffinity only reads the set we pass.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning to cpu {cpu}"));
    }
    Ok(())
}

/// The CPUs the calling thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in `pin_to_cpu`; sched_getaffinity writes at most size_of::<cpu_set_t>() bytes
    // into `set`, and CPU_ISSET reads inside it for i < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&i| libc::CPU_ISSET(i, &set))
            .collect()
    }
}

/// Asks the kernel to wake this thread's timers within 1 ns of their deadline instead of the
/// default 50 µs slack, so the open-loop schedule is kept precisely.
pub fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// CPU time (user + system) used so far by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime writes one timespec into the value we own.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time (utime + stime, all threads, from `/proc/<pid>/stat`) of process `pid`, in ns.
/// Resolution is one clock tick (usually 10 ms): measure over seconds.
pub fn process_cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat_cpu_ticks(&stat)
        .map(|t| t * 1_000_000_000 / clock_ticks_per_s())
        .with_context(|| format!("parsing /proc/{pid}/stat"))
}

/// CPU time (utime + stime, ns) of each thread of process `pid`, summed by thread name
/// (`/proc/<pid>/task/*/{comm,stat}`): which threads the server's CPU goes to. Threads that
/// ended are missing; resolution is one clock tick.
pub fn process_threads_cpu_ns(pid: u32) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let mut out = std::collections::BTreeMap::new();
    let dir = format!("/proc/{pid}/task");
    for t in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let p = t?.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(p.join("stat")),
            std::fs::read_to_string(p.join("comm")),
        ) else {
            continue; // the thread ended meanwhile
        };
        if let Some(ticks) = parse_stat_cpu_ticks(&stat) {
            *out.entry(comm.trim().to_owned()).or_insert(0) +=
                ticks * 1_000_000_000 / clock_ticks_per_s();
        }
    }
    Ok(out)
}

/// Scheduler figures of one thread (`/proc/.../schedstat`): CPU time run and time spent
/// **runnable but waiting** for a CPU (run delay), ns — the second says whether the thread was
/// starved (another task held its CPU) rather than idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStat {
    pub run_ns: u64,
    pub wait_ns: u64,
}

/// The calling thread's [`SchedStat`] (`/proc/thread-self/schedstat`); `None` when the kernel
/// does not keep it (no `CONFIG_SCHED_INFO`).
pub fn thread_schedstat() -> Option<SchedStat> {
    parse_schedstat(&std::fs::read_to_string("/proc/thread-self/schedstat").ok()?)
}

/// Run delay (ns) of each thread of process `pid`, summed by thread name
/// (`/proc/<pid>/task/*/schedstat`). Threads that ended are missing.
pub fn process_threads_wait_ns(
    pid: u32,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let mut out = std::collections::BTreeMap::new();
    let dir = format!("/proc/{pid}/task");
    for t in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let p = t?.path();
        let (Ok(st), Ok(comm)) = (
            std::fs::read_to_string(p.join("schedstat")),
            std::fs::read_to_string(p.join("comm")),
        ) else {
            continue; // the thread ended meanwhile
        };
        if let Some(s) = parse_schedstat(&st) {
            *out.entry(comm.trim().to_owned()).or_insert(0) += s.wait_ns;
        }
    }
    Ok(out)
}

/// The calling thread's scheduling policy, as `chrt` names it ("SCHED_FIFO 50", "SCHED_OTHER").
pub fn thread_policy() -> String {
    // SAFETY: sched_getscheduler/getparam on the calling thread (0) write only `p`.
    let (pol, prio) = unsafe {
        let mut p: libc::sched_param = std::mem::zeroed();
        let pol = libc::sched_getscheduler(0);
        libc::sched_getparam(0, &mut p);
        (pol, p.sched_priority)
    };
    match pol {
        libc::SCHED_FIFO => format!("SCHED_FIFO {prio}"),
        libc::SCHED_RR => format!("SCHED_RR {prio}"),
        libc::SCHED_BATCH => "SCHED_BATCH".into(),
        libc::SCHED_IDLE => "SCHED_IDLE".into(),
        _ => "SCHED_OTHER".into(),
    }
}

/// `run_ns wait_ns timeslices` (the format of `/proc/.../schedstat`).
fn parse_schedstat(s: &str) -> Option<SchedStat> {
    let mut f = s.split_whitespace();
    let run_ns = f.next()?.parse().ok()?;
    let wait_ns = f.next()?.parse().ok()?;
    Some(SchedStat { run_ns, wait_ns })
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut f = after.split_whitespace();
    // `after` starts at field 3 (state); utime is field 14 → index 11.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Monotonic nanoseconds since the clock was made (vDSO `clock_gettime`, no syscall).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn schedstat_lines_parse_and_this_thread_has_one() {
        assert_eq!(
            parse_schedstat("135572 1748074 2\n"),
            Some(SchedStat {
                run_ns: 135_572,
                wait_ns: 1_748_074
            })
        );
        assert_eq!(parse_schedstat("12"), None);
        assert_eq!(parse_schedstat("x y z"), None);
        if let Some(s) = thread_schedstat() {
            let mut x = 0u64;
            for i in 0..5_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            let s2 = thread_schedstat().expect("present once");
            assert!(s2.run_ns > s.run_ns && s2.wait_ns >= s.wait_ns);
            let me = process_threads_wait_ns(std::process::id()).expect("own threads");
            assert!(!me.is_empty());
        }
        assert!(thread_policy().starts_with("SCHED_"));
    }

    #[test]
    fn own_process_cpu_time_and_thread_time_advance() {
        let t0 = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_ns() > t0);
        assert!(process_cpu_ns(std::process::id()).is_ok());
    }

    #[test]
    fn pinning_is_visible_in_the_affinity_mask() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        let want = *cpus.last().expect("non-empty");
        std::thread::spawn(move || {
            pin_to_cpu(want).expect("pin");
            assert_eq!(allowed_cpus(), vec![want]);
        })
        .join()
        .expect("thread");
    }
}
