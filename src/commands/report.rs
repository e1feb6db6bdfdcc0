//! What `--json` prints: one type per command's report, printed in one place.
//!
//! Scripts parse these (the NixOS module's inbox, CI jobs such as
//! `examples/ci-nightly`), so the field names are part of the interface: each
//! report is a struct here whose serde names are the JSON names, and
//! `bundle-spec/schema/cli-<command>.schema.json` describes the same shape. The
//! integration tests check the real output of every command against its schema.
//! Keys are printed in sorted order, as they always were.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::import::activate::ActivationPlan;

use crate::bundle::diff::Diff;
use crate::bundle::inventory::BundleSeen;
use crate::bundle::manifest::{DeltaBase, Manifest};
use crate::import::report::TargetReport;
use crate::import::TargetPlan;

/// Prints a report on stdout as pretty JSON, keys sorted. Given the report itself
/// (not a reference), it is dropped once its `Value` is made, and the text is
/// written as it is formatted, not gathered first: `inspect --json` of 20,000
/// objects is a 30 MiB `Value` and 7 MiB of text.
pub fn print_json<T: Serialize>(report: T) {
    // Through a `Value`, whose maps are sorted: the key order scripts have seen.
    let value = serde_json::to_value(&report).expect("reports serialize");
    drop(report);
    super::say_pretty(&value);
}

/// Prints a report on stdout on one line, keys sorted: for a report a script reads
/// while the command goes on (`serve`'s, before it serves).
pub fn print_json_line(report: &impl Serialize) {
    let value = serde_json::to_value(report).expect("reports serialize");
    say!("{value}");
}

/// Prints the error report of a failed command on stdout, on one line. A reader
/// that went away changes nothing: the command failed either way.
pub fn print_error(exit_code: u8, error: &str) {
    use std::io::Write;
    let report = ErrorReport {
        ok: false,
        exit_code,
        error: error.to_string(),
    };
    let value = serde_json::to_value(&report).expect("reports serialize");
    let _ = writeln!(std::io::stdout(), "{value}");
}

/// `create --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateReport {
    /// The bundle file written.
    pub bundle: PathBuf,
    /// Its manifest digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// The spec's name.
    pub name: String,
    /// The spec's version.
    pub version: String,
    /// Names of the keys that signed it.
    pub signers: Vec<String>,
    /// Every image, resolved.
    pub images: Vec<CreatedImage>,
    /// The lock file.
    pub lock: PathBuf,
    /// Whether the lock file was written.
    pub lock_changed: bool,
    /// The pins that moved from the lock read to the lock written (`--update`:
    /// tags that now name another image, chart constraints that now pick another
    /// archive), each from what digest to what.
    pub moved: Vec<crate::spec::lock::Moved>,
    /// What was downloaded.
    pub fetched: Fetched,
    /// Registry blobs that were in the cache already.
    pub cached_blobs: usize,
    /// Bytes of blobs stored in the bundle.
    pub stored_bytes: u64,
    /// Bytes saved by storing shared blobs once.
    pub saved_bytes: u64,
    /// With `--volume-size`: the data volumes written, first first (else `null`).
    pub volumes: Option<Vec<PathBuf>>,
    /// With `--volume-size`: the parity volumes written (else `null`).
    pub parity_volumes: Option<Vec<PathBuf>>,
    /// With `--against`: what the delta leaves out (else `null`).
    pub delta: Option<CreateDelta>,
}

/// The `delta` of `create --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateDelta {
    /// What it is against and expects.
    #[serde(flatten)]
    pub summary: DeltaSummary,
    /// Bytes of the full bundle `patch` rebuilds.
    pub full_size: u64,
}

/// What a delta bundle is against and expects on the target (`delta` of the
/// create, verify and inspect reports).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaSummary {
    /// The bases, as the manifest lists them.
    pub against: Vec<DeltaBase>,
    /// The digest of the full bundle it patches to.
    pub full_digest: String,
    /// Blobs it leaves out, expected on the target.
    pub expected_blobs: usize,
    /// Their bytes.
    pub expected_bytes: u64,
}

impl DeltaSummary {
    /// The summary of `m`'s `delta`; `None` for a full bundle.
    pub fn of(m: &Manifest) -> Option<Self> {
        let d = m.delta.as_ref()?;
        let expected = m.expected();
        Some(DeltaSummary {
            against: d.against.clone(),
            full_digest: d.full.manifest.to_string(),
            expected_blobs: expected.len(),
            expected_bytes: expected.iter().map(|(b, _)| b.size).sum(),
        })
    }
}

