//! OCI and Docker naming rules, pure (no network, no processes, no async).
//!
//! An image reference is text that every part of gapbundle reads: a spec's `ref:`, an
//! image a chart runs, an object name in a bundle (hostile until checked), a name
//! registered in containerd or pushed to a fleet registry. If two of them parse it
//! differently, an image is bundled under one name and looked up under another, so
//! there is exactly one parser, [`reference`](mod@reference), and it follows the grammar and the
//! normalisation of Docker's `distribution/reference` and containerd's CRI plugin
//! rule for rule. The network side (which host to connect to, over which transport)
//! lives in [`crate::registry`], which takes its names from here, and from
//! [`registries`] (K3s's `registries.yaml`, parsed) where those names are fetched
//! from: mirrors change where bytes come from, never what an image is called.
//!
//! [`distribution`] is the other side of the same protocol: the distribution-spec's
//! pull API as `gapbundle serve` answers it (routes, error envelopes, pagination,
//! referrers), as data, so that its rules can be tested without a socket.

pub mod distribution;
pub mod reference;
pub mod registries;

pub use reference::{Reference, ReferenceError};
