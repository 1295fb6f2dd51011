//! docs/qmp.md is derived from the schema; this fails when it is stale.

#[test]
fn docs_qmp_md_is_generated_from_the_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/qmp.md");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == qmp::support_table_markdown(),
        "docs/qmp.md is out of date with crates/qmp/schema: run `make docs`"
    );
}
