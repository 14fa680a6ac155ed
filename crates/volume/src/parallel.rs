//! A small work queue over std threads (no thread pool dependency): slices are decoded and
//! headers read on every available core, in any order, with results kept in input order; the
//! lung model's per-slice steps (`firstread_lungs`) share it.

use std::sync::{Mutex, PoisonError};
use std::thread;

/// Most threads used; decoding is CPU-bound and the worker machines are small.
const MAX_THREADS: usize = 8;

/// Applies `f` to every item on up to `available_parallelism` threads (at most 8), each thread
/// taking the next item as it is free; results in input order.
pub fn map_in_parallel<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    let threads = thread::available_parallelism().map_or(1, |p| p.get()).min(MAX_THREADS).min(n);
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = Mutex::new(items.into_iter().enumerate());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    let f = &f;
    thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
                let Some((i, item)) = next else { break };
                let result = f(item);
                if let Some(slot) = results.lock().unwrap_or_else(PoisonError::into_inner).get_mut(i) {
                    *slot = Some(result);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(PoisonError::into_inner).into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_input_order() {
        let out = super::map_in_parallel((0..100).collect(), |i: i32| i * 2);
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    }
}
