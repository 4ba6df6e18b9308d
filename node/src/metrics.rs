//! Live metrics: the machine's CPU busy share and network throughput, measured with sysinfo and
//! folded into the two per-mille figures the core reports (`Event::MetricsSampled`).
//!
//! - CPU: sysinfo's global usage since the previous refresh (all cores), averaged over the last
//!   `window` samples, as per-mille of the machine's capacity.
//! - Network: bytes received plus transmitted over every interface (loopback included, so a local
//!   testnet measures its own traffic) per second over the same window, as per-mille of the
//!   configured link capacity, capped at 1000.
//!
//! sysinfo needs at least 200 ms between CPU refreshes and its first reading is garbage
//! (DESIGN.md): the first call to [`Sampler::sample`] primes the counters and returns `None`.
//! Floating point is fine here: the figures become integers before they reach the core, and the
//! core decides only from the integers recorded on chain.

use std::collections::VecDeque;
use std::time::Instant;

/// One folded measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Sample {
    pub cpu_permille: u16,
    pub net_permille: u16,
    /// Bytes per second over all interfaces, received plus transmitted (window average).
    pub net_bytes_per_sec: u64,
}

/// One raw reading between two refreshes.
#[derive(Clone, Copy, Debug)]
struct Reading {
    cpu_permille: u16,
    net_bytes: u64,
    elapsed_ms: u64,
}

pub struct Sampler {
    system: sysinfo::System,
    networks: sysinfo::Networks,
    link_capacity_bytes_per_sec: u64,
    window: usize,
    readings: VecDeque<Reading>,
    last_refresh: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read system metrics: {0}")]
pub struct MetricsError(String);

impl Sampler {
    /// `link_capacity_mbit`: the network capacity the per-mille is measured against;
    /// `window`: how many samples the figures average over (at least 1).
    pub fn new(link_capacity_mbit: u64, window: usize) -> Result<Sampler, MetricsError> {
        let system = sysinfo::System::new().map_err(|error| MetricsError(error.to_string()))?;
        let networks = sysinfo::Networks::new().map_err(|error| MetricsError(error.to_string()))?;
        Ok(Sampler {
            system,
            networks,
            link_capacity_bytes_per_sec: link_capacity_mbit.saturating_mul(1_000_000 / 8).max(1),
            window: window.max(1),
            readings: VecDeque::new(),
            last_refresh: None,
        })
    }

    /// Refreshes the counters; returns the window's figures, or `None` on the first call.
    pub fn sample(&mut self) -> Option<Sample> {
        self.system.refresh_cpu_usage();
        self.networks.refresh(true);
        let now = Instant::now();
        // The first refresh only primes the counters.
        let previous = self.last_refresh.replace(now)?;
        let net_bytes = self.networks.values().map(|data| data.received().saturating_add(data.transmitted())).sum();
        self.readings.push_back(Reading {
            cpu_permille: cpu_permille(self.system.global_cpu_usage()),
            net_bytes,
            elapsed_ms: now.duration_since(previous).as_millis() as u64,
        });
        while self.readings.len() > self.window {
            self.readings.pop_front();
        }
        Some(fold(self.readings.iter().copied(), self.link_capacity_bytes_per_sec))
    }
}

/// sysinfo's usage in percent (0..=100, may overshoot a little) as per-mille.
fn cpu_permille(percent: f32) -> u16 {
    if !percent.is_finite() || percent <= 0.0 {
        return 0;
    }
    (percent * 10.0).round().min(1000.0) as u16
}

/// Averages a window of readings: CPU by time, network as total bytes over total time.
fn fold(readings: impl Iterator<Item = Reading> + Clone, link_capacity_bytes_per_sec: u64) -> Sample {
    let elapsed_ms: u64 = readings.clone().map(|reading| reading.elapsed_ms).sum();
    if elapsed_ms == 0 {
        return Sample::default();
    }
    let cpu_weighted: u64 = readings.clone().map(|reading| u64::from(reading.cpu_permille) * reading.elapsed_ms).sum();
    let bytes: u64 = readings.map(|reading| reading.net_bytes).sum();
    let net_bytes_per_sec = bytes.saturating_mul(1000) / elapsed_ms;
    let net_permille =
        (u128::from(net_bytes_per_sec) * 1000 / u128::from(link_capacity_bytes_per_sec.max(1))).min(1000);
    Sample {
        cpu_permille: (cpu_weighted / elapsed_ms).min(1000) as u16,
        net_permille: net_permille as u16,
        net_bytes_per_sec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(cpu_permille: u16, net_bytes: u64, elapsed_ms: u64) -> Reading {
        Reading { cpu_permille, net_bytes, elapsed_ms }
    }

    #[test]
    fn cpu_percent_becomes_bounded_permille() {
        assert_eq!(cpu_permille(0.0), 0);
        assert_eq!(cpu_permille(12.34), 123);
        assert_eq!(cpu_permille(100.0), 1000);
        assert_eq!(cpu_permille(104.0), 1000);
        assert_eq!(cpu_permille(f32::NAN), 0);
        assert_eq!(cpu_permille(-3.0), 0);
    }

    #[test]
    fn the_window_averages_cpu_by_time_and_network_by_bytes() {
        // 100 Mbit/s = 12.5 MB/s; 1.25 MB/s is 100 per-mille.
        let capacity = 12_500_000;
        let readings = [reading(200, 1_000_000, 1000), reading(600, 1_500_000, 1000)];
        let sample = fold(readings.iter().copied(), capacity);
        assert_eq!(sample.cpu_permille, 400);
        assert_eq!(sample.net_bytes_per_sec, 1_250_000);
        assert_eq!(sample.net_permille, 100);
        // Unequal intervals weigh by time.
        let readings = [reading(1000, 0, 3000), reading(0, 0, 1000)];
        assert_eq!(fold(readings.iter().copied(), capacity).cpu_permille, 750);
    }

    #[test]
    fn network_saturates_at_one_thousand_and_empty_windows_are_zero() {
        let readings = [reading(0, 100_000_000, 1000)];
        assert_eq!(fold(readings.iter().copied(), 12_500_000).net_permille, 1000);
        assert_eq!(fold(std::iter::empty(), 12_500_000), Sample::default());
    }

    #[test]
    fn the_first_sample_is_discarded_and_later_ones_are_in_range() {
        let mut sampler = Sampler::new(100, 3).unwrap();
        assert_eq!(sampler.sample(), None, "the first reading only primes the counters");
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let sample = sampler.sample().expect("a second sample");
        assert!(sample.cpu_permille <= 1000 && sample.net_permille <= 1000);
    }
}
