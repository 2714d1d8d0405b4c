fn main() {
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path).unwrap();
        let mut d = tlsrpt_schemas::Decoder::default();
        let r = if path.ends_with(".eml") {
            d.decode_email(&bytes).map(|e| e.decoded)
        } else {
            d.decode(&bytes)
        };
        match r {
            Ok(x) => println!(
                "OK {path} {:?}",
                x.report
                    .warnings
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
            ),
            Err(e) => println!("ERR {path}: {e}"),
        }
    }
}
