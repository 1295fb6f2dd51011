//! Prints what the schema derives: `qmp_schema introspect` (query-qmp-schema
//! JSON), `qmp_schema commands` (query-commands JSON) or `qmp_schema table`
//! (the docs/qmp.md support table).
fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "table".into());
    match what.as_str() {
        "introspect" => println!("{}", qmp::schema().introspect().to_json()),
        "commands" => println!("{}", qmp::schema().query_commands().to_json()),
        _ => print!("{}", qmp::support_table_markdown()),
    }
}
