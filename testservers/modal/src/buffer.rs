//! An append-only byte buffer that readers follow by offset, for exec output.

use std::sync::Mutex;

use tokio::sync::watch;

/// Bytes an exec wrote to one stream so far, and whether the stream is closed.
#[derive(Debug)]
pub(crate) struct OutputBuffer {
    data: Mutex<Vec<u8>>,
    /// Length and closed flag, so that readers can wait for a change.
    progress: watch::Sender<(usize, bool)>,
}

impl OutputBuffer {
    pub(crate) fn new() -> Self {
        OutputBuffer {
            data: Mutex::new(Vec::new()),
            progress: watch::channel((0, false)).0,
        }
    }

    /// Appends `bytes` and wakes readers.
    pub(crate) fn append(&self, bytes: &[u8]) {
        let mut data = self.data.lock().unwrap_or_else(|p| p.into_inner());
        data.extend_from_slice(bytes);
        let len = data.len();
        self.progress.send_modify(|progress| progress.0 = len);
    }

    /// Marks the stream as closed: no byte follows.
    pub(crate) fn close(&self) {
        self.progress.send_modify(|progress| progress.1 = true);
    }

    /// Returns the number of bytes so far.
    pub(crate) fn len(&self) -> usize {
        self.progress.borrow().0
    }

    /// Returns up to `max` bytes from `offset`, and true when the stream is closed
    /// and nothing follows them.
    pub(crate) fn read(&self, offset: usize, max: usize) -> (Vec<u8>, bool) {
        let closed = self.progress.borrow().1;
        let data = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let start = offset.min(data.len());
        let end = start.saturating_add(max).min(data.len());
        (data[start..end].to_vec(), closed && end == data.len())
    }

    /// Returns a receiver that changes whenever bytes arrive or the stream closes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<(usize, bool)> {
        self.progress.subscribe()
    }
}