/// One image of `create --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedImage {
    /// Its name.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Its root digest.
    pub digest: String,
    /// Its root's media type.
    pub media_type: String,
    /// The platforms kept.
    pub platforms: Vec<String>,
    /// Its lock key (`ref:…`, `layout:…`, …).
    pub source: String,
}

/// Downloads of `create --json`.
#[derive(Debug, Serialize)]
pub struct Fetched {
    /// Blobs downloaded.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// `verify --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Always true: a failure prints an [`ErrorReport`].
    pub ok: bool,
    /// The manifest digest.
    pub digest: String,
    /// The bundle's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Names of the trusted keys that signed it.
    pub signers: Vec<String>,
    /// False with `--allow-unsigned` and no trusted signature.
    pub signature_checked: bool,
    /// Objects in the manifest.
    pub objects: usize,
    /// Blobs in the manifest.
    pub blobs: usize,
    /// Bytes of the file verified.
    pub bytes: u64,
    /// For a delta: what it is against and expects (else `null`).
    pub delta: Option<VerifyDelta>,
}

/// The `delta` of `verify --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyDelta {
    /// What it is against and expects.
    #[serde(flatten)]
    pub summary: DeltaSummary,
    /// The full bundle's digest, its head checked against the delta.
    pub full_checked: String,
    /// Every blob it expects on the target.
    pub expected: Vec<ExpectedBlob>,
}

/// One blob a delta expects on the target (`verify --json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedBlob {
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// The digest of the base that holds it.
    pub base: String,
    /// `kind name` of the objects that need it.
    pub needed_by: String,
}

/// `inspect --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectReport {
    /// The bundle's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The manifest digest.
    pub digest: String,
    /// The format version it declares.
    pub format_version: String,
    /// What wrote it.
    pub generator: String,
    /// Its timestamp (RFC 3339).
    pub created: String,
    /// The platforms it was made for.
    pub platforms: Vec<String>,
    /// The keys its signatures claim (not checked: `verify` does).
    pub signers: Vec<String>,
    /// Its images.
    pub images: Vec<InspectImage>,
    /// Its files (`file` objects), by target.
    pub files: Vec<InspectFile>,
    /// Every object.
    pub objects: Vec<InspectObject>,
    /// Totals.
    pub totals: InspectTotals,
    /// For a delta: what it is against and expects (else `null`).
    pub delta: Option<DeltaSummary>,
    /// The NixOS system it asks an import to activate (else `null`).
    pub system: Option<InspectSystem>,
}

/// The system of `inspect --json` (format.md section 14.8).
#[derive(Debug, Serialize)]
pub struct InspectSystem {
    /// The toplevel's store path.
    pub path: String,
    /// `switch`, `boot` or `test`.
    pub activate: String,
}

/// One file of `inspect --json` (format.md section 15).
#[derive(Debug, Serialize)]
pub struct InspectFile {
    /// Where it is installed, below the import's `--root`.
    pub target: String,
    /// Its permission bits, four octal digits.
    pub mode: String,
    /// Its content's digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// The spec entry it came from (`path:…`, `url:…`, `installable:…`).
    pub source: String,
}

/// One image of `inspect --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectImage {
    /// Its name.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Its root digest.
    pub digest: String,
    /// Its root's media type.
    pub media_type: String,
    /// Its platforms.
    pub platforms: Vec<String>,
    /// Bytes of its blobs.
    pub size: u64,
    /// The rendered documents that run it.
    pub wanted_by: Vec<String>,
    /// The signatures, attestations and SBOMs attached to it (format.md section 18).
    pub referrers: Vec<InspectReferrer>,
}

/// One referrer of an image in `inspect --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectReferrer {
    /// Its manifest's digest.
    pub digest: String,
    /// Its manifest's media type.
    pub media_type: String,
    /// Its artifact type, when it has one.
    pub artifact_type: Option<String>,
    /// The cosign tag it was found under, if it was.
    pub tag: Option<String>,
    /// Bytes of its blobs.
    pub size: u64,
}

/// One object of `inspect --json`.
#[derive(Debug, Serialize)]
pub struct InspectObject {
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
}

