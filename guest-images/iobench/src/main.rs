//! `iobench`: random reads from a block device at a fixed queue depth, for the NVMe
//! benchmarks (`cargo xtask bench`). Built as a static musl binary and put into the built-in
//! Linux guest's initramfs as `/bin/iobench`.
//!
//! ```text
//! iobench DEVICE [--qd N] [--ops N] [--bs BYTES] [--seed N] [--buffered] [--wait]
//! IOBENCH ready                   (--wait: then reads one line from stdin before starting)
//! IOBENCH randread qd=32 bs=4096 ops=20000 span=268435456 seconds=1.234567 iops=16204 mean_us=1974.5
//! IOBENCH FAIL <what>
//! ```
//!
//! Queue depth N is N threads, each with one synchronous `pread` in flight (O_DIRECT, so every
//! read reaches the device). Offsets are block-aligned, uniformly random over the whole device,
//! from a fixed seed: two runs issue the same reads. Time is CLOCK_MONOTONIC, which under
//! QEMU's `-icount` is virtual time.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

/// What to run, from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Options {
    device: String,
    queue_depth: usize,
    ops: u64,
    block_size: u64,
    seed: u64,
    direct: bool,
    /// Print `IOBENCH ready` and wait for a line on stdin before starting, so that whoever
    /// drives the console can take a snapshot (e.g. the microvisor's exit counters) first.
    wait: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            device: String::new(),
            queue_depth: 1,
            ops: 10_000,
            block_size: 4096,
            seed: 1,
            direct: true,
            wait: false,
        }
    }
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options::default();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let text = words.next().ok_or(format!("{name} needs a value"))?;
            text.parse()
                .map_err(|_| format!("{name}: not a number: {text:?}"))
        };
        match word.as_str() {
            "--qd" => options.queue_depth = value("--qd")? as usize,
            "--ops" => options.ops = value("--ops")?,
            "--bs" => options.block_size = value("--bs")?,
            "--seed" => options.seed = value("--seed")?,
            "--buffered" => options.direct = false,
            "--wait" => options.wait = true,
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            device if options.device.is_empty() => options.device = device.to_string(),
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    if options.device.is_empty() {
        return Err(
            "usage: iobench DEVICE [--qd N] [--ops N] [--bs BYTES] [--seed N] [--buffered]".into(),
        );
    }
    if !(1..=256).contains(&options.queue_depth) {
        return Err("--qd must be 1..=256".into());
    }
    if options.block_size == 0 || options.block_size % 512 != 0 || options.block_size > 1 << 20 {
        return Err("--bs must be a multiple of 512 up to 1 MiB".into());
    }
    if options.ops == 0 {
        return Err("--ops must be at least 1".into());
    }
    Ok(options)
}

/// xorshift64*: small, fast and the same on every platform.
#[derive(Clone, Debug)]
struct Random(u64);

impl Random {
    fn new(seed: u64, stream: u64) -> Random {
        // Never zero; streams far apart.
        Random((seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A block-aligned offset of a `block`-byte read inside `span` bytes.
    fn offset(&mut self, span: u64, block: u64) -> u64 {
        (self.next() % (span / block)) * block
    }
}

/// How many of `ops` reads worker `index` of `workers` does.
fn share(ops: u64, workers: usize, index: usize) -> u64 {
    let workers = workers as u64;
    ops / workers + u64::from((index as u64) < ops % workers)
}

/// One worker's result: reads done and the sum of their latencies.
#[derive(Clone, Copy, Debug, Default)]
struct Done {
    reads: u64,
    busy: Duration,
}

fn worker(file: &File, options: &Options, span: u64, index: usize) -> Result<Done, String> {
    let block = options.block_size as usize;
    // An O_DIRECT buffer must be aligned to the logical block size; a page covers every
    // device.
    let mut storage = vec![0u8; block + 4096];
    let start = storage.as_ptr().align_offset(4096);
    let buffer = &mut storage[start..start + block];
    let mut random = Random::new(options.seed, index as u64);
    let mut done = Done::default();
    for _ in 0..share(options.ops, options.queue_depth, index) {
        let offset = random.offset(span, options.block_size);
        let began = Instant::now();
        file.read_exact_at(buffer, offset)
            .map_err(|e| format!("read of {block} bytes at {offset}: {e}"))?;
        done.busy += began.elapsed();
        done.reads += 1;
    }
    Ok(done)
}

fn run(options: &Options) -> Result<String, String> {
    let mut open = OpenOptions::new();
    open.read(true);
    if options.direct {
        open.custom_flags(libc::O_DIRECT);
    }
    let mut file = open
        .open(&options.device)
        .map_err(|e| format!("open {}: {e}", options.device))?;
    let span = file
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("size of {}: {e}", options.device))?;
    if span < options.block_size {
        return Err(format!(
            "{} holds {span} bytes, less than one block",
            options.device
        ));
    }
    if options.wait {
        println!("IOBENCH ready");
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("waiting for the go line: {e}"))?;
    }
    let began = Instant::now();
    let results: Vec<Result<Done, String>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..options.queue_depth)
            .map(|index| {
                let file = &file;
                scope.spawn(move || worker(file, options, span, index))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a worker panicked".into())))
            .collect()
    });
    let elapsed = began.elapsed();
    let mut total = Done::default();
    for result in results {
        let done = result?;
        total.reads += done.reads;
        total.busy += done.busy;
    }
    Ok(report(options, span, total, elapsed))
}

