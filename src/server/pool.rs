//! Per-thread pool of read/write buffers.
//!
//! A connection borrows a buffer to read into and gives it back as soon as it holds no partial
//! data, so idle connections hold none; writes borrow one for the duration of the write. The
//! pool keeps at most `pooled_max` idle buffers and drops buffers that grew far past the
//! standard size (a large stanza), so its memory stays bounded. No locks: one pool per thread.

use crate::metrics::Metrics;

pub struct BufferPool {
    free: Vec<Vec<u8>>,
    buffer_bytes: usize,
    pooled_max: usize,
    in_use: usize,
    metrics: &'static Metrics,
}

impl BufferPool {
    pub fn new(buffer_bytes: usize, pooled_max: usize, metrics: &'static Metrics) -> BufferPool {
        metrics.pool_buffers_capacity.increment(pooled_max as f64);
        BufferPool {
            free: Vec::new(),
            buffer_bytes,
            pooled_max,
            in_use: 0,
            metrics,
        }
    }

    /// An empty buffer with at least `buffer_bytes` of capacity.
    pub fn take(&mut self) -> Vec<u8> {
        self.in_use += 1;
        self.metrics.pool_buffers_in_use.increment(1.0);
        match self.free.pop() {
            Some(buffer) => {
                self.metrics.pool_buffers_free.decrement(1.0);
                buffer
            }
            None => {
                self.metrics.pool_exhausted.increment(1);
                Vec::with_capacity(self.buffer_bytes)
            }
        }
    }

    /// Returns a buffer taken from this pool.
    pub fn give(&mut self, mut buffer: Vec<u8>) {
        debug_assert!(self.in_use > 0);
        self.in_use = self.in_use.saturating_sub(1);
        self.metrics.pool_buffers_in_use.decrement(1.0);
        buffer.clear();
        let standard = (self.buffer_bytes..=2 * self.buffer_bytes).contains(&buffer.capacity());
        if standard && self.free.len() < self.pooled_max {
            self.free.push(buffer);
            self.metrics.pool_buffers_free.increment(1.0);
        }
    }

    /// A buffer taken from this pool will not come back (an abandoned write still owns it).
    pub fn forget_one(&mut self) {
        self.in_use = self.in_use.saturating_sub(1);
        self.metrics.pool_buffers_in_use.decrement(1.0);
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_and_stays_bounded() {
        let mut pool = BufferPool::new(1024, 2, crate::metrics::get());
        let a = pool.take();
        let b = pool.take();
        let c = pool.take();
        assert_eq!(pool.in_use(), 3);
        pool.give(a);
        pool.give(b);
        pool.give(c); // beyond pooled_max: dropped
        assert_eq!((pool.in_use(), pool.free()), (0, 2));
        let again = pool.take();
        assert!(again.capacity() >= 1024 && again.is_empty());
        let mut big = pool.take();
        big.reserve(1 << 20);
        pool.give(big); // grew past twice the standard size: dropped
        assert_eq!(pool.free(), 0);
        let again_ptr = again.as_ptr();
        pool.give(again); // a standard buffer is kept
        assert_eq!((pool.in_use(), pool.free()), (0, 1));
        let reused = pool.take();
        assert_eq!(reused.as_ptr(), again_ptr, "the same allocation comes back");
    }
}
