//! Allocator churn for a Rust program using the system allocator (malloc):
//! threads build and drop Vec, String, BTreeMap and HashMap, and pass boxed
//! batches to each other over channels, so most frees happen on another thread
//! than the allocation. The result is recomputed single-threaded and compared.
//! Prints "rust ok <hex>"; with the argument --probe it exits at once.
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

const THREADS: u64 = 6;
const BATCHES: u64 = 500;

struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01B3);
    }
    h
}

fn make_batch(seed: u64) -> Box<(u64, Vec<String>)> {
    let mut r = Rng::new(seed);
    let n = r.below(48) + 1;
    let mut items = Vec::new();
    for i in 0..n {
        let len = if r.below(10) == 0 { r.below(20_000) } else { r.below(120) };
        let c = (b'a' + (r.below(26) as u8)) as char;
        let mut s: String = std::iter::repeat(c).take(len as usize).collect();
        if i % 3 == 0 {
            s.push_str(&format!("#{seed}-{i}"));
        }
        items.push(s);
    }
    Box::new((seed, items))
}

fn batch_value(items: &[String]) -> u64 {
    items.iter().fold(0xCBF2_9CE4_8422_2325, |h, s| fnv(fnv(h, s.as_bytes()), b"|"))
}

fn local_churn(seed: u64) -> u64 {
    let mut r = Rng::new(seed);
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    let mut tree: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut hm: HashMap<String, Vec<u64>> = HashMap::new();
    for round in 0..50u64 {
        for _ in 0..300 {
            let k = r.below(4000);
            tree.insert(k, vec![(k % 251) as u8; r.below(400) as usize]);
            hm.entry(format!("k{}", r.below(2000))).or_default().push(k);
        }
        for _ in 0..150 {
            tree.remove(&r.below(4000));
        }
        if round % 10 == 9 {
            for (k, v) in &tree {
                h = fnv(h, &k.to_le_bytes());
                h = fnv(h, v);
            }
            let sorted: BTreeMap<&String, usize> = hm.iter().map(|(k, v)| (k, v.len())).collect();
            for (k, n) in sorted {
                h = fnv(h, k.as_bytes());
                h = fnv(h, &n.to_le_bytes());
            }
            hm.clear();
        }
        let mut vv: Vec<Vec<u32>> = Vec::new();
        for _ in 0..r.below(40) + 1 {
            let mut v = Vec::new();
            for j in 0..r.below(3000) {
                v.push(j as u32);
            }
            v.shrink_to_fit();
            vv.push(v);
        }
        for v in &vv {
            h = fnv(h, &(v.len() as u64).to_le_bytes());
        }
    }
    h
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--probe") {
        return;
    }
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..THREADS {
        let (tx, rx) = mpsc::channel::<Box<(u64, Vec<String>)>>();
        senders.push(tx);
        receivers.push(rx);
    }
    let totals = Arc::new(Mutex::new((0u64, 0u64, 0u64))); // sum, count, bad
    let mut handles = Vec::new();
    for (id, rx) in receivers.into_iter().enumerate() {
        let id = id as u64;
        let tx = senders[((id + 1) % THREADS) as usize].clone();
        let totals = Arc::clone(&totals);
        handles.push(thread::spawn(move || {
            let local = local_churn(500 + id);
            for i in 0..BATCHES {
                tx.send(make_batch(id * 1_000_000 + i)).expect("send");
            }
            drop(tx);
            let (mut sum, mut count, mut bad) = (0u64, 0u64, 0u64);
            for b in rx {
                let v = batch_value(&b.1);
                if v != batch_value(&make_batch(b.0).1) {
                    bad += 1;
                }
                sum = sum.wrapping_add(v);
                count += 1;
            }
            let mut t = totals.lock().unwrap();
            t.0 = t.0.wrapping_add(sum);
            t.1 += count;
            t.2 += bad;
            local
        }));
    }
    drop(senders);
    let locals: Vec<u64> = handles.into_iter().map(|h| h.join().expect("thread")).collect();

    let (mut want_sum, mut want_count) = (0u64, 0u64);
    for id in 0..THREADS {
        for i in 0..BATCHES {
            want_sum = want_sum.wrapping_add(batch_value(&make_batch(id * 1_000_000 + i).1));
            want_count += 1;
        }
    }
    let mut local_total = 0u64;
    for id in 0..THREADS {
        let again = local_churn(500 + id);
        if again != locals[id as usize] {
            println!("rust FAIL local churn of thread {id}: {:016x}, recomputed {again:016x}", locals[id as usize]);
            std::process::exit(1);
        }
        local_total ^= again;
    }
    let t = totals.lock().unwrap();
    if t.2 != 0 || t.1 != want_count || t.0 != want_sum {
        println!(
            "rust FAIL bad={} consumed {} of {want_count}, sum {:016x} want {want_sum:016x}",
            t.2, t.1, t.0
        );
        std::process::exit(1);
    }
    println!("rust ok {:016x}", want_sum ^ local_total);
}