fn report(options: &Options, span: u64, total: Done, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let mean_us = total.busy.as_secs_f64() * 1e6 / total.reads.max(1) as f64;
    format!(
        "IOBENCH randread qd={} bs={} ops={} span={span} seconds={seconds:.6} iops={:.0} mean_us={mean_us:.1}",
        options.queue_depth,
        options.block_size,
        total.reads,
        total.reads as f64 / seconds,
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args).and_then(|options| run(&options)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("IOBENCH FAIL {why}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_parse_and_bad_ones_are_named() {
        let o = parse_args(&args("/dev/nvme0n1 --qd 32 --ops 500 --seed 7")).unwrap();
        assert_eq!(
            (
                o.device.as_str(),
                o.queue_depth,
                o.ops,
                o.block_size,
                o.seed,
                o.direct
            ),
            ("/dev/nvme0n1", 32, 500, 4096, 7, true)
        );
        for (line, why) in [
            ("", "usage"),
            ("d --qd 0", "--qd"),
            ("d --qd x", "not a number"),
            ("d --bs 1000", "--bs"),
            ("d --ops 0", "--ops"),
            ("d --what 1", "unknown option"),
            ("d e", "unexpected"),
            ("d --qd", "needs a value"),
        ] {
            let err = parse_args(&args(line)).unwrap_err();
            assert!(err.contains(why), "{line:?}: {err}");
        }
    }

    #[test]
    fn work_is_shared_exactly_and_offsets_are_aligned_and_repeatable() {
        assert_eq!((0..32).map(|i| share(1000, 32, i)).sum::<u64>(), 1000);
        assert_eq!(share(10, 4, 0), 3);
        assert_eq!(share(10, 4, 3), 2);
        let mut a = Random::new(1, 0);
        let mut b = Random::new(1, 0);
        let mut other = Random::new(1, 1);
        let mut differ = false;
        for _ in 0..1000 {
            let x = a.offset(1 << 30, 4096);
            assert_eq!(x % 4096, 0);
            assert!(x < 1 << 30);
            assert_eq!(x, b.offset(1 << 30, 4096));
            differ |= x != other.offset(1 << 30, 4096);
        }
        assert!(differ);
    }

    #[test]
    fn reads_a_file_with_several_workers_and_reports_every_read() {
        let path = std::env::temp_dir().join(format!("iobench-test-{}", std::process::id()));
        std::fs::write(&path, vec![0x5a; 1 << 20]).unwrap();
        let options = Options {
            device: path.display().to_string(),
            queue_depth: 4,
            ops: 103,
            direct: false,
            ..Options::default()
        };
        let line = run(&options).unwrap();
        assert!(
            line.starts_with("IOBENCH randread qd=4 bs=4096 ops=103 span=1048576 seconds="),
            "{line}"
        );
        std::fs::write(&path, [0u8; 100]).unwrap();
        assert!(run(&options).unwrap_err().contains("less than one block"));
        std::fs::remove_file(&path).unwrap();
        let missing = run(&options).unwrap_err();
        assert!(missing.starts_with("open "), "{missing}");
    }
}
