//! Rough timing while developing (the real figures come from the criterion benches).
use std::io::Write;
fn main() {
    let json = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&json).unwrap();
    let gz = enc.finish().unwrap();
    let mut d = tlsrpt_schemas::Decoder::default();
    let n = 200_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(d.decode(&gz).unwrap());
    }
    let e = t.elapsed();
    println!(
        "gz decode: {:.0}/s ({} bytes json)",
        n as f64 / e.as_secs_f64(),
        json.len()
    );
    let s = std::str::from_utf8(&json).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(tlsrpt_schemas::parse_report(s).unwrap());
    }
    println!("parse only: {:.0}/s", n as f64 / t.elapsed().as_secs_f64());
}
