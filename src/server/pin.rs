//! `--pin-workers`: each runtime worker thread on a CPU of its own.
//!
//! Left alone, the kernel may run two busy workers on one CPU and switch
//! between them only at the scheduler tick, while the other CPU serves
//! something else; every request a waiting worker holds then waits a tick
//! (4 ms on the 2-core test machine, docs/performance.md). Pinned, a worker is never queued behind another
//! worker. The cost is flexibility: a pinned worker cannot move away from
//! a CPU that something else is using, so pinning is for a server that has
//! its CPUs to itself (docs/server.md, "In production").
//!
//! A thread starts with the CPUs of the thread that started it, and the
//! runtime starts its blocking threads (file checks, reload compiles) from
//! workers; each of those threads widens itself back to every CPU the
//! process may use, so that a reload never competes with one worker only.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The CPUs the process may use, and a way to pin threads to them.
#[derive(Debug, Clone)]
pub(crate) struct Cpus {
    ids: Vec<usize>,
    #[cfg(target_os = "linux")]
    allowed: nix::sched::CpuSet,
}

/// The CPU worker `index` is pinned to: the workers take the allowed CPUs
/// in turn, and start again from the first when there are more workers
/// than CPUs.
pub(crate) fn cpu_for(cpus: &[usize], index: usize) -> Option<usize> {
    cpus.get(index.checked_rem(cpus.len())?).copied()
}

#[cfg(target_os = "linux")]
impl Cpus {
    /// The CPUs the calling thread may use: call it before any thread is
    /// pinned.
    pub(crate) fn allowed() -> Result<Cpus, String> {
        use nix::sched::{sched_getaffinity, CpuSet};
        use nix::unistd::Pid;
        let refused = |why: String| {
            format!("`--pin-workers`: cannot read the CPUs this process may use: {why}")
        };
        let allowed = sched_getaffinity(Pid::from_raw(0)).map_err(|e| refused(e.to_string()))?;
        let ids: Vec<usize> = (0..CpuSet::count())
            .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
            .collect();
        if ids.is_empty() {
            return Err(refused("the set is empty".to_owned()));
        }
        Ok(Cpus { ids, allowed })
    }

    fn pin_current(&self, cpu: usize) -> Result<(), String> {
        use nix::sched::{sched_setaffinity, CpuSet};
        use nix::unistd::Pid;
        let mut one = CpuSet::new();
        one.set(cpu).map_err(|e| e.to_string())?;
        sched_setaffinity(Pid::from_raw(0), &one).map_err(|e| e.to_string())
    }

    fn widen_current(&self) -> Result<(), String> {
        use nix::sched::sched_setaffinity;
        use nix::unistd::Pid;
        sched_setaffinity(Pid::from_raw(0), &self.allowed).map_err(|e| e.to_string())
    }
}

#[cfg(not(target_os = "linux"))]
impl Cpus {
    pub(crate) fn allowed() -> Result<Cpus, String> {
        Err("`--pin-workers` is supported on Linux only".to_owned())
    }

    fn pin_current(&self, _cpu: usize) -> Result<(), String> {
        Err("not supported here".to_owned())
    }

    fn widen_current(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Cpus {
    /// The CPU ids, in order.
    pub(crate) fn ids(&self) -> &[usize] {
        &self.ids
    }

    /// A hook for the runtime's `on_thread_start`: every thread the runtime
    /// starts may run on every allowed CPU, whatever the thread that
    /// started it was pinned to.
    pub(crate) fn widen_on_start(&self) -> impl Fn() + Send + Sync + 'static {
        let cpus = self.clone();
        move || {
            if let Err(why) = cpus.widen_current() {
                eprintln!("writ: cannot widen a runtime thread to every CPU: {why}");
            }
        }
    }

    /// A hook for the runtime's `on_thread_park`: the first time a thread
    /// parks, it takes the next CPU and pins itself there. Only the
    /// runtime's workers park through the scheduler (threads of the
    /// blocking pool never do), so only workers are pinned; each does so
    /// before its first idle wait, which at start-up is before it serves
    /// anything.
    pub(crate) fn pin_on_first_park(&self) -> impl Fn() + Send + Sync + 'static {
        thread_local! {
            static PINNED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        let cpus = self.clone();
        let next = AtomicUsize::new(0);
        move || {
            if PINNED.with(|pinned| pinned.replace(true)) {
                return;
            }
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(cpu) = cpu_for(&cpus.ids, index) else {
                return;
            };
            if let Err(why) = cpus.pin_current(cpu) {
                eprintln!("writ: cannot pin worker {index} to CPU {cpu}, it runs unpinned: {why}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_take_the_allowed_cpus_in_turn() {
        let taken: Vec<usize> = (0..5).filter_map(|i| cpu_for(&[2, 5], i)).collect();
        assert_eq!(taken, [2, 5, 2, 5, 2]);
        assert!(cpu_for(&[], 0).is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn workers_pin_to_the_cpus_in_turn_and_their_children_widen_back() {
        use std::sync::Arc;
        let cpus = Cpus::allowed().expect("the allowed CPUs");
        let pin = Arc::new(cpus.pin_on_first_park());
        let widen = Arc::new(cpus.widen_on_start());
        let on_cpus = || Cpus::allowed().expect("read back").ids().to_vec();
        let worker = |pin: Arc<dyn Fn() + Send + Sync>, widen: Arc<dyn Fn() + Send + Sync>| {
            std::thread::spawn(move || {
                pin();
                pin(); // a second park changes nothing
                let pinned = on_cpus();
                let child = std::thread::spawn(move || {
                    let inherited = on_cpus();
                    widen();
                    (inherited, on_cpus())
                })
                .join()
                .expect("child thread");
                (pinned, child.0, child.1)
            })
            .join()
            .expect("worker thread")
        };
        let ids = cpus.ids();
        for index in 0..2 {
            let (pinned, inherited, widened) = worker(pin.clone(), widen.clone());
            let cpu = cpu_for(ids, index).expect("a CPU");
            assert_eq!(pinned, [cpu], "worker {index} runs on its CPU only");
            assert_eq!(inherited, [cpu], "a thread starts where its parent runs");
            assert_eq!(widened, ids, "and widens back to every CPU");
        }
    }
}
