//! The binary cache half of the view: `nix-cache-info`, a narinfo per store path and
//! the NAR blobs, named as the `file://` cache writer names them.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Blobs, Bundle, ViewError};
use crate::import::nix::cached_paths;
use crate::io::serve::{Blob, Body, Reply, Request};
use crate::nixfmt::{cache_info, NarHash, StorePath};

/// What the binary cache serves.
pub(super) struct Cache {
    docs: BTreeMap<String, Doc>,
    /// How many store paths.
    pub(super) paths: usize,
}

enum Doc {
    Text(Bytes, &'static str),
    Nar(Blob),
}

impl Cache {
    pub(super) fn build(bundles: &[Bundle], stored: &Blobs) -> anyhow::Result<Cache> {
        let mut docs = BTreeMap::new();
        docs.insert(
            "nix-cache-info".to_string(),
            Doc::Text(
                Bytes::from_static(cache_info().as_bytes()),
                "text/x-nix-cache-info",
            ),
        );
        let mut seen: BTreeMap<StorePath, (NarHash, String)> = BTreeMap::new();
        for b in bundles {
            for c in cached_paths(&b.head, &b.signers)? {
                if let Some((hash, first)) = seen.get(&c.path) {
                    if *hash != c.nar_hash {
                        return Err(ViewError::PathConflict {
                            path: c.path.to_string(),
                            first: first.clone(),
                            second: format!("{} (NAR hash {})", b.label, c.nar_hash),
                        }
                        .into());
                    }
                    continue;
                }
                let Some(s) = stored.get(&c.blob.digest) else {
                    return Err(ViewError::Missing {
                        digest: c.blob.digest,
                        what: format!("nix-path {}", c.path),
                        bundle: b.label.clone(),
                    }
                    .into());
                };
                seen.insert(
                    c.path.clone(),
                    (c.nar_hash, format!("{} (NAR hash {})", b.label, c.nar_hash)),
                );
                docs.insert(
                    c.narinfo_name,
                    Doc::Text(c.narinfo.into(), "text/x-nix-narinfo"),
                );
                // Checked for what it decodes to as it is served: a Nix client
                // restores a NAR before it can compare its hash.
                let nar = Blob {
                    nar: c.blob.content.clone(),
                    ..s.blob.clone()
                };
                docs.insert(c.nar_name, Doc::Nar(nar));
            }
        }
        Ok(Cache {
            docs,
            paths: seen.len(),
        })
    }

    pub(super) fn reply(&self, req: &Request<'_>) -> Reply {
        if !matches!(req.method, "GET" | "HEAD") {
            return Reply::text(405, "text/plain; charset=utf-8", "read-only\n")
                .header("Allow", "GET, HEAD");
        }
        let name = req.path.strip_prefix('/').unwrap_or(req.path);
        match self.docs.get(name) {
            Some(Doc::Text(body, content_type)) => Reply::text(200, content_type, body.clone()),
            Some(Doc::Nar(blob)) => Reply {
                ranges: true,
                ..Reply::new(200, Body::Blob(blob.clone()))
                    .header("Content-Type", "application/x-nix-nar")
            },
            None => Reply::text(404, "text/plain; charset=utf-8", "404 page not found\n"),
        }
    }
}

/// The answer for a NAR found changed on disk.
pub(super) fn gone() -> Reply {
    Reply::text(
        410,
        "text/plain; charset=utf-8",
        "this NAR changed in the bundle file after gapbundle serve verified it, and is not served; see the server's log\n",
    )
}
