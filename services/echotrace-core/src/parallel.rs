//! One batch split over scoped threads, for the stages whose items are independent of each other
//! (preparing posts, the first pass of their scans by meaning, the static encoder's texts).

/// `work` applied to every item, results in the items' order, with the items split into
/// contiguous parts over at most `threads` scoped threads of at least `min_per_thread` items each
/// (fewer items run on the calling thread). Each result depends on its item alone, so the split
/// changes nothing but the time. A panic in a thread is resumed on the caller.
pub fn map_in_order<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    min_per_thread: usize,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(items.len() / min_per_thread.max(1)).max(1);
    if threads == 1 {
        return items.into_iter().map(work).collect();
    }
    let share = items.len().div_ceil(threads);
    let mut items = items.into_iter();
    let parts: Vec<Vec<T>> = (0..threads).map(|_| items.by_ref().take(share).collect()).collect();
    let work = &work;
    std::thread::scope(|scope| {
        let workers: Vec<_> =
            parts.into_iter().map(|part| scope.spawn(move || part.into_iter().map(work).collect::<Vec<R>>())).collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_items_order_whatever_the_split() {
        let items: Vec<u64> = (0..103).collect();
        let expected: Vec<u64> = items.iter().map(|i| i * i).collect();
        for (threads, min_per_thread) in [(1, 1), (2, 1), (3, 10), (7, 16), (200, 1), (4, 0)] {
            assert_eq!(map_in_order(items.clone(), threads, min_per_thread, |i| i * i), expected, "{threads} threads");
        }
        assert!(map_in_order(Vec::<u64>::new(), 4, 1, |i| i).is_empty());
    }

    #[test]
    fn too_few_items_for_a_second_thread_stay_on_the_caller() {
        let caller = std::thread::current().id();
        let ran_on = map_in_order(vec![(); 15], 2, 8, |_| std::thread::current().id());
        assert!(ran_on.iter().all(|id| *id == caller));
        let ran_on = map_in_order(vec![(); 16], 2, 8, |_| std::thread::current().id());
        assert!(ran_on.iter().all(|id| *id != caller), "two parts of 8, each on a thread of its own");
    }

    #[test]
    #[should_panic(expected = "item 5")]
    fn a_panic_in_a_thread_reaches_the_caller() {
        map_in_order((0..10).collect(), 2, 1, |i: i32| if i == 5 { panic!("item 5") } else { i });
    }
}
