use std::time::Instant;
fn main() {
    let text = std::fs::read_to_string("../../examples/machines/docker01.yaml").unwrap();
    let n = 10_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(fabric_model::source::parse_yaml(&text).unwrap());
    }
    let parse = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(fabric_model::machine::parse_stream(&text));
    }
    let full = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        let mut p = serde_saphyr::granit_parser::Parser::new_from_str(&text);
        while let Some(e) = p.next_event() {
            std::hint::black_box(e.unwrap());
        }
    }
    let raw = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        let mut p = saphyr_parser::Parser::new_from_str(&text);
        while let Some(e) = p.next_event() {
            std::hint::black_box(e.unwrap());
        }
    }
    let sap = t.elapsed();
    println!("saphyr {:?}", sap / n);
    println!(
        "raw events {:?}/doc, parse_yaml {:?}/doc, full {:?}/doc",
        raw / n,
        parse / n,
        full / n
    );
}
#[allow(dead_code)]
fn saphyr() {}
