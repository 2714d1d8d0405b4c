use std::io::Write;
fn main() {
    let json = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&json).unwrap();
    let gz = enc.finish().unwrap();
    let n = 200_000;
    let mut d = libdeflater::Decompressor::new();
    let mut out = vec![0u8; json.len()];
    let t = std::time::Instant::now();
    for _ in 0..n {
        let k = d.gzip_decompress(&gz, &mut out).unwrap();
        std::hint::black_box(&out[..k]);
    }
    println!(
        "libdeflate gunzip: {:.0}/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let mut z = flate2::Decompress::new(false);
    let t = std::time::Instant::now();
    for _ in 0..n {
        z.reset(false);
        let mut o = Vec::with_capacity(json.len() + 1);
        z.decompress_vec(&gz[10..], &mut o, flate2::FlushDecompress::Finish)
            .unwrap();
        std::hint::black_box(o);
    }
    println!(
        "zlib-rs inflate: {:.0}/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(crc32fast::hash(&json));
    }
    println!("crc: {:.0}/s", n as f64 / t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(String::from_utf8(json.clone()).unwrap());
    }
    println!("clone+utf8: {:.0}/s", n as f64 / t.elapsed().as_secs_f64());
}
