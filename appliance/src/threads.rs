//! `threads`: where and how the helper threads run — every thread of the process except the
//! bidding cores' event loops: the pipeline's producer and librdkafka's threads, the frequency
//! worker, the control thread, the profile replicator (and its snapshot thread), the admin
//! thread, `main` and `helios-signal`.
//!
//! Owns [`HelperPlacement`] (resolved once at start from `[threads]`) and the two ways it is
//! applied: [`HelperPlacement::run_placed`] runs the start-up of the helpers on a short-lived
//! thread that carries the placement, so every thread they create — including librdkafka's,
//! which Helios does not spawn itself — inherits its CPU set, policy and nice value;
//! [`HelperPlacement::apply_to_current_thread`] places `main` itself once the cores are spawned.
//! The core threads are spawned by `main` before it is placed, and pin themselves.
//!
//! Why: on a CPU shared with an event loop, each wake-up of a helper preempts the loop (the
//! kernel's wake-up preemption) and cools its caches; the loop's thread also pays whatever
//! interrupt and softirq work lands while it runs (this kernel has no IRQ time accounting).
//! `SCHED_BATCH` helpers never preempt a running loop on wake-up — they run when it sleeps or at
//! the next scheduler tick — and a CPU set away from the cores keeps them off the loops' CPUs
//! altogether where the machine has a spare CPU.
//!
//! Must never: be applied to a core thread, or lower a nice value (that needs CAP_SYS_NICE; a
//! helper only ever becomes *less* urgent).

use std::io;
use std::mem::{size_of, zeroed};

use serde::{Deserialize, Serialize};

/// Scheduling policy of the helper threads (`threads.helper_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HelperPolicy {
    /// `SCHED_BATCH`: a waking helper does not preempt the running thread; it runs when the
    /// CPU's current thread sleeps or at the next tick. Same share of the CPU as `normal`.
    Batch,
    /// `SCHED_OTHER`: the kernel's default (a waking helper may preempt an event loop).
    Normal,
}

impl HelperPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            HelperPolicy::Batch => "batch",
            HelperPolicy::Normal => "normal",
        }
    }
    fn linux(self) -> libc::c_int {
        match self {
            HelperPolicy::Batch => libc::SCHED_BATCH,
            HelperPolicy::Normal => libc::SCHED_OTHER,
        }
    }
}

/// How helper threads are placed, resolved from `[threads]` and the CPUs of the cores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperPlacement {
    /// CPUs helper threads may run on (never empty).
    pub cpus: Vec<usize>,
    /// Whether `cpus` avoids every bidding core's CPU.
    pub apart_from_cores: bool,
    pub policy: HelperPolicy,
    /// Nice value, 0..=19.
    pub nice: i32,
}

impl HelperPlacement {
    /// Resolves `threads.helper_cpus`: `"auto"` — the CPUs this process may use that no bidding
    /// core runs on, or all of them when every one runs a core; `"all"` — every CPU this process
    /// may use; or a list (`"0"`, `"0,2-3"`) of CPUs this process may use.
    pub fn resolve(
        helper_cpus: &str,
        policy: HelperPolicy,
        nice: i32,
        allowed: &[usize],
        cores: &[usize],
    ) -> Result<HelperPlacement, String> {
        if !(0..=19).contains(&nice) {
            return Err(format!("helper_nice {nice} is outside 0..=19"));
        }
        let cpus = match helper_cpus.trim() {
            "auto" => {
                let spare: Vec<usize> = allowed
                    .iter()
                    .copied()
                    .filter(|c| !cores.contains(c))
                    .collect();
                if spare.is_empty() {
                    allowed.to_vec()
                } else {
                    spare
                }
            }
            "all" => allowed.to_vec(),
            list => {
                let cpus = crate::config::parse_cpu_list(list)?;
                if let Some(c) = cpus.iter().find(|c| !allowed.contains(c)) {
                    return Err(format!(
                        "CPU {c} is not one this process may use (allowed: {allowed:?})"
                    ));
                }
                cpus
            }
        };
        if cpus.is_empty() {
            return Err("no CPU left for helper threads".into());
        }
        let apart_from_cores = cpus.iter().all(|c| !cores.contains(c));
        Ok(HelperPlacement {
            cpus,
            apart_from_cores,
            policy,
            nice,
        })
    }

