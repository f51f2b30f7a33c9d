//! Unit tests for the pool's dispatch and accounting with slots: no
//! process, no socket (a connection is only opened at a request's first
//! write, which these tests never make).

use super::*;

fn pool(max_requests: u64) -> (Arc<Pool>, mpsc::UnboundedReceiver<PoolEvent>) {
    let text = format!(
        "[www]\nlisten = 127.0.0.1:9\nuser = nobody\ncommand = /bin/true\n\
         pm = static\npm.max_children = 2\npm.max_requests = {max_requests}\n"
    );
    let config = crate::config::parse_str(
        &text,
        std::path::Path::new("test.conf"),
        &crate::config::LoadOptions::default(),
    )
    .expect("config");
    Pool::new(Arc::new(config.pools[0].clone())).expect("pool")
}

/// Worker `id` of generation 1 on the scoreboard and ready with `slots`.
fn ready(pool: &Pool, id: WorkerId, slots: usize) {
    pool.add_worker(id, WorkerEntry::new(1000 + id as u32, 1, 1));
    let socket: Arc<std::path::Path> = Arc::from(std::path::Path::new("/nonexistent"));
    let conns = (0..slots)
        .map(|_| WorkerConn::new(socket.clone(), None))
        .collect();
    pool.worker_ready(id, conns);
}

fn info() -> BusyInfo {
    BusyInfo::get("/")
}

fn lease(pool: &Arc<Pool>) -> Lease {
    match pool.acquire(info(), 8) {
        Ok(Ok(lease)) => lease,
        other => panic!("expected a free slot, got {:?}", other.map(|r| r.is_ok())),
    }
}

fn retired(events: &mut mpsc::UnboundedReceiver<PoolEvent>) -> Vec<(WorkerId, RetireReason)> {
    std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|ev| match ev {
            PoolEvent::Retire { id, reason } => Some((id, reason)),
            PoolEvent::Demand => None,
        })
        .collect()
}

#[test]
fn requests_fill_a_workers_slots_and_never_more() {
    let (pool, _events) = pool(0);
    ready(&pool, 1, 2);
    let a = lease(&pool);
    let b = lease(&pool);
    assert_eq!((a.id, a.slot, b.id, b.slot), (1, 0, 1, 1));
    // Both slots busy: the third request waits.
    let Ok(Err(mut waiting)) = pool.acquire(info(), 8) else {
        panic!("queued");
    };
    let snap = pool.snapshot();
    assert_eq!(snap.workers[0].1.busy.len(), 2);
    assert_eq!(snap.queue_len, 1);
    pool.release(a, Outcome::Clean);
    let c = waiting
        .try_recv()
        .expect("the freed slot went to the waiter");
    assert_eq!((c.id, c.slot), (1, 0));
    pool.release(b, Outcome::Clean);
    pool.release(c, Outcome::Clean);
    assert!(pool.is_idle(1));
    assert_eq!(pool.idle_count(), 2);
    assert_eq!(pool.snapshot().workers[0].1.requests, 3);
}

#[test]
fn the_older_worker_is_filled_first() {
    let (pool, _events) = pool(0);
    ready(&pool, 2, 1);
    ready(&pool, 1, 2);
    let order: Vec<(WorkerId, u32)> = (0..3)
        .map(|_| lease(&pool))
        .map(|l| {
            let at = (l.id, l.slot);
            std::mem::forget(l);
            at
        })
        .collect();
    assert_eq!(order, [(1, 0), (1, 1), (2, 0)]);
}

#[test]
fn a_retiring_worker_stops_when_its_last_request_ends() {
    let (pool, mut events) = pool(0);
    ready(&pool, 1, 3);
    let a = lease(&pool);
    let b = lease(&pool);
    assert!(!pool.retire(1), "busy: stopped later");
    assert_eq!(pool.idle_count(), 0, "its free slot left service");
    pool.release(a, Outcome::Clean);
    assert!(retired(&mut events).is_empty(), "one request still runs");
    pool.release(b, Outcome::Clean);
    assert_eq!(retired(&mut events), [(1, RetireReason::Retiring)]);
}

#[test]
fn a_broken_slot_retires_the_worker_after_its_other_requests() {
    let (pool, mut events) = pool(0);
    ready(&pool, 1, 2);
    let a = lease(&pool);
    let b = lease(&pool);
    pool.release(a, Outcome::Broken);
    assert!(retired(&mut events).is_empty());
    assert!(
        matches!(pool.acquire(info(), 8), Ok(Err(_))),
        "no new request"
    );
    pool.release(b, Outcome::Clean);
    assert_eq!(retired(&mut events), [(1, RetireReason::Retiring)]);
}

#[test]
fn a_stuck_request_stops_the_worker_at_once() {
    let (pool, mut events) = pool(0);
    ready(&pool, 1, 2);
    let a = lease(&pool);
    let _b = lease(&pool);
    pool.release(a, Outcome::Terminated);
    assert_eq!(retired(&mut events), [(1, RetireReason::Terminated)]);
}

#[test]
fn max_requests_counts_the_workers_requests_across_slots() {
    let (pool, mut events) = pool(3);
    ready(&pool, 1, 2);
    for _ in 0..2 {
        let l = lease(&pool);
        pool.release(l, Outcome::Clean);
    }
    let a = lease(&pool);
    let b = lease(&pool);
    pool.release(a, Outcome::Clean);
    assert!(
        retired(&mut events).is_empty(),
        "the other slot still serves"
    );
    pool.release(b, Outcome::Clean);
    assert_eq!(retired(&mut events), [(1, RetireReason::Retiring)]);
}

#[test]
fn an_exited_workers_slots_leave_the_count() {
    let (pool, _events) = pool(0);
    ready(&pool, 1, 2);
    let a = lease(&pool);
    let entry = pool.remove_worker(1).expect("on the scoreboard");
    assert_eq!(entry.busy.len(), 1);
    assert_eq!(pool.idle_count(), 0);
    // Its lease comes back to nobody.
    pool.release(a, Outcome::Clean);
    assert_eq!(pool.lock().busy, 0);
}

#[test]
fn an_unused_lease_frees_its_slot_uncounted() {
    let (pool, _events) = pool(0);
    ready(&pool, 1, 1);
    let a = lease(&pool);
    pool.return_unused(a);
    assert!(pool.is_idle(1));
    assert_eq!(pool.snapshot().workers[0].1.requests, 0);
    assert_eq!(pool.lock().busy, 0);
}
