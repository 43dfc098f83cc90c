//! Per-key budgets over a sliding window, kept in this process: how many fetches a client-id host
//! may cost us, how many wrong user codes a signed-in user may type. A process-local count is
//! enough for both: each bounds the damage one process can be made to do or to leak.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Budget {
    window: Duration,
    spent: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Budget {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            spent: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one unit of `key`'s budget; false (and nothing spent) when `limit` units were
    /// already spent within the window.
    pub fn spend(&self, key: &str, limit: usize) -> bool {
        let now = Instant::now();
        let mut spent = self.spent.lock().expect("budget lock");
        // Forget what fell out of the window, so the map holds only recently active keys.
        spent.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < self.window);
            !times.is_empty()
        });
        let times = spent.entry(key.to_owned()).or_default();
        if times.len() >= limit {
            return false;
        }
        times.push(now);
        true
    }

    /// Whether `key` could spend one more unit now.
    pub fn remaining(&self, key: &str, limit: usize) -> bool {
        let now = Instant::now();
        let spent = self.spent.lock().expect("budget lock");
        spent.get(key).map_or(0, |times| {
            times
                .iter()
                .filter(|t| now.duration_since(**t) < self.window)
                .count()
        }) < limit
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;
    use std::time::Duration;

    #[test]
    fn a_budget_is_spent_per_key_and_refills_after_the_window() {
        let budget = Budget::new(Duration::from_millis(50));
        assert!(budget.spend("a", 2));
        assert!(budget.spend("a", 2));
        assert!(!budget.spend("a", 2));
        assert!(!budget.remaining("a", 2));
        assert!(budget.spend("b", 2), "another key has its own budget");
        std::thread::sleep(Duration::from_millis(60));
        assert!(budget.remaining("a", 2));
        assert!(budget.spend("a", 2));
    }
}
