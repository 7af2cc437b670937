//! A bounded parallel map over a slice: for work that waits on I/O (health checks, stops), or
//! a thread per core for work that does not (reading many small files).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this many items, work that does not wait is done on the calling thread: a thread
/// costs more than reading a few files.
const CPU_INLINE_BELOW: usize = 64;

/// How many threads CPU work over `items` items should use: one per core for many, the calling
/// thread alone for few.
pub fn cores_for(items: usize) -> usize {
    match items < CPU_INLINE_BELOW {
        true => 1,
        false => std::thread::available_parallelism().map_or(2, |n| n.get()),
    }
}

/// `f` over every item on at most `limit` threads, the calling one included; results in the
/// items' order. A thread the OS refuses (out of processes for a moment) is done without: the
/// others, or the calling thread alone, do its share.
pub fn map<T: Sync, R: Send>(items: &[T], limit: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = limit.clamp(1, items.len().max(1));
    if workers == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break done };
            done.push((i, f(item)));
        }
    };
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let helpers: Vec<_> =
            (1..workers).map_while(|_| std::thread::Builder::new().spawn_scoped(s, work).ok()).collect();
        let mut results = work();
        for helper in helpers {
            results.extend(helper.join().expect("a worker thread panicked"));
        }
        results
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order() {
        let items: Vec<u32> = (0..100).collect();
        assert_eq!(super::map(&items, 7, |x| x * 2), items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert_eq!(super::map(&items, 1, |x| x * 2), items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert!(super::map(&[] as &[u32], 4, |x| *x).is_empty());
    }

    #[test]
    fn few_items_stay_on_the_calling_thread() {
        assert_eq!(super::cores_for(2), 1);
        assert!(super::cores_for(1000) >= 1);
    }
}
