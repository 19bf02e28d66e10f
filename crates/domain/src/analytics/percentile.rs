//! Exact nearest-rank percentiles selected through value bands.
//!
//! Every positive value falls into one of [`BANDS`] bands: values under 16 have
//! a band each, larger ones share a band with the values of the same leading
//! four bits (eight bands per octave, so a band spans at most 1/8 of its lower
//! bound). Bands keep the order of their values, so the value of a given rank
//! lies in the band where the running count first reaches that rank, and it is
//! the `rank − below`-th smallest value of that band.
//!
//! A reader therefore needs the count of every band (small, and stored beside
//! the values) and the values of the few bands that hold a wanted rank — not
//! every value. The answers equal [`super::nearest_rank`] over all values.

use std::collections::BTreeMap;

/// Number of value bands; [`band`] is always below it.
pub const BANDS: usize = 240;

/// The band of a value (0 only for 0, which is never a sample).
pub fn band(value: u32) -> u8 {
    if value < 16 {
        return value as u8;
    }
    let octave = 31 - value.leading_zeros(); // 4..=31
    let shift = octave - 3;
    let lead = (value >> shift) & 7;
    (16 + (octave - 4) * 8 + lead) as u8
}

/// The smallest value of a band.
pub fn band_floor(band: u8) -> u32 {
    let band = u32::from(band);
    if band < 16 {
        return band;
    }
    let octave = (band - 16) / 8 + 4;
    let lead = (band - 16) % 8;
    (8 | lead) << (octave - 3)
}

/// The two series a percentile is asked of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerSeries<T> {
    /// Request latency, ms.
    pub latency: T,
    /// Time to first token, ms.
    pub ttft: T,
}

impl<T> PerSeries<T> {
    /// Series `index`: 0 is latency, any other TTFT.
    pub fn get(&self, index: usize) -> &T {
        if index == 0 {
            &self.latency
        } else {
            &self.ttft
        }
    }

    /// Series `index`, mutably: 0 is latency, any other TTFT.
    pub fn get_mut(&mut self, index: usize) -> &mut T {
        if index == 0 {
            &mut self.latency
        } else {
            &mut self.ttft
        }
    }
}

/// The percentiles a read selects (fractions in `(0, 1]`, nearest rank over the
/// positive values): over the whole scope, and per timeline bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PercentileAsk {
    /// Over every sample of the scope.
    pub overall: PerSeries<Vec<f64>>,
    /// Over the samples of each bucket of the request's timeline (the one bucket
    /// 0 without a timeline).
    pub per_bucket: PerSeries<Vec<f64>>,
}

impl PercentileAsk {
    /// Whether nothing is asked.
    pub fn is_empty(&self) -> bool {
        self.overall.latency.is_empty()
            && self.overall.ttft.is_empty()
            && self.per_bucket.latency.is_empty()
            && self.per_bucket.ttft.is_empty()
    }
}

/// The answers to a [`PercentileAsk`], in the order asked; `None` where a series
/// has no sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Percentiles {
    /// Over the whole scope.
    pub overall: PerSeries<Vec<Option<i64>>>,
    /// Per bucket start that holds samples.
    pub buckets: BTreeMap<i64, PerSeries<Vec<Option<i64>>>>,
}

/// The samples of one series: every band's count, and the values of at least the
/// bands [`Banded::needed`] names (more are allowed and ignored), kept by band so
/// a selection touches only the values of the band it looks in.
#[derive(Debug, Clone)]
pub struct Banded {
    /// Values per band.
    pub counts: Vec<u64>,
    /// The values kept, by band (each band's in any order).
    pub values: BTreeMap<u8, Vec<u32>>,
}

impl Default for Banded {
    fn default() -> Self {
        Banded {
            counts: vec![0; BANDS],
            values: BTreeMap::new(),
        }
    }
}

/// Where the value of one rank lies: its band and its 1-based rank in the band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// The band holding the value.
    pub band: u8,
    /// Its rank among that band's values, from 1.
    pub rank: u64,
}

/// The band and in-band rank of the nearest-rank `percentile` of `counts`; `None`
/// when every count is 0.
pub fn locate(counts: &[u64], percentile: f64) -> Option<Located> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((percentile * total as f64).ceil() as u64).clamp(1, total);
    let mut below = 0;
    for (band, count) in counts.iter().enumerate() {
        if below + count >= rank {
            return Some(Located {
                band: band as u8,
                rank: rank - below,
            });
        }
        below += count;
    }
    None
}

impl Banded {
    /// Adds one value, counted and kept.
    pub fn push(&mut self, value: u32) {
        if value > 0 {
            let band = band(value);
            self.counts[usize::from(band)] += 1;
            self.values.entry(band).or_default().push(value);
        }
    }

    /// Adds `count` values of `band` to the counts only.
    pub fn count(&mut self, band: u8, count: u64) {
        self.counts[usize::from(band)] += count;
    }

    /// Keeps `values`, all of `band`, already counted.
    pub fn keep(&mut self, band: u8, values: &[u32]) {
        if !values.is_empty() {
            self.values
                .entry(band)
                .or_default()
                .extend_from_slice(values);
        }
    }

