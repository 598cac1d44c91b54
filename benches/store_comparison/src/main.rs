//! storebench <dir> <seconds-per-case>: durable-commit cost of a few stores.
//! Each commit = 30 records (key "dom-N", N cyclic over 200; 1200-byte value), durable on return.
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const RECS: usize = 30;
const VAL: usize = 1200;
const KEYS: usize = 200;
const POOL: usize = 64; // pre-generated batches, cycled
const JOURNAL_CAP: u64 = 16 << 20;

type Batch = Vec<(String, Vec<u8>)>;

fn make_pool() -> Vec<Batch> {
    let mut s: u64 = 0x9E3779B97F4A7C15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..POOL)
        .map(|b| {
            (0..RECS)
                .map(|r| {
                    let key = format!("dom-{}", (b * RECS + r) % KEYS);
                    let val = (0..VAL / 8).flat_map(|_| next().to_le_bytes()).collect();
                    (key, val)
                })
                .collect()
        })
        .collect()
}

/// (thread cpu, process cpu) in microseconds
fn cpu_us() -> (u64, u64) {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let get = |who| unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        us(ru.ru_utime) + us(ru.ru_stime)
    };
    (get(libc::RUSAGE_THREAD), get(libc::RUSAGE_SELF))
}

fn zero_file(path: &Path, len: u64) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off).unwrap();
        off += n as u64;
    }
    f.sync_all().unwrap();
    f
}

fn frame(batch: &Batch) -> Vec<u8> {
    let mut p = Vec::with_capacity(RECS * (VAL + 16));
    for (k, v) in batch {
        p.extend_from_slice(&(k.len() as u16).to_le_bytes());
        p.extend_from_slice(k.as_bytes());
        p.extend_from_slice(&(v.len() as u32).to_le_bytes());
        p.extend_from_slice(v);
    }
    let mut f = Vec::with_capacity(p.len() + 8);
    f.extend_from_slice(&(p.len() as u32).to_le_bytes());
    f.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
    f.extend_from_slice(&p);
    f
}

const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("t");

/// Builds a store in `dir` and returns its commit closure.
fn setup(case: &str, dir: &Path) -> Box<dyn FnMut(&Batch)> {
    match case {
        "raw" => {
            let f = zero_file(&dir.join("raw"), 4096);
            let page: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
            Box::new(move |_: &Batch| {
                f.write_all_at(&page, 0).unwrap();
                f.sync_data().unwrap();
            })
        }
        "redb" | "redb-1rec" => {
            let db = redb::Database::create(dir.join("db.redb")).unwrap();
            let one = case == "redb-1rec";
            Box::new(move |b: &Batch| {
                let tx = db.begin_write().unwrap(); // default durability: Immediate
                {
                    let mut t = tx.open_table(TABLE).unwrap();
                    if one {
                        let v: Vec<u8> = b.iter().flat_map(|(_, v)| v.iter().copied()).collect();
                        t.insert(b[0].0.as_str(), v.as_slice()).unwrap();
                    } else {
                        for (k, v) in b {
                            t.insert(k.as_str(), v.as_slice()).unwrap();
                        }
                    }
                }
                tx.commit().unwrap();
            })
        }
        "fjall" => {
            let db = fjall::Database::builder(dir.join("fjall")).open().unwrap();
            let ks = db
                .keyspace("t", fjall::KeyspaceCreateOptions::default)
                .unwrap();
            Box::new(move |b: &Batch| {
                // commit() writes the batch to the journal and fdatasyncs it before returning
                let mut wb = db.batch().durability(Some(fjall::PersistMode::SyncData));
                for (k, v) in b {
                    wb.insert(&ks, k.as_str(), v.as_slice());
                }
                wb.commit().unwrap();
            })
        }
        "journal" | "journal-append" => {
            let pre = case == "journal";
            let f = if pre {
                zero_file(&dir.join("log"), JOURNAL_CAP)
            } else {
                zero_file(&dir.join("log"), 0)
            };
            let mut off = 0u64;
            Box::new(move |b: &Batch| {
                let fr = frame(b);
                if pre && off + fr.len() as u64 > JOURNAL_CAP {
                    off = 0;
                }
                f.write_all_at(&fr, off).unwrap(); // one pwrite
                f.sync_data().unwrap();
                off += fr.len() as u64;
            })
        }
        _ => unreachable!(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> u128 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_micros()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: storebench <dir> <seconds-per-case>");
        std::process::exit(2);
    }
    let root = Path::new(&args[1]);
    let secs: f64 = args[2].parse().expect("seconds");
    let pool = make_pool();
    println!(
        "{:<15} {:>8} {:>8} {:>8} {:>8} {:>12} {:>12}",
        "case", "commits", "p50_us", "p90_us", "p99_us", "cpu_thr_us/c", "cpu_proc_us/c"
    );
    for case in [
        "raw",
        "redb",
        "redb-1rec",
        "fjall",
        "journal",
        "journal-append",
    ] {
        let dir = root.join(case);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut commit = setup(case, &dir);
        let mut lat = Vec::new();
        let (t0, p0) = cpu_us();
        let end = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            let b = &pool[lat.len() % POOL];
            let s = Instant::now();
            commit(b);
            lat.push(s.elapsed());
        }
        let (t1, p1) = cpu_us();
        drop(commit);
        lat.sort();
        let n = lat.len().max(1) as u64;
        println!(
            "{:<15} {:>8} {:>8} {:>8} {:>8} {:>12.1} {:>12.1}",
            case,
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.9),
            pct(&lat, 0.99),
            (t1 - t0) as f64 / n as f64,
            (p1 - p0) as f64 / n as f64
        );
    }
}
