//! The server's budget for the linear memory of all plugin instances
//! together (`plugins_memory_bytes_max`): each instance reserves what it
//! grows and gives it back when it is dropped, so instances × shards can
//! never take the box's memory, whatever each one's own limit.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a plugin's memory may not grow.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MemoryRefusal {
    /// Past the instance's own limit: the plugin's fault.
    #[error("memory_bytes_max ({memory_bytes_max} bytes) reached")]
    InstanceLimit { memory_bytes_max: u64 },
    /// The server's budget for all instances is taken: nobody's fault; the
    /// worker waits for memory.
    #[error("plugins_memory_bytes_max ({plugins_memory_bytes_max} bytes) reached")]
    ServerBudget { plugins_memory_bytes_max: u64 },
}

#[derive(Debug)]
pub struct MemoryBudget {
    bytes_max: u64,
    reserved: AtomicU64,
}

impl MemoryBudget {
    pub fn new(bytes_max: u64) -> Self {
        Self {
            bytes_max,
            reserved: AtomicU64::new(0),
        }
    }

    /// Reserves `bytes`, or refuses when that would pass the budget.
    pub fn reserve(&self, bytes: u64) -> Result<(), MemoryRefusal> {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |reserved| {
                reserved
                    .checked_add(bytes)
                    .filter(|total| *total <= self.bytes_max)
            })
            .map(drop)
            .map_err(|_| MemoryRefusal::ServerBudget {
                plugins_memory_bytes_max: self.bytes_max,
            })
    }

    pub fn release(&self, bytes: u64) {
        self.reserved.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes reserved by live instances.
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_budget_and_come_back() {
        let budget = MemoryBudget::new(100);
        budget.reserve(60).expect("fits");
        assert!(matches!(
            budget.reserve(41),
            Err(MemoryRefusal::ServerBudget {
                plugins_memory_bytes_max: 100
            })
        ));
        budget.reserve(40).expect("fits exactly");
        budget.release(60);
        assert_eq!(budget.reserved_bytes(), 40);
        budget.reserve(60).expect("fits again");
    }
}
