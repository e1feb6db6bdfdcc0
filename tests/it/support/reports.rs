//! The `--json` reports of the commands, checked against their schemas.
//!
//! Scripts parse these reports (the NixOS module's inbox, CI jobs), and
//! `bundle-spec/schema/cli-<command>.schema.json` says what they hold. Every test
//! that reads a report reads it through [`cli_report`], so every real report the
//! suite produces is held against its schema: a field renamed, dropped or added
//! without the schema fails here.

use std::process::Output;

use serde_json::Value;

use super::{json_stdout, repo};

/// The schema `bundle-spec/schema/cli-<report>.schema.json`, compiled.
pub fn cli_schema(report: &str) -> jsonschema::Validator {
    let path = repo()
        .join("bundle-spec/schema")
        .join(format!("cli-{report}.schema.json"));
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid schema: {e}", path.display()))
}

/// Checks `value` against the schema of `report` (`create`, `verify`, `inspect`,
/// `import`, `import-plan`, `activate`, `split`, `join`, `inventory`, `patch`, `diff`,
/// `sbom`, `serve`, `list`,
/// `remove`,
/// `key-generate`, `key-public`, `man`, `error`).
pub fn assert_report(value: &Value, report: &str) {
    let errors: Vec<String> = cli_schema(report)
        .iter_errors(value)
        .map(|e| format!("{e} (at `{}`)", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the {report} report does not match bundle-spec/schema/cli-{report}.schema.json:\n  {}\n{value:#}",
        errors.join("\n  ")
    );
}

/// The report `o` printed on stdout, parsed and checked against the schema of
/// `report` (see [`assert_report`]).
pub fn cli_report(o: &Output, report: &str) -> Value {
    let v = json_stdout(o);
    assert_report(&v, report);
    v
}
