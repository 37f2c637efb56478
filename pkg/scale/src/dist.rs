//! Random draws the generator needs: a Zipf–Mandelbrot law over ranks, and
//! weighted draws among a ring of recent items.

/// Ranks `0..n` with probability ∝ `1 / (rank + 1 + q)` (Zipf–Mandelbrot
/// with exponent 1), drawn by inverting the continuous law: O(1), one
/// `exp` per draw. `q` flattens the head: with `q = 50` over 2M ranks the
/// first takes ~0.2% of the draws and the top 1% of ranks about half.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u32,
    q: f64,
    log_span: f64,
}

impl Zipf {
    /// The law over `n` ranks (at least one) with head offset `q` (≥ 0).
    pub fn new(n: u32, q: f64) -> Zipf {
        let n = n.max(1);
        let q = q.max(0.0);
        Zipf {
            n,
            q,
            log_span: ((f64::from(n) + 0.5 + q) / (0.5 + q)).ln(),
        }
    }

    /// A rank in `0..n`.
    pub fn draw(&self, rng: &mut fastrand::Rng) -> u32 {
        let x = (0.5 + self.q) * (rng.f64() * self.log_span).exp() - self.q;
        // x is in [0.5, n + 0.5]: rank k = round(x) in 1..=n.
        let k = x.round().clamp(1.0, f64::from(self.n));
        k as u32 - 1
    }
}

/// A heavy-tailed weight ≥ 1 (Pareto with index 0.9, capped at 1e6): how
/// much attention an item gets. With an index below 1 a few items of any
/// window take a large share of it, as viral posts do.
pub fn pareto_weight(rng: &mut fastrand::Rng) -> f64 {
    let u = rng.f64().max(1e-12);
    u.powf(-1.0 / 0.9).min(1e6)
}

/// Weights of the last `len` items of a stream, in a ring of slots, with
/// draws proportional to weight over the whole ring or its newest part
/// (a Fenwick tree: O(log len) per insert and draw).
#[derive(Debug, Clone)]
pub struct WeightedRing {
    weights: Vec<f64>,
    tree: Vec<f64>,
    /// Items pushed so far (item `i` sits in slot `i % len`).
    pushed: u64,
    /// Inserts since the tree was last rebuilt (float drift).
    since_rebuild: usize,
}

impl WeightedRing {
    /// A ring of `len` slots (at least 1).
    pub fn new(len: usize) -> WeightedRing {
        let len = len.max(1);
        WeightedRing {
            weights: vec![0.0; len],
            tree: vec![0.0; len + 1],
            pushed: 0,
            since_rebuild: 0,
        }
    }

    fn len(&self) -> usize {
        self.weights.len()
    }

    /// Items the ring holds now.
    pub fn held(&self) -> u64 {
        self.pushed.min(self.len() as u64)
    }

    /// Push item number `pushed` with `weight`, evicting the oldest when full.
    pub fn push(&mut self, weight: f64) {
        let slot = (self.pushed % self.len() as u64) as usize;
        let delta = weight - self.weights[slot];
        self.weights[slot] = weight;
        self.add(slot, delta);
        self.pushed += 1;
        self.since_rebuild += 1;
        if self.since_rebuild >= self.len().max(4096) {
            self.rebuild();
        }
    }

    fn add(&mut self, slot: usize, delta: f64) {
        let mut i = slot + 1;
        while i < self.tree.len() {
            self.tree[i] += delta;
            i += i & i.wrapping_neg();
        }
    }

    fn rebuild(&mut self) {
        let n = self.len();
        self.tree.iter_mut().for_each(|t| *t = 0.0);
        for i in 1..=n {
            self.tree[i] += self.weights[i - 1];
            let parent = i + (i & i.wrapping_neg());
            if parent <= n {
                let v = self.tree[i];
                self.tree[parent] += v;
            }
        }
        self.since_rebuild = 0;
    }

    /// Sum of the weights of slots `0..slot`.
    fn prefix(&self, slot: usize) -> f64 {
        let mut i = slot;
        let mut sum = 0.0;
        while i > 0 {
            sum += self.tree[i];
            i &= i - 1;
        }
        sum
    }

    /// The slot where the running sum passes `target`.
    fn find(&self, mut target: f64) -> usize {
        let n = self.len();
        let mut pos = 0;
        let mut step = n.next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] <= target {
                pos = next;
                target -= self.tree[next];
            }
            step >>= 1;
        }
        pos.min(n - 1)
    }

    /// An item among the newest `newest` held (all held when larger), drawn
    /// in proportion to weight: its number in the stream. `None` when empty.
    pub fn draw(&self, rng: &mut fastrand::Rng, newest: u64) -> Option<u64> {
        let held = self.held();
        if held == 0 {
            return None;
        }
        let k = newest.clamp(1, held);
        let n = self.len();
        // Slots of items pushed-k .. pushed-1: a range that may wrap.
        let first = ((self.pushed - k) % n as u64) as usize;
        let end = first + k as usize;
        let item = |slot: usize| {
            let last = self.pushed - 1;
            let last_slot = (last % n as u64) as usize;
            last - ((last_slot + n - slot) % n) as u64
        };
        let (a, b) = if end <= n {
            (self.prefix(end) - self.prefix(first), 0.0)
        } else {
            (self.prefix(n) - self.prefix(first), self.prefix(end - n))
        };
        let total = a + b;
        if total <= 0.0 {
            return Some(self.pushed - 1 - rng.u64(..k));
        }
        let u = rng.f64() * total;
        let slot = if u < a {
            self.find(self.prefix(first) + u)
        } else {
            self.find(u - a)
        };
        Some(item(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_ranks_stay_in_range_and_favour_the_head() {
        let z = Zipf::new(1000, 5.0);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..200_000 {
            counts[z.draw(&mut rng) as usize] += 1;
        }
        assert!(
            counts[0] > counts[100] * 10,
            "{} vs {}",
            counts[0],
            counts[100]
        );
        assert!(counts[999] > 0, "the tail is reached");
        // p(0) / p(99) = (100 + 5) / (1 + 5) = 17.5 under the law.
        let ratio = f64::from(counts[0]) / f64::from(counts[99].max(1));
        assert!((10.0..30.0).contains(&ratio), "{ratio}");
        assert_eq!(Zipf::new(1, 0.0).draw(&mut rng), 0);
    }

    #[test]
    fn weighted_ring_draws_by_weight_among_the_newest() {
        let mut ring = WeightedRing::new(8);
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(ring.draw(&mut rng, 4), None);
        // Items 0..20; item 17 weighs 1000, the others 1.
        for i in 0..20u64 {
            ring.push(if i == 17 { 1000.0 } else { 1.0 });
        }
        let mut hits = 0;
        for _ in 0..1000 {
            let item = ring.draw(&mut rng, 8).expect("held");
            assert!((12..20).contains(&item), "{item} is not among the last 8");
            hits += u32::from(item == 17);
        }
        assert!(hits > 950, "{hits}");
        for _ in 0..500 {
            let item = ring.draw(&mut rng, 2).expect("held");
            assert!(item == 18 || item == 19, "{item}");
        }
    }
}