    /// Applies the placement to the calling thread: CPU set, policy, then nice. Threads it
    /// creates afterwards inherit all three.
    pub fn apply_to_current_thread(&self) -> io::Result<()> {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { zeroed() };
        for &c in &self.cpus {
            if c >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("CPU {c} is beyond CPU_SETSIZE"),
                ));
            }
            // SAFETY: `c` < CPU_SETSIZE, checked above.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 means the calling thread.
        if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param; 0 means the calling thread. SCHED_BATCH and
        // SCHED_OTHER at priority 0 need no privilege.
        if unsafe { libc::sched_setscheduler(0, self.policy.linux(), &param) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // On Linux, PRIO_PROCESS with the thread id (0 = the caller) sets one thread's nice.
        // SAFETY: plain syscall on the calling thread (-1 is a nice value or an error; either
        // way the comparison below only ever raises the value).
        let cur = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        // Only ever raise it (lowering needs CAP_SYS_NICE): a nicer parent stays as nice.
        if self.nice > cur {
            // SAFETY: plain syscall on the calling thread.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, self.nice) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Runs `start` on a short-lived thread placed like a helper, so every thread `start`
    /// creates (and every thread those create) inherits the placement; returns its result.
    /// A failure to place is logged and `start` runs anyway (placement is an optimisation).
    pub fn run_placed<T: Send>(&self, start: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let h = std::thread::Builder::new()
                .name("helios-start".into())
                .spawn_scoped(s, || {
                    if let Err(e) = self.apply_to_current_thread() {
                        tracing::warn!(error = %e, "threads: cannot place helper threads; they run unplaced");
                    }
                    start()
                });
            match h {
                Ok(h) => match h.join() {
                    Ok(v) => v,
                    Err(p) => std::panic::resume_unwind(p),
                },
                Err(e) => panic!("spawning the start-up thread of the helpers: {e}"),
            }
        })
    }
}

/// The calling thread's CPU set, policy and nice value (tests, logs).
pub fn current_thread_placement() -> io::Result<(Vec<usize>, libc::c_int, i32)> {
    let cpus = crate::sys::allowed_cpus()?;
    // SAFETY: plain syscall on the calling thread.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain syscall on the calling thread.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    Ok((cpus, policy, nice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_the_cpus_no_core_uses_or_all_when_none_is_left() {
        let p = HelperPlacement::resolve("auto", HelperPolicy::Batch, 0, &[0, 1, 2, 3], &[1, 2])
            .unwrap();
        assert_eq!(p.cpus, vec![0, 3]);
        assert!(p.apart_from_cores);
        let p = HelperPlacement::resolve("auto", HelperPolicy::Batch, 0, &[0, 1], &[0, 1]).unwrap();
        assert_eq!(p.cpus, vec![0, 1]);
        assert!(!p.apart_from_cores);
        let p = HelperPlacement::resolve("all", HelperPolicy::Normal, 5, &[0, 1, 2], &[2]).unwrap();
        assert_eq!(p.cpus, vec![0, 1, 2]);
        assert!(!p.apart_from_cores);
        let p =
            HelperPlacement::resolve(" 0-1 ", HelperPolicy::Batch, 0, &[0, 1, 2], &[2]).unwrap();
        assert_eq!(p.cpus, vec![0, 1]);
        assert!(p.apart_from_cores);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(HelperPlacement::resolve("5", HelperPolicy::Batch, 0, &[0, 1], &[0]).is_err());
        assert!(HelperPlacement::resolve("x", HelperPolicy::Batch, 0, &[0, 1], &[0]).is_err());
        assert!(HelperPlacement::resolve("auto", HelperPolicy::Batch, 20, &[0], &[0]).is_err());
        assert!(HelperPlacement::resolve("auto", HelperPolicy::Batch, -1, &[0], &[0]).is_err());
    }

    #[test]
    fn threads_started_under_run_placed_inherit_the_placement() {
        let allowed = crate::sys::allowed_cpus().unwrap();
        let last = *allowed.last().unwrap();
        let p = HelperPlacement::resolve(&last.to_string(), HelperPolicy::Batch, 7, &allowed, &[])
            .unwrap();
        let before = current_thread_placement().unwrap();
        // A thread started inside, as a helper's start-up starts its own threads.
        let inner = p.run_placed(|| {
            std::thread::spawn(current_thread_placement)
                .join()
                .unwrap()
                .unwrap()
        });
        assert_eq!(inner.0, vec![last]);
        assert_eq!(inner.1, libc::SCHED_BATCH);
        // Nice is only ever raised: under a nicer parent (`nice cargo test`) it stays as nice.
        assert_eq!(inner.2, before.2.max(7));
        // The caller is untouched.
        assert_eq!(current_thread_placement().unwrap(), before);
    }
}
