//! Group commit of directory fsyncs: callers that renamed a file into a directory wait until a
//! directory fsync that started after their rename has completed. One fsync serves every rename
//! that happened before it started, so concurrent associations share the journal commit.

use std::fs::File;
use std::sync::{Condvar, Mutex};

#[derive(Debug, Default)]
struct State {
    requested: u64,
    completed: u64,
    running: bool,
}

/// Coalesces fsyncs of one directory.
#[derive(Debug, Default)]
pub(crate) struct DirSync {
    state: Mutex<State>,
    done: Condvar,
}

impl DirSync {
    /// Returns once a fsync of `dir` that started after this call has completed.
    pub(crate) fn sync(&self, dir: &File) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.requested += 1;
        let mine = st.requested;
        loop {
            if st.completed >= mine {
                return Ok(());
            }
            if st.running {
                st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.running = true;
            let target = st.requested;
            drop(st);
            let result = dir.sync_all();
            st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.running = false;
            if result.is_ok() {
                st.completed = target;
            }
            self.done.notify_all();
            result?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_callers_all_return() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ds = Arc::new(DirSync::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let ds = ds.clone();
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let f = File::open(path).expect("open dir");
                    for _ in 0..20 {
                        ds.sync(&f).expect("sync");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let st = ds.state.lock().expect("lock");
        assert_eq!(st.requested, 160);
        assert_eq!(st.completed, 160);
    }
}
