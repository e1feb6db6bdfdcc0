//! Every command's `--json` report, from real runs, held against its schema in
//! bundle-spec/schema (`cli-<command>.schema.json`). The other areas' tests check
//! the reports they read too (through `cli_report`); this one makes sure each
//! report and each target's result is produced at least once, with and without
//! its optional fields.

use crate::support::*;

#[test]
fn every_json_report_matches_its_schema() {
    let w = Work::new("release");
    let generated = cli_report(
        &run(gapbundle()
            .args(["--json", "key", "generate", "--name", "other", "--dir"])
            .arg(w.path("other"))),
        "key-generate",
    );
    assert!(generated["publicKey"]
        .as_str()
        .unwrap()
        .starts_with("other:"));
    let public = cli_report(
        &run(gapbundle()
            .args(["key", "public", "--json"])
            .arg(w.secret())),
        "key-public",
    );
    assert_eq!(public["name"], "release");

    // One local image and one manifest: the staged archive and the manifests
    // folder as targets.
    run(tool("cp")
        .arg("-r")
        .arg(repo().join("examples/quickstart/images"))
        .arg(w.path("images")));
    w.write(
        "extra/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: report\n  namespace: default\ndata:\n  k: v\n",
    );
    w.write(
        "bundle.yaml",
        "name: reports\nversion: \"1\"\nimages:\n  - layout: ./images/hello:latest\n    name: example.local/hello:1.0\nmanifests:\n  - path: ./extra/cm.yaml\n",
    );
    let created = cli_report(&run(w.create("site.gapb").arg("--json")), "create");
    assert_eq!(created["images"][0]["ref"], "example.local/hello:1.0");
    let bundle = w.path("site.gapb");
    let verified = cli_report(
        &run(gapbundle()
            .args(["verify", "--json"])
            .arg(&bundle)
            .arg("--trust")
            .arg(w.public())),
        "verify",
    );
    assert_eq!(verified["digest"], created["digest"]);
    assert_eq!(verified["signatureChecked"], true);
    let inspected = w.inspect("site.gapb");
    assert_eq!(inspected["digest"], created["digest"]);

    let plan = cli_report(
        &run(w.import(&bundle).args(["--staged", "--dry-run", "--json"])),
        "import-plan",
    );
    assert_eq!(plan["targets"].as_array().unwrap().len(), 2, "{plan}");
    let imported = cli_report(
        &run(w.import(&bundle).args(["--staged", "--json"])),
        "import",
    );
    let results: Vec<_> = imported["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["result"])
        .collect();
    assert_eq!(results[0]["written"], true, "{imported}");
    assert!(results[0]["bytes"].as_u64().unwrap() > 0, "{imported}");
    assert_eq!(results[1]["removed"], serde_json::json!([]), "{imported}");
    // Again: the archive is there (no `bytes`).
    let again = cli_report(
        &run(w.import(&bundle).args(["--staged", "--json"])),
        "import",
    );
    assert_eq!(again["targets"][0]["result"]["written"], false, "{again}");

    // A failure prints the error object instead.
    let o = gapbundle()
        .args(["verify", "--json"])
        .arg(w.path("missing.gapb"))
        .output()
        .unwrap();
    fails(&o, 1);
    let error = cli_report(&o, "error");
    assert!(
        error["error"].as_str().unwrap().contains("missing.gapb"),
        "{error}"
    );
}
