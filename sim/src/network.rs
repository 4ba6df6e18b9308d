//! The simulated network: per-link latency (base + jitter), loss, duplication, reordering (from
//! jitter), symmetric and one-way partitions, and optional bandwidth so big blocks take time.
//! It only decides when (and whether, and how often) a message arrives.

use crate::rng::SimRng;

#[derive(Clone, Debug)]
pub struct NetworkModel {
    pub nodes: usize,
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Extra jitter while a reorder fault is active (messages overtake each other).
    pub reorder_jitter_ms: u64,
    pub loss_per_million: u64,
    pub dup_per_million: u64,
    /// `blocked[from][to]`: the link drops everything (a partition, possibly one-way).
    pub blocked: Vec<Vec<bool>>,
    pub bandwidth_bytes_per_ms: Option<u64>,
    /// When each link is free again (bandwidth model): messages queue behind each other.
    link_busy_until_ms: Vec<Vec<u64>>,
}

impl NetworkModel {
    pub fn new(nodes: usize, latency_ms: u64, jitter_ms: u64, bandwidth_bytes_per_ms: Option<u64>) -> NetworkModel {
        NetworkModel {
            nodes,
            latency_ms,
            jitter_ms,
            reorder_jitter_ms: 0,
            loss_per_million: 0,
            dup_per_million: 0,
            blocked: vec![vec![false; nodes]; nodes],
            bandwidth_bytes_per_ms,
            link_busy_until_ms: vec![vec![0; nodes]; nodes],
        }
    }

    /// Arrival times of one message sent now: none if lost or blocked, two if duplicated.
    /// `ignores_partitions`: the link is an adversary's own (a split validator's), which
    /// partitions do not cut.
    pub fn arrivals(
        &mut self,
        rng: &mut SimRng,
        from: usize,
        to: usize,
        bytes: usize,
        now_ms: u64,
        ignores_partitions: bool,
    ) -> Vec<u64> {
        if (self.blocked[from][to] && !ignores_partitions) || rng.chance(self.loss_per_million) {
            return Vec::new();
        }
        let copies = if rng.chance(self.dup_per_million) { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                let mut departure_ms = now_ms;
                if let Some(bandwidth) = self.bandwidth_bytes_per_ms {
                    let start = departure_ms.max(self.link_busy_until_ms[from][to]);
                    let transmit_ms = (bytes as u64).div_ceil(bandwidth.max(1));
                    self.link_busy_until_ms[from][to] = start + transmit_ms;
                    departure_ms = start + transmit_ms;
                }
                departure_ms + self.latency_ms + rng.range(0, self.jitter_ms + self.reorder_jitter_ms)
            })
            .collect()
    }

    /// The longest a message that is delivered can take, excluding bandwidth queueing.
    pub fn max_delay_ms(&self) -> u64 {
        self.latency_ms + self.jitter_ms + self.reorder_jitter_ms
    }

    /// Cuts the nodes in `group` off from the others, in both directions or one.
    pub fn partition(&mut self, group: &[usize], one_way: bool) {
        for from in 0..self.nodes {
            for to in 0..self.nodes {
                let crosses = group.contains(&from) != group.contains(&to);
                // One-way: the group can still send out, but hears nothing from outside.
                self.blocked[from][to] = crosses && !(one_way && group.contains(&from));
            }
        }
    }

    pub fn heal(&mut self) {
        for row in self.blocked.iter_mut() {
            row.fill(false);
        }
    }

    pub fn is_partitioned(&self) -> bool {
        self.blocked.iter().flatten().any(|blocked| *blocked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_block_across_and_one_way_blocks_inbound_only() {
        let mut network = NetworkModel::new(4, 10, 0, None);
        let mut rng = SimRng::stream(1, "network");
        network.partition(&[0], false);
        assert!(network.arrivals(&mut rng, 0, 1, 100, 0, false).is_empty());
        assert!(network.arrivals(&mut rng, 1, 0, 100, 0, false).is_empty());
        assert_eq!(network.arrivals(&mut rng, 1, 2, 100, 0, false), vec![10]);
        network.partition(&[0], true);
        assert_eq!(network.arrivals(&mut rng, 0, 1, 100, 0, false), vec![10]);
        assert!(network.arrivals(&mut rng, 1, 0, 100, 0, false).is_empty());
        network.heal();
        assert!(!network.is_partitioned());
    }

    #[test]
    fn bandwidth_queues_messages_on_a_link() {
        let mut network = NetworkModel::new(2, 10, 0, Some(100));
        let mut rng = SimRng::stream(1, "network");
        assert_eq!(network.arrivals(&mut rng, 0, 1, 1_000, 0, false), vec![20]);
        assert_eq!(network.arrivals(&mut rng, 0, 1, 1_000, 0, false), vec![30], "the second waits for the first");
    }

    #[test]
    fn loss_and_duplication_follow_their_rates() {
        let mut network = NetworkModel::new(2, 10, 5, None);
        let mut rng = SimRng::stream(2, "network");
        network.loss_per_million = 250_000;
        network.dup_per_million = 100_000;
        let delivered: usize = (0..10_000).map(|_| network.arrivals(&mut rng, 0, 1, 10, 0, false).len()).sum();
        // Expect 10,000 * 0.75 * 1.1 = 8,250.
        assert!((7_900..8_600).contains(&delivered), "{delivered}");
    }
}