/// Totals of `inspect --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectTotals {
    /// Objects.
    pub objects: usize,
    /// Blobs stored.
    pub blobs: usize,
    /// Their bytes.
    pub stored_bytes: u64,
    /// Bytes the objects would take if nothing were shared.
    pub logical_bytes: u64,
    /// Bytes saved by storing shared blobs once.
    pub saved_bytes: u64,
    /// Bytes of the file.
    pub file_bytes: u64,
}

/// `import --json`.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    /// Always true: a failure prints an [`ErrorReport`].
    pub ok: bool,
    /// The manifest digest.
    pub digest: String,
    /// The bundle's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Names of the trusted keys that signed it.
    pub signers: Vec<String>,
    /// What each target did.
    pub targets: Vec<TargetResult>,
    /// What an earlier version (or a killed import) of the bundle held that this
    /// one does not, and that went (format.md section 16), one line each.
    pub retired: Vec<String>,
    /// What activating the bundle's NixOS system did (format.md 14.8), when the
    /// import activated one.
    pub system: Option<ActivationPlan>,
    /// Whether the bundle's data was read and every blob hashed: false only for a
    /// rerun whose every target already held all of it (the signature and the
    /// head were checked, nothing was written from the data).
    #[serde(rename = "dataRead")]
    pub data_read: bool,
}

/// One target of `import --json`.
#[derive(Debug, Serialize)]
pub struct TargetResult {
    /// What and where (`nix store local?root=/mnt/target`).
    pub target: String,
    /// What it did.
    pub result: TargetReport,
}

/// `import --dry-run --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    /// Always true.
    pub ok: bool,
    /// Always true.
    pub dry_run: bool,
    /// The manifest digest.
    pub digest: String,
    /// What each target would do.
    pub targets: Vec<TargetPlanReport>,
    /// What the import would retire of an earlier version, one line each.
    pub would_retire: Vec<String>,
    /// What activating the bundle's NixOS system would do (format.md 14.8), when
    /// the import activates one.
    pub system: Option<ActivationPlan>,
}

/// `activate --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivateReport {
    /// Always true: a failure prints an [`ErrorReport`].
    pub ok: bool,
    /// `--dry-run`: nothing was changed.
    pub dry_run: bool,
    /// The bundle's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its digest.
    pub digest: String,
    /// What activating did (or would do).
    pub system: ActivationPlan,
}

/// One target of `import --dry-run --json`.
#[derive(Debug, Serialize)]
pub struct TargetPlanReport {
    /// What and where.
    pub target: String,
    /// What it would do.
    pub plan: TargetPlan,
}

/// `split --json`, and the volumes of `create --volume-size`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitReport {
    /// Always true.
    pub ok: bool,
    /// The volumes' prefix (`PREFIX.001`, …).
    pub prefix: PathBuf,
    /// The bundle digest.
    pub digest: String,
    /// Bytes of the whole bundle.
    pub size: u64,
    /// Largest volume, in bytes.
    pub volume_size: u64,
    /// The data volumes, first first.
    pub volumes: Vec<PathBuf>,
    /// The parity volumes.
    pub parity_volumes: Vec<PathBuf>,
    /// Volumes of an earlier set with the same prefix that were removed.
    pub removed: Vec<PathBuf>,
}

/// `sbom -o FILE --json`: the document written.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SbomReport {
    /// Always true.
    pub ok: bool,
    /// The file written, as given with -o.
    pub output: PathBuf,
    /// `cyclonedx` or `spdx`.
    pub format: String,
    /// The document's media type.
    pub media_type: String,
    /// The document's sha256.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The bundle's name.
    pub name: String,
    /// The bundle's version.
    pub version: String,
    /// The bundle digest the document names.
    pub digest: String,
    /// Components described (objects of the bundle).
    pub components: usize,
    /// Always false: an SBOM lists the signers the bundle claims.
    pub signature_checked: bool,
}

/// `join --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinReport {
    /// Always true.
    pub ok: bool,
    /// The whole bundle written.
    pub bundle: PathBuf,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// The data volumes read.
    pub volumes: Vec<PathBuf>,
    /// The volumes rebuilt from parity.
    pub rebuilt: Vec<PathBuf>,
    /// What was found wrong with the set on the way (a volume set aside, …).
    pub notes: Vec<String>,
    /// Always false: join checks digests, verify and import the signature.
    pub signature_checked: bool,
}

