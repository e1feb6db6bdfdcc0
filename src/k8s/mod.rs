//! Kubernetes manifests as data: the pure half of rendering charts, overlays and plain
//! manifests into a bundle.
//!
//! `resolve::k8s` runs `helm` and `kubectl kustomize` and reads files; everything it
//! then does with their output lives here, with no processes and no network, so that
//! it can be tested on its own: splitting YAML streams into documents
//! ([`documents`]), finding the images a workload runs ([`images`]), naming the files
//! an importer writes ([`names`]), merging values and writing K3s `HelmChart`
//! resources ([`helmchart`]), making a chart archive byte-reproducible ([`archive`])
//! and matching `manifests:` globs ([`glob`]).

pub mod archive;
pub mod documents;
pub mod glob;
pub mod helmchart;
pub mod images;
pub mod names;

pub use documents::{split_documents, Document};
pub use images::workload_images;

/// Media type of a rendered Kubernetes document stored in a bundle.
pub const MANIFEST_MEDIA_TYPE: &str = "application/yaml";
/// Media type of a Helm chart archive stored in a bundle (the one Helm uses in OCI).
pub const CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// Documents at least this large are stored zstd-compressed (`encoding: zstd`).
pub const COMPRESS_THRESHOLD: usize = 64 * 1024;
/// Blob rank of chart archives: after every image (rank 0) and every NAR (ranked by
/// depth), before the documents.
pub const RANK_CHART: u32 = u32::MAX - 1;
/// Blob rank of rendered documents: last, so an importer streaming the bundle has
/// every image before the first manifest that uses it.
pub const RANK_MANIFEST: u32 = u32::MAX;

/// A problem with rendered YAML, located for the person who wrote the input.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// A document is not YAML.
    #[error("{source_name}: document {index} is not valid YAML: {reason}")]
    Yaml {
        /// `chart:web`, `manifests:extra/a.yaml`, ...
        source_name: String,
        /// 0-based index of the document in the stream.
        index: usize,
        /// The parser's message.
        reason: String,
    },
    /// A document is YAML but not a Kubernetes object.
    #[error("{source_name}: document {index} is not a Kubernetes object: {reason}")]
    NotAnObject {
        /// Where it came from.
        source_name: String,
        /// 0-based index of the document in the stream.
        index: usize,
        /// What is missing.
        reason: String,
    },
    /// The input is not UTF-8.
    #[error("{source_name}: not UTF-8 text")]
    NotText {
        /// Where it came from.
        source_name: String,
    },
    /// A chart archive could not be read.
    #[error("chart archive: {0}")]
    Archive(String),
}

impl crate::error::Classify for K8sError {
    /// Whoever rendered or read the documents decides (create: bad input).
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}
