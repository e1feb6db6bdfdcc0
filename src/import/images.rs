//! Image objects as the image targets see them: each with its name checked.
//!
//! An image object's name comes from the bundle, and even a validly signed bundle
//! is hostile until checked: its name is what containerd registers, what the staged
//! archive's `index.json` carries to K3s, and what a fleet push turns into a
//! repository path. A name with a newline, a space or 5,000 characters would be
//! registered as given, and `x@sha256:<other>` would put one image's content under
//! the name of another. So every target that handles images takes them from
//! [`checked`], which refuses the whole bundle, before any target is touched, unless
//! every image object's name is an image reference ([`crate::oci::reference`]) and
//! a name that pins a digest pins the object's own root digest.

use anyhow::Result;

use crate::bundle::manifest::{Kind, Object};
use crate::bundle::reader::Head;
use crate::error::BundleFailure;
use crate::oci::Reference;

/// One image object of a bundle, and its name parsed.
#[derive(Debug, Clone)]
pub struct CheckedImage {
    /// The object as the manifest gives it.
    pub object: Object,
    /// Its name, parsed and normalised.
    pub reference: Reference,
}

/// Every image object of `head`, in manifest order, or a [`BundleFailure`] naming
/// the first one whose name cannot be used.
pub fn checked(head: &Head) -> Result<Vec<CheckedImage>> {
    let mut out = Vec::new();
    for (i, o) in head.manifest.objects.iter().enumerate() {
        if o.kind != Kind::Image {
            continue;
        }
        let refused = |why: String| {
            BundleFailure(format!(
                "objects[{i}] (an image): {why}; the bundle is refused before anything is written: ask whoever signed it for a bundle whose image names are image references"
            ))
        };
        let reference = Reference::parse(&o.name).map_err(|e| refused(e.to_string()))?;
        if let Some(d) = reference.digest() {
            if *d != o.digest {
                return Err(refused(format!(
                    "its name `{}` pins {d}, but the image is {}; a name may only pin its own image",
                    o.name, o.digest
                ))
                .into());
            }
        }
        out.push(CheckedImage {
            object: o.clone(),
            reference,
        });
    }
    Ok(out)
}