/// `serve --json`: what the server serves and how clients reach it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServeReport {
    /// Always true: the server started.
    pub ok: bool,
    /// The base URL clients are told to use.
    pub url: String,
    /// The address it listens on (the port chosen, for port 0).
    pub listen: String,
    /// The bundles served.
    pub bundles: Vec<ServedBundle>,
    /// Repositories served.
    pub repositories: usize,
    /// Tags served.
    pub tags: usize,
    /// Nix store paths served.
    pub nix_paths: usize,
    /// Registry host -> endpoints, for a K3s `registries.yaml` `mirrors` section.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// The `registries.yaml` snippet.
    pub registries_yaml: String,
    /// The `nix.conf` lines.
    pub nix_conf: String,
}

/// One bundle of [`ServeReport`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServedBundle {
    /// The file (or first volume) given.
    pub path: String,
    /// Its manifest digest.
    pub digest: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Names of the trusted keys whose signatures verified.
    pub signers: Vec<String>,
}

/// `inventory --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryReport {
    /// The inventory file written.
    pub inventory: PathBuf,
    /// Its digest (what a delta names as its base).
    pub digest: String,
    /// The site's name.
    pub site: String,
    /// When it was taken (seconds since 1970).
    pub created: u64,
    /// Bytes of the file.
    pub size: u64,
    /// Names of the site keys that signed it.
    pub signers: Vec<String>,
    /// Blobs listed in containerd's content store.
    pub containerd_blobs: usize,
    /// Repositories listed in the fleet registry.
    pub registry_repositories: usize,
    /// Distinct blobs those repositories reach.
    pub registry_blobs: usize,
    /// Valid Nix paths listed.
    pub nix_paths: usize,
    /// The bundles K3s's folders show.
    pub bundles: Vec<BundleSeen>,
}

/// `patch --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchReport {
    /// The full bundle written.
    pub bundle: PathBuf,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The delta it was rebuilt from.
    pub delta: PathBuf,
    /// The delta's digest.
    pub delta_digest: String,
    /// The base bundles, as given.
    pub bases: Vec<PathBuf>,
    /// Blobs copied from the delta.
    pub blobs_from_delta: usize,
    /// Blobs copied from the bases.
    pub blobs_from_bases: usize,
    /// Names of the keys whose signatures the full bundle carries (not checked:
    /// `verify` does).
    pub signers: Vec<String>,
}

/// `diff --json`: the two bundles, then the difference ([`Diff`]'s fields).
#[derive(Debug, Serialize)]
pub struct DiffReport {
    /// The older bundle.
    pub old: DiffSide,
    /// The newer bundle.
    pub new: DiffSide,
    /// What changed, and what a delta of the new against the old would store.
    #[serde(flatten)]
    pub diff: Diff,
}

/// One bundle of `diff --json`.
#[derive(Debug, Serialize)]
pub struct DiffSide {
    /// Its path, as given.
    pub bundle: PathBuf,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its digest.
    pub digest: String,
}

/// `key generate --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyGenerateReport {
    /// The key's name.
    pub name: String,
    /// The secret key file written.
    pub secret_key_file: PathBuf,
    /// The public key file written.
    pub public_key_file: PathBuf,
    /// The public key (`name:base64`).
    pub public_key: String,
}

/// `key public --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPublicReport {
    /// The key's name.
    pub name: String,
    /// The public key (`name:base64`).
    pub public_key: String,
}

/// `man --dir DIR --json`.
#[derive(Debug, Serialize)]
pub struct ManReport {
    /// Always true.
    pub ok: bool,
    /// The pages written.
    pub pages: Vec<PathBuf>,
}

/// What any command prints with `--json` when it fails (usage errors included).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReport {
    /// Always false.
    pub ok: bool,
    /// The exit code.
    pub exit_code: u8,
    /// The error and its causes, joined by `: `.
    pub error: String,
}

/// `list --json`: the bundles imported on this host, from their receipts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListReport<'a> {
    /// The state folder read.
    pub state_dir: PathBuf,
    /// Every receipt there, as stored (`bundle-spec/schema/receipt.schema.json`).
    pub bundles: Vec<&'a crate::bundle::receipt::Receipt>,
}

/// `remove --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveReport {
    /// Always true: a failure prints an [`ErrorReport`].
    pub ok: bool,
    /// The bundle removed.
    pub name: String,
    /// Only with `--dry-run`: true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// What was taken away, one line each (absent with `--dry-run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired: Option<Vec<String>>,
    /// With `--dry-run`: what would be taken away, one line each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_retire: Option<Vec<String>>,
}
