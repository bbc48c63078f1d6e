fn main() {
    let s = fabric_model::schema::schema_for::<fabric_model::api::MachineSpec>();
    println!("{}", serde_json::to_string_pretty(&s).unwrap());
}
