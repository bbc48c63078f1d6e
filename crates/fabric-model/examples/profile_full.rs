fn main() {
    let text = std::fs::read_to_string("../../examples/machines/dns01.yaml").unwrap();
    for _ in 0..300 {
        std::hint::black_box(fabric_model::machine::parse_stream(&text));
    }
}
