//! Closure order: references before the paths that use them.
//!
//! `create` ranks each NAR blob by its depth so that a one-pass importer receives
//! references first, and the importer orders registration the same way; both use
//! [`closure_order`], which also refuses cycles and missing references (a bundle is
//! hostile, so a reference graph from it is never assumed to be a closure).

use std::collections::{BTreeMap, BTreeSet};

use super::{NixFormatError, StorePath};

/// Orders a set of paths so that every path comes after its references, and gives
/// each its depth (0 for a path with no references but itself; otherwise one more
/// than its deepest reference). Ties are broken by path, so the order is stable.
/// `known_elsewhere` says whether a reference outside the set is acceptable (already
/// valid on the target); any other missing reference is an error.
pub fn closure_order(
    refs: &BTreeMap<StorePath, Vec<StorePath>>,
    known_elsewhere: impl Fn(&StorePath) -> bool,
) -> Result<Vec<(StorePath, u32)>, NixFormatError> {
    let mut depth: BTreeMap<&StorePath, u32> = BTreeMap::new();
    for (p, rs) in refs {
        for r in rs {
            if r != p && !refs.contains_key(r) && !known_elsewhere(r) {
                return Err(NixFormatError::MissingReference {
                    path: p.to_string(),
                    reference: r.to_string(),
                });
            }
        }
    }
    // Iterative depth-first search; `on_stack` detects cycles.
    let mut on_stack: BTreeSet<&StorePath> = BTreeSet::new();
    for start in refs.keys() {
        if depth.contains_key(start) {
            continue;
        }
        let mut stack: Vec<(&StorePath, usize)> = vec![(start, 0)];
        on_stack.insert(start);
        while let Some((p, next)) = stack.pop() {
            let rs = &refs[p];
            let pending = rs[next..]
                .iter()
                .position(|r| r != p && refs.contains_key(r) && !depth.contains_key(r));
            match pending {
                Some(k) => {
                    let r = &rs[next + k];
                    if on_stack.contains(r) {
                        return Err(NixFormatError::Cycle(r.to_string()));
                    }
                    stack.push((p, next + k + 1));
                    stack.push((r, 0));
                    on_stack.insert(r);
                }
                None => {
                    let d = rs
                        .iter()
                        .filter(|r| *r != p)
                        .filter_map(|r| depth.get(r))
                        .map(|d| d + 1)
                        .max()
                        .unwrap_or(0);
                    depth.insert(p, d);
                    on_stack.remove(p);
                }
            }
        }
    }
    let mut out: Vec<(StorePath, u32)> = depth.into_iter().map(|(p, d)| (p.clone(), d)).collect();
    out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(h: char, name: &str) -> StorePath {
        StorePath::parse(&format!("/nix/store/{}-{name}", h.to_string().repeat(32))).unwrap()
    }

    #[test]
    fn closure_order_puts_references_first() {
        let (base, lib, a, b) = (sp('a', "base"), sp('b', "lib"), sp('c', "a"), sp('d', "b"));
        let mut refs = BTreeMap::new();
        refs.insert(b.clone(), vec![base.clone(), lib.clone()]);
        refs.insert(a.clone(), vec![lib.clone(), a.clone()]);
        refs.insert(lib.clone(), vec![base.clone()]);
        refs.insert(base.clone(), vec![]);
        let order = closure_order(&refs, |_| false).unwrap();
        assert_eq!(
            order,
            vec![
                (base.clone(), 0),
                (lib.clone(), 1),
                (a.clone(), 2),
                (b.clone(), 2)
            ]
        );
        refs.remove(&base);
        let e = closure_order(&refs, |_| false).unwrap_err();
        assert!(matches!(e, NixFormatError::MissingReference { .. }), "{e}");
        assert_eq!(closure_order(&refs, |p| *p == base).unwrap().len(), 3);
        refs.insert(base.clone(), vec![a.clone()]);
        assert!(matches!(
            closure_order(&refs, |_| false),
            Err(NixFormatError::Cycle(_))
        ));
    }
}