    /// Adds another series' counts and values.
    pub fn merge(&mut self, other: &Banded) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.keep_all(other);
    }

    /// Keeps the values another series keeps, leaving the counts as they are (for
    /// values whose counts were added already).
    pub fn keep_all(&mut self, other: &Banded) {
        for (band, values) in &other.values {
            self.keep(*band, values);
        }
    }

    /// The bands whose values the `percentiles` need.
    pub fn needed(&self, percentiles: &[f64]) -> Vec<u8> {
        percentiles
            .iter()
            .filter_map(|p| locate(&self.counts, *p))
            .map(|located| located.band)
            .collect()
    }

    /// The nearest-rank value of each percentile, in order; see [`select_in`].
    pub fn select(&self, percentiles: &[f64]) -> Vec<Option<i64>> {
        select_in(&self.counts, &[self], percentiles)
    }
}

/// The nearest-rank value of each percentile of the values `counts` counts, in
/// order, looked up among the values `parts` keep, which must hold every value
/// of the bands that [`locate`] names (values of other bands are ignored). `None`
/// without samples, or when the values found of a needed band are not as many
/// as its count.
pub fn select_in(counts: &[u64], parts: &[&Banded], percentiles: &[f64]) -> Vec<Option<i64>> {
    let located: Vec<Option<Located>> = percentiles.iter().map(|p| locate(counts, *p)).collect();
    // The values of each located band, gathered from the parts that keep some.
    let mut gathered: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
    for found in located.iter().flatten() {
        gathered.entry(found.band).or_insert_with(|| {
            let mut values =
                Vec::with_capacity(usize::try_from(counts[usize::from(found.band)]).unwrap_or(0));
            for part in parts {
                if let Some(kept) = part.values.get(&found.band) {
                    values.extend_from_slice(kept);
                }
            }
            values
        });
    }
    located
        .iter()
        .map(|found| {
            let found = (*found)?;
            let in_band = gathered.get_mut(&found.band)?;
            // Every value of the band must be here, or the rank means nothing.
            if in_band.len() as u64 != counts[usize::from(found.band)] {
                return None;
            }
            let index = usize::try_from(found.rank - 1).ok()?;
            // Selecting reorders the band's values but keeps them all, so a second
            // rank in the same band is selected from the same values.
            let (_, value, _) = in_band.select_nth_unstable(index);
            Some(i64::from(*value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::nearest_rank;

    #[test]
    fn bands_are_ordered_and_their_floors_bound_them() {
        let mut previous = 0;
        for value in (1..70_000_u32).chain([u32::MAX / 3, u32::MAX - 1, u32::MAX]) {
            let b = band(value);
            assert!(b >= previous, "{value}");
            assert!(usize::from(b) < BANDS);
            assert!(band_floor(b) <= value, "{value}");
            if usize::from(b) + 1 < BANDS {
                assert!(value < band_floor(b + 1), "{value}");
            }
            assert_eq!(band(band_floor(b)), b);
            previous = b;
        }
        assert_eq!(band(u32::MAX), (BANDS - 1) as u8);
        // A band spans at most an eighth of its floor.
        assert_eq!(band_floor(band(1000) + 1) - band_floor(band(1000)), 64);
    }

    #[test]
    fn selection_through_bands_equals_nearest_rank_of_every_value() {
        let mut seed = 0x2545_f491_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let percentiles = [0.01, 0.5, 0.95, 0.99, 1.0];
        for size in [1_usize, 2, 3, 17, 100, 5_000] {
            let values: Vec<u32> = (0..size)
                .map(|_| match next() % 4 {
                    0 => (next() % 20) as u32,
                    1 => 200 + (next() % 3_000) as u32,
                    2 => 1_000,
                    _ => (next() % 600_000) as u32,
                })
                .collect();
            let mut all = Banded::default();
            for value in &values {
                all.push(*value);
            }
            // Keep only the needed bands' values, as a reader that skips the others.
            let needed = all.needed(&percentiles);
            let lean = Banded {
                counts: all.counts.clone(),
                values: all
                    .values
                    .iter()
                    .filter(|(band, _)| needed.contains(band))
                    .map(|(band, values)| (*band, values.clone()))
                    .collect(),
            };
            for (index, p) in percentiles.iter().enumerate() {
                let expected = nearest_rank(&mut values.clone(), *p);
                assert_eq!(all.select(&[*p])[0], expected, "size {size}, p {p}");
                assert_eq!(
                    lean.select(&percentiles)[index],
                    expected,
                    "size {size}, p {p}"
                );
            }
        }
        assert_eq!(Banded::default().select(&[0.5]), vec![None]);
    }

    #[test]
    fn several_ranks_in_one_band_are_each_exact() {
        // 1024..1152 is one band: every rank is selected from the same values.
        let values: Vec<u32> = (0..500).map(|i| 1024 + (i * 37) % 128).collect();
        let mut series = Banded::default();
        for value in &values {
            series.push(*value);
        }
        let percentiles = [0.9, 0.2, 0.5, 0.2, 1.0];
        let expected: Vec<Option<i64>> = percentiles
            .iter()
            .map(|p| nearest_rank(&mut values.clone(), *p))
            .collect();
        assert_eq!(series.select(&percentiles), expected);
    }

    #[test]
    fn merged_series_select_over_their_union() {
        let (mut a, mut b) = (Banded::default(), Banded::default());
        for value in [5, 900, 901, 40_000] {
            a.push(value);
        }
        for value in [0, 7, 902, 903] {
            b.push(value);
        }
        a.merge(&b);
        let mut union = vec![5, 900, 901, 40_000, 7, 902, 903];
        assert_eq!(a.select(&[0.5]), vec![nearest_rank(&mut union, 0.5)]);
        assert_eq!(a.counts.iter().sum::<u64>(), 7);
    }
}
