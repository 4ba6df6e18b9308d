//! Fake CPU and network usage per node, in per-mille: a profile (fast or slow machine), a
//! random walk around it, occasional load spikes, optionally network usage derived from the
//! bytes the node really sent in the simulation; and metric faults (stale, flapping, extreme).

use crate::rng::SimRng;

/// How often each node samples its metrics (the real node samples every 0.5-1 s).
pub const SAMPLE_INTERVAL_MS: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricFault {
    /// The node's metrics stop updating: its reports keep the last values.
    Stale,
    /// Alternates between idle and saturated every sample: the ranking flaps.
    Flapping,
    /// Pinned to the extreme (1000, 1000).
    Extreme,
    /// CPU and network pinned at this per-mille (scenario files: `metrics N fixed=V`).
    Fixed(u16),
}

#[derive(Clone, Debug)]
pub struct MetricsModel {
    base_cpu: u64,
    base_net: u64,
    cpu: u64,
    net: u64,
    spike_until_ms: u64,
    pub fault: Option<MetricFault>,
    flap: bool,
}

impl MetricsModel {
    /// A fast machine (low usage) or a slow one (high usage), chosen by the metrics stream.
    pub fn profile(rng: &mut SimRng) -> MetricsModel {
        let slow = rng.chance(300_000);
        let (base_cpu, base_net) =
            if slow { (rng.range(400, 800), rng.range(300, 700)) } else { (rng.range(20, 250), rng.range(10, 200)) };
        MetricsModel { base_cpu, base_net, cpu: base_cpu, net: base_net, spike_until_ms: 0, fault: None, flap: false }
    }

    /// The next sample, or None when the metrics are stale (no new sample is taken).
    /// `traffic_per_mille` replaces the network figure when the traffic mode is on.
    pub fn sample(&mut self, rng: &mut SimRng, now_ms: u64, traffic_per_mille: Option<u64>) -> Option<(u16, u16)> {
        match self.fault {
            Some(MetricFault::Stale) => return None,
            Some(MetricFault::Extreme) => return Some((1000, 1000)),
            Some(MetricFault::Fixed(value)) => return Some((value, value)),
            Some(MetricFault::Flapping) => {
                self.flap = !self.flap;
                return Some(if self.flap { (0, 0) } else { (1000, 1000) });
            }
            None => {}
        }
        // A random walk that drifts back toward the profile.
        let walk = |value: u64, base: u64, rng: &mut SimRng| -> u64 {
            let step = rng.signed(40);
            let pull = (base as i64 - value as i64) / 4;
            (value as i64 + step + pull).clamp(0, 1000) as u64
        };
        self.cpu = walk(self.cpu, self.base_cpu, rng);
        self.net = walk(self.net, self.base_net, rng);
        if now_ms >= self.spike_until_ms && rng.chance(20_000) {
            self.spike_until_ms = now_ms + rng.range(2_000, 10_000);
        }
        let spike = if now_ms < self.spike_until_ms { 500 } else { 0 };
        let cpu = (self.cpu + spike).min(1000);
        let net = traffic_per_mille.unwrap_or(self.net).min(1000);
        Some((cpu as u16, net as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_stay_in_range_and_faults_behave() {
        let mut rng = SimRng::stream(3, "metrics");
        let mut model = MetricsModel::profile(&mut rng);
        for second in 0..1_000 {
            let (cpu, net) = model.sample(&mut rng, second * 1_000, None).expect("not stale");
            assert!(cpu <= 1000 && net <= 1000);
        }
        model.fault = Some(MetricFault::Stale);
        assert_eq!(model.sample(&mut rng, 0, None), None);
        model.fault = Some(MetricFault::Flapping);
        let first = model.sample(&mut rng, 0, None);
        assert_ne!(first, model.sample(&mut rng, 0, None));
        model.fault = Some(MetricFault::Extreme);
        assert_eq!(model.sample(&mut rng, 0, None), Some((1000, 1000)));
        model.fault = Some(MetricFault::Fixed(100));
        assert_eq!(model.sample(&mut rng, 0, None), Some((100, 100)));
    }
}
