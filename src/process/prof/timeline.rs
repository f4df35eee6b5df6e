//! The timeline: live and resident bytes over the process's life, for the report's
//! memory-over-time chart.
//!
//! A point is due once `step_ns` has passed since the last one; the profiler asks at each
//! sampled allocation or free and at each process-wide decay round, and once more at the
//! exit dump. The points live in a fixed array (no allocation, [`CAPACITY`] points); when
//! it is full, neighbours are merged in pairs (keeping the higher live and resident bytes
//! of the two, so a spike stays visible) and the step doubles. A run of any length thus
//! keeps between half and all of `CAPACITY` points, evenly spread.
//!
//! Resident bytes come from `/proc/self/statm`, read with `open`/`read` into a stack
//! buffer (no allocation); the caller reads it outside the profile lock, only when a point
//! is due.
#![forbid(unsafe_code)]

/// Points kept (a power of two).
pub const CAPACITY: usize = 2048;
/// The step between points at the start (it doubles each time the array fills).
const FIRST_STEP_NS: u64 = 10_000_000;

/// One point of the timeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Point {
    /// Nanoseconds since the profiler started.
    pub t_ns: u64,
    /// Estimated live bytes (the sampled blocks' weights).
    pub live_bytes: u64,
    /// Resident bytes of the process (0 when unknown).
    pub resident_bytes: u64,
    /// Estimated bytes allocated since start.
    pub allocated_bytes: u64,
}

const ZERO: Point = Point {
    t_ns: 0,
    live_bytes: 0,
    resident_bytes: 0,
    allocated_bytes: 0,
};

/// The points so far.
pub struct Timeline {
    points: [Point; CAPACITY],
    len: usize,
    step_ns: u64,
    /// When the last point was taken, or reserved by [`Timeline::due`].
    last_ns: u64,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    pub const fn new() -> Self {
        Timeline {
            points: [ZERO; CAPACITY],
            len: 0,
            step_ns: FIRST_STEP_NS,
            last_ns: 0,
        }
    }

    /// True when a point is due at `now_ns` (then reserved: a second caller in the same
    /// step gets false). `force`: due whatever the step (the exit point).
    pub fn due(&mut self, now_ns: u64, force: bool) -> bool {
        if !force && self.len > 0 && now_ns.saturating_sub(self.last_ns) < self.step_ns {
            return false;
        }
        self.last_ns = now_ns;
        true
    }

    /// Appends a point (merging pairs first when the array is full). A point stamped
    /// before the last one (two threads that reserved points at once, pushed in the other
    /// order) takes the last one's time, so that the points stay in time order.
    pub fn push(&mut self, mut point: Point) {
        if let Some(last) = self.points().last() {
            point.t_ns = point.t_ns.max(last.t_ns);
        }
        if self.len == CAPACITY {
            self.halve();
        }
        if let Some(slot) = self.points.get_mut(self.len) {
            *slot = point;
            self.len += 1;
        }
    }

    /// Merges neighbours in pairs and doubles the step.
    fn halve(&mut self) {
        let pairs = self.len / 2;
        for i in 0..pairs {
            let (Some(&a), Some(&b)) = (self.points.get(2 * i), self.points.get(2 * i + 1)) else {
                break;
            };
            let merged = Point {
                t_ns: b.t_ns,
                live_bytes: a.live_bytes.max(b.live_bytes),
                resident_bytes: a.resident_bytes.max(b.resident_bytes),
                allocated_bytes: b.allocated_bytes,
            };
            if let Some(slot) = self.points.get_mut(i) {
                *slot = merged;
            }
        }
        // An odd last point stays as it is.
        if self.len % 2 == 1 {
            let last = self.points.get(self.len - 1).copied();
            if let (Some(last), Some(slot)) = (last, self.points.get_mut(pairs)) {
                *slot = last;
            }
            self.len = pairs + 1;
        } else {
            self.len = pairs;
        }
        self.step_ns = self.step_ns.saturating_mul(2);
    }

    /// The points, oldest first.
    pub fn points(&self) -> &[Point] {
        self.points.get(..self.len).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t_ns: u64, live_bytes: u64) -> Point {
        Point {
            t_ns,
            live_bytes,
            resident_bytes: live_bytes * 2,
            allocated_bytes: t_ns,
        }
    }

    #[test]
    fn points_are_spaced_by_the_step() {
        let mut t = Timeline::new();
        assert!(t.due(5, false), "the first point is always due");
        t.push(point(5, 1));
        assert!(!t.due(5 + FIRST_STEP_NS - 1, false));
        assert!(t.due(5 + FIRST_STEP_NS, false));
        assert!(
            !t.due(5 + FIRST_STEP_NS, false),
            "reserved by the first caller"
        );
        assert!(t.due(6 + FIRST_STEP_NS, true), "forced");
    }

    #[test]
    fn points_pushed_out_of_order_stay_in_time_order() {
        // Two threads reserve points at once; the later one reads the resident bytes
        // faster and pushes first.
        let mut t = Timeline::new();
        assert!(t.due(FIRST_STEP_NS, false));
        t.push(point(FIRST_STEP_NS, 1));
        assert!(t.due(3 * FIRST_STEP_NS, false));
        assert!(t.due(5 * FIRST_STEP_NS, false));
        t.push(point(5 * FIRST_STEP_NS, 3));
        t.push(point(3 * FIRST_STEP_NS, 2));
        let times: Vec<u64> = t.points().iter().map(|p| p.t_ns).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert_eq!(t.points().len(), 3);
    }

    #[test]
    fn a_full_timeline_halves_and_keeps_the_spikes() {
        let mut t = Timeline::new();
        let mut now = 0;
        let mut pushed = 0u64;
        // Three times the capacity, with one spike of 1000 in the middle.
        for i in 0..3 * CAPACITY as u64 {
            now += FIRST_STEP_NS * 64;
            if t.due(now, false) {
                let live = if i == CAPACITY as u64 + 7 {
                    1000
                } else {
                    i % 10
                };
                t.push(point(now, live));
                pushed += 1;
            }
        }
        assert_eq!(pushed, 3 * CAPACITY as u64);
        let points = t.points();
        assert!(points.len() > CAPACITY / 2 && points.len() <= CAPACITY);
        assert!(
            points.windows(2).all(|w| w[0].t_ns < w[1].t_ns),
            "in time order"
        );
        assert_eq!(
            points.last().map(|p| p.t_ns),
            Some(now),
            "the newest point kept"
        );
        assert_eq!(points.iter().map(|p| p.live_bytes).max(), Some(1000));
        assert_eq!(
            points.iter().map(|p| p.resident_bytes).max(),
            Some(2000),
            "resident spikes kept too"
        );
        // Halved at pushes 2049, 3073, 4097 and 5121.
        assert_eq!(t.step_ns, FIRST_STEP_NS * 16);
    }
}
