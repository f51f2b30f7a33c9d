//! Client threads for load during a test: each calls its request function
//! in a loop until stopped, `max_time` has passed or it made `max_count`
//! requests, and every sample is kept for the test to read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub struct Load<S> {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<S>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl<S: Clone + Send + 'static> Load<S> {
    /// One thread per client. A client's function makes one request and
    /// returns its sample and whether it failed; after a failure the
    /// client waits 5 ms, so a refusing listener is not hammered.
    pub fn spawn<F>(clients: Vec<F>, max_time: Duration, max_count: usize) -> Load<S>
    where
        F: FnMut() -> (S, bool) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let until = Instant::now() + max_time;
        let threads = clients
            .into_iter()
            .map(|mut request| {
                let (stop, samples) = (stop.clone(), samples.clone());
                thread::spawn(move || {
                    for _ in 0..max_count {
                        if stop.load(Ordering::SeqCst) || Instant::now() > until {
                            break;
                        }
                        let (sample, failed) = request();
                        samples.lock().unwrap().push(sample);
                        if failed {
                            thread::sleep(Duration::from_millis(5));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            threads,
        }
    }

    /// The samples so far.
    pub fn snapshot(&self) -> Vec<S> {
        self.samples.lock().unwrap().clone()
    }

    /// Stops the clients, waits for their last requests, returns every
    /// sample.
    pub fn finish(mut self) -> Vec<S> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().expect("client thread");
        }
        self.snapshot()
    }
}

impl<S> Drop for Load<S> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
