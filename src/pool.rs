//! One worker pool: N threads take work items, the first failure stops the rest,
//! results come back in the items' order.
//!
//! Hashing blobs (verify), copying blobs into a bundle file (create), packing NARs
//! (create) and decoding NARs (import into a binary cache) are all "many independent
//! items, a few cores, stop at the first error", and each once had its own
//! hand-written loop of threads, counters and mutexes, each with its own idea of
//! which error wins. Here is the one: [`map`] over a list with scoped threads (items
//! and state may borrow from the caller), and [`Queue`] for items that arrive while
//! something else goes on (NARs decoded while the bundle keeps streaming), on threads
//! of its own.
//!
//! Both report, of the items that failed, the one that comes first in the items'
//! order (not the one that failed first in time), so a damaged bundle names the same
//! entry however the threads were scheduled. Only `std` threads are used, so the
//! pure format code (`bundle/`) may use it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// The number of threads CPU-bound work uses by default: one per core.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs `work` on every item with up to `jobs` threads and returns the results in
/// item order. Each thread first makes its own state with `init` (a buffer, a file
/// handle, a compressor) and keeps it for every item it takes. Once an item (or an
/// `init`) fails, no thread takes another item; the error returned is that of the
/// failed item earliest in `items` (an `init` error when no item failed).
pub fn map<T, S, R, E>(
    jobs: usize,
    items: &[T],
    init: impl Fn() -> Result<S, E> + Sync,
    work: impl Fn(&mut S, &T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let schedule: Vec<usize> = (0..items.len()).collect();
    map_scheduled(jobs, items, &schedule, init, work)
}

/// [`map`], with the items taken in the order of `schedule` (indices into `items`,
/// each once), for example largest first so that no thread is left with one big item
/// at the end. Results and the error reported are still in item order.
pub fn map_scheduled<T, S, R, E>(
    jobs: usize,
    items: &[T],
    schedule: &[usize],
    init: impl Fn() -> Result<S, E> + Sync,
    work: impl Fn(&mut S, &T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let slots: Mutex<Vec<Option<Result<R, E>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    let init_error: Mutex<Option<E>> = Mutex::new(None);
    let workers = jobs.clamp(1, schedule.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers.min(schedule.len()) {
            s.spawn(|| {
                let mut state = match init() {
                    Ok(state) => state,
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        lock(&init_error).get_or_insert(e);
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    let Some(&i) = schedule.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    let r = work(&mut state, &items[i]);
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    lock(&slots)[i] = Some(r);
                }
            });
        }
    });
    let slots = slots.into_inner().unwrap_or_else(|p| p.into_inner());
    collect(
        slots,
        init_error.into_inner().unwrap_or_else(|p| p.into_inner()),
    )
}

/// Results in order, or the first error in order; `fallback` when an item has no
/// result only because the work stopped (then there is an error somewhere).
fn collect<R, E>(slots: Vec<Option<Result<R, E>>>, fallback: Option<E>) -> Result<Vec<R>, E> {
    let mut out = Vec::with_capacity(slots.len());
    let mut missing = false;
    for slot in slots {
        match slot {
            Some(Ok(r)) => out.push(r),
            Some(Err(e)) => return Err(e),
            None => missing = true,
        }
    }
    match fallback {
        Some(e) => Err(e),
        None if missing => unreachable!("an item was skipped although nothing failed"),
        None => Ok(out),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Work that arrives over time: [`Queue::submit`] hands an item to one of N threads
/// of the queue's own and returns at once; [`Queue::finish`] waits for all of them
/// and returns the results in submission order. As with [`map`], once an item fails
/// the items not yet started are dropped, and the error reported is that of the
/// failed item submitted first.
pub struct Queue<J, R, E> {
    jobs: Option<mpsc::Sender<(usize, J)>>,
    results: mpsc::Receiver<(usize, Result<R, E>)>,
    workers: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    submitted: usize,
}

impl<J, R, E> Queue<J, R, E>
where
    J: Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    /// Starts `threads` threads named `name` that run `work` on each item.
    pub fn start(
        threads: usize,
        name: &str,
        work: impl Fn(J) -> Result<R, E> + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let (jobs, job_rx) = mpsc::channel::<(usize, J)>();
        let (result_tx, results) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let work = Arc::new(work);
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for _ in 0..threads.max(1) {
            let (job_rx, result_tx, work, stop) = (
                job_rx.clone(),
                result_tx.clone(),
                work.clone(),
                stop.clone(),
            );
            workers.push(
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || loop {
                        let job = lock(&job_rx).recv();
                        let Ok((i, job)) = job else { return };
                        if stop.load(Ordering::Relaxed) {
                            continue; // drain what is queued without running it
                        }
                        let r = work(job);
                        if r.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if result_tx.send((i, r)).is_err() {
                            return;
                        }
                    })?,
            );
        }
        Ok(Queue {
            jobs: Some(jobs),
            results,
            workers,
            stop,
            submitted: 0,
        })
    }

    /// Queues an item.
    pub fn submit(&mut self, job: J) {
        if let Some(j) = &self.jobs {
            let _ = j.send((self.submitted, job));
        }
        self.submitted += 1;
    }

    /// Whether an item failed already (the rest are being dropped).
    pub fn failed(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Waits for every item; their results in submission order, or the first error
    /// in that order. A panic in `work` is a bug and is passed on as one.
    pub fn finish(mut self) -> Result<Vec<R>, E> {
        drop(self.jobs.take());
        for w in self.workers.drain(..) {
            if let Err(panic) = w.join() {
                std::panic::resume_unwind(panic);
            }
        }
        let mut slots: Vec<Option<Result<R, E>>> = (0..self.submitted).map(|_| None).collect();
        for (i, r) in self.results.try_iter() {
            slots[i] = Some(r);
        }
        collect(slots, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_come_in_item_order_with_state_per_thread() {
        let items: Vec<u64> = (0..200).collect();
        let inits = AtomicUsize::new(0);
        let out = map(
            4,
            &items,
            || {
                inits.fetch_add(1, Ordering::Relaxed);
                Ok::<_, String>(0u64)
            },
            |seen, x| {
                *seen += 1;
                Ok(x * 2)
            },
        )
        .unwrap();
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert!(inits.load(Ordering::Relaxed) <= 4);
        // No items, no threads, no error.
        let none: Vec<u8> = map(4, &[] as &[u8], || Ok::<_, ()>(()), |_, x| Ok(*x)).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn the_first_failure_in_item_order_wins_and_stops_the_rest() {
        let items: Vec<usize> = (0..1000).collect();
        let ran = AtomicUsize::new(0);
        // Largest (here: last) first, on two threads: 999 and 998 run together and
        // both fail, 999 sooner; 998 is reported, it comes first in item order. The
        // items after them in the schedule are never run.
        let schedule: Vec<usize> = (0..items.len()).rev().collect();
        let started_998 = AtomicBool::new(false);
        let e = map_scheduled(
            2,
            &items,
            &schedule,
            || Ok(()),
            |_, &i| {
                ran.fetch_add(1, Ordering::Relaxed);
                match i {
                    999 => {
                        while !started_998.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(i)
                    }
                    998 => {
                        started_998.store(true, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        Err(i)
                    }
                    _ => Ok(i),
                }
            },
        )
        .unwrap_err();
        assert_eq!(e, 998);
        assert!(ran.load(Ordering::Relaxed) <= 4, "{ran:?}");
        let e = map(
            3,
            &items,
            || Ok(()),
            |_, &i| if i % 7 == 3 { Err(i) } else { Ok(i) },
        )
        .unwrap_err();
        assert_eq!(e, 3);
        let e = map(2, &items, || Err::<(), _>("no state"), |_, &i| Ok(i)).unwrap_err();
        assert_eq!(e, "no state");
    }

    #[test]
    fn a_queue_runs_while_items_arrive() {
        let mut q = Queue::start(3, "test-queue", |x: u32| Ok::<_, u32>(x + 1)).unwrap();
        for x in 0..50 {
            q.submit(x);
        }
        assert_eq!(q.finish().unwrap(), (1..51).collect::<Vec<_>>());
        let mut q = Queue::start(
            2,
            "test-queue",
            |x: u32| {
                if x >= 5 {
                    Err(x)
                } else {
                    Ok(x)
                }
            },
        )
        .unwrap();
        for x in 0..20 {
            q.submit(x);
        }
        assert_eq!(q.finish().unwrap_err(), 5);
        let q: Queue<u8, u8, ()> = Queue::start(1, "test-queue", Ok).unwrap();
        assert!(q.finish().unwrap().is_empty());
    }
}
