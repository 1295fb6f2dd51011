//! docs/cli.md is derived from the option table; this fails when it is stale.

#[test]
fn docs_cli_md_is_generated_from_the_option_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == cli::options_markdown(),
        "docs/cli.md is out of date with the option table: run `make docs`"
    );
}
