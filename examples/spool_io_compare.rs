//! Compares the two glommio file paths for the spool's commit pattern:
//! append a batch at the tail, then fdatasync. BufferedFile (page cache)
//! vs DmaFile (O_DIRECT, 4 KiB-aligned buffers).
//!
//! usage: spool_io_compare DIR [batch_kib=80] [iterations=2000]

use glommio::io::{DmaFile, OpenOptions};
use std::time::Instant;

fn report(name: &str, batch: usize, lat: &mut [u32], secs: f64) {
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "{name:9} batch={:>4} KiB: {:>6.0} commits/s {:>7.1} MB/s; commit us p50={} p99={} max={}",
        batch / 1024,
        lat.len() as f64 / secs,
        (lat.len() * batch) as f64 / secs / 1e6,
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).cloned().unwrap_or("/tmp/iocmp".into()));
    let batch = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(80usize) * 1024;
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2000);
    std::fs::create_dir_all(&dir).expect("dir");
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
        .spawn(move || async move {
            let p = dir.join("buffered.log");
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .buffered_open(&p)
                .await
                .expect("open");
            let mut lat = Vec::with_capacity(iters);
            let t = Instant::now();
            for i in 0..iters {
                let t0 = Instant::now();
                f.write_at(vec![b'b'; batch], (i * batch) as u64)
                    .await
                    .expect("write");
                f.fdatasync().await.expect("sync");
                lat.push(t0.elapsed().as_micros() as u32);
            }
            report("buffered", batch, &mut lat, t.elapsed().as_secs_f64());
            f.close().await.expect("close");
            let _ = std::fs::remove_file(&p);

            let p = dir.join("dma.log");
            let f: DmaFile = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .dma_open(&p)
                .await
                .expect("open");
            let mut lat = Vec::with_capacity(iters);
            let t = Instant::now();
            for i in 0..iters {
                let t0 = Instant::now();
                let mut buf = f.alloc_dma_buffer(batch);
                buf.as_bytes_mut().fill(b'd');
                f.write_at(buf, (i * batch) as u64).await.expect("write");
                f.fdatasync().await.expect("sync");
                lat.push(t0.elapsed().as_micros() as u32);
            }
            report("dma", batch, &mut lat, t.elapsed().as_secs_f64());
            f.close().await.expect("close");
            let _ = std::fs::remove_file(&p);
        })
        .expect("executor")
        .join()
        .expect("join");
}
