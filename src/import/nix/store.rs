//! A Nix store as the target: what is valid there, `nix copy` into it (from the
//! bundle served in place on a loopback port, or from the staged cache), and the GC
//! roots.
//!
//! Nix checks every path's signature against `trusted-public-keys`, which is set
//! (for that one command) to the keys given with `--trust`, so no `--no-check-sigs`
//! is needed: Nix itself checks what we checked. Only with `--allow-unsigned` and no
//! trusted key is `--no-check-sigs` passed. Nix also checks each NAR against its
//! signed NAR hash before it registers the path, and refuses every path that
//! references one it refused. But it restores a NAR into the store before it
//! compares the hash, so what it is handed is checked first: served in place, each
//! NAR is decompressed and parsed chunk by chunk by the server before it is sent
//! (see [`crate::io::serve`]); staged, each was checked before it took its name
//! (see `super::cache`). Whatever Nix restored of a path it then refused is
//! removed ([`NixTarget::remove_unregistered`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fs_err as fs;

use super::validate::{bad, verify_in_batches, NixObject};
use super::{cached_path, stream, Dest, NixTarget};
use crate::bundle::reader::{damage, Entry, Head};
use crate::error::NixStoreFailure;
use crate::import::Target;
use crate::io::process::{nix_cmd, ProcessError};
use crate::io::serve::{Blob, Config, Document, Documents, Fault, Served, Server};
use crate::nixfmt::serve_proto::HeldPath;
use crate::nixfmt::{cache_info, parse_path_info, NarHash, NarInfoIdentity, StorePath};
use crate::progress::{Bar, Progress};

/// Store paths per `nix path-info` call (the inventory of a store): each call is a
/// Nix process; 4,000 paths are some 300 KB of arguments, well within Linux's limit.
const ARGS_PER_CALL: usize = 4000;

/// A `no_proxy` value: `current` with `127.0.0.1` added.
fn with_loopback(current: Option<std::ffi::OsString>) -> String {
    match current.map(|c| c.to_string_lossy().into_owned()) {
        Some(c) if !c.trim().is_empty() => format!("{c},127.0.0.1"),
        _ => "127.0.0.1".to_string(),
    }
}

/// Why Nix refused a path, from one line of its stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// "hash mismatch importing path '<path>'" (or "size mismatch"): the NAR is not
    /// the one its narinfo names.
    Mismatch(String),
    /// "cannot add path '<path>' because it lacks a valid signature": the store
    /// (a daemon, for a user it does not trust) does not trust the key.
    Untrusted(String),
}

fn refusal(line: &str) -> Option<Refusal> {
    fn quoted(rest: &str) -> Option<&str> {
        rest.split('\'').next()
    }
    if let Some((_, rest)) = line.split_once("mismatch importing path '") {
        return quoted(rest).map(|p| Refusal::Mismatch(p.to_string()));
    }
    if line.contains("lacks a valid signature") {
        let (_, rest) = line.split_once("cannot add path '")?;
        return quoted(rest).map(|p| Refusal::Untrusted(p.to_string()));
    }
    None
}

/// The bundle's paths that no other path of it references: the roots its closures
/// hang from.
fn closure_roots(objects: &[NixObject]) -> Vec<&StorePath> {
    let referenced: BTreeSet<&StorePath> = objects
        .iter()
        .flat_map(|o| o.references.iter().filter(move |r| **r != o.path))
        .collect();
    objects
        .iter()
        .map(|o| &o.path)
        .filter(|p| !referenced.contains(p))
        .collect()
}

/// The store path in Nix's "copying path '<path>' from '<store>'..." line.
fn copying_path(line: &str) -> Option<&str> {
    line.strip_prefix("copying path '")?.split('\'').next()
}

impl NixTarget {
    /// Which of `paths` are valid on the target.
    pub(super) fn valid(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>> {
        match &self.dest {
            Dest::Cache(dir) => Ok(paths
                .iter()
                .filter(|p| dir.join(format!("{}.narinfo", p.hash_part())).is_file())
                .cloned()
                .collect()),
            Dest::Store { .. } => Ok(self.held(paths)?.into_keys().collect()),
        }
    }

    /// What a store holds of `paths`: the valid ones, each with its NAR hash and
    /// signatures ([`stream::held`]). A cache holds no signatures apart from its
    /// narinfo files: for one, only [`NixTarget::valid`] is asked.
    pub(super) fn held(&self, paths: &[StorePath]) -> Result<BTreeMap<StorePath, HeldPath>> {
        self.ask_held(paths, false, None, None)
            .map(|(held, _)| held)
    }

    /// [`NixTarget::held`], asked by the plan: where the paths would then go in
    /// through `nix-store --serve --write` from the bundle file, it is that
    /// `nix-store` that is asked (the one [`super::start_early`] started, if any),
    /// and it is kept in `self.kept` for the import.
    ///
    /// While Nix answers, on one core, the path signatures are checked on the other
    /// (one batch, [`verify_in_batches`]): the plan needs them whenever it finds a
    /// path to add, and on an import into a store that exists the question and the
    /// check took about as long each (40 and 25 ms for 2,101 paths here). Not on a
    /// rerun, though, where the plan needs none of them and the check beside Nix
    /// made the whole rerun slower (91 to 111 ms here): the store is first asked
    /// whether it holds the closure's roots ([`stream::Probe`]), and the check
    /// starts only when it does not. The second value says whether they
    /// all passed there; when they did not, or were not checked, the plan checks
    /// them itself if it needs them, naming the first that fails.
    pub(super) fn held_for_plan(
        &mut self,
        paths: &[StorePath],
    ) -> Result<(BTreeMap<StorePath, HeldPath>, bool)> {
        let keep = self.dest.keeps_serve(self.ask_only, self.bundle.is_some());
        let started = self.early.take();
        let this = &*self;
        // Borrowed apart for the thread: the target itself is not `Sync`.
        let (objects, trusted) = (&self.objects, &self.trusted);
        // Only a store that is asked, for signatures that would be checked.
        let roots = if this.dest.exists() && !trusted.is_empty() {
            closure_roots(objects)
        } else {
            Vec::new()
        };
        let (answer, signed) = std::thread::scope(|s| {
            let mut check = None;
            let mut answer = |roots_held: bool| {
                if !roots_held {
                    check = Some(s.spawn(|| verify_in_batches(objects, trusted, 1)));
                }
            };
            let probe = (!roots.is_empty()).then(|| stream::Probe {
                paths: &roots,
                answer: &mut answer,
            });
            let held = this.ask_held(paths, keep, started, probe);
            let signed = check.is_some_and(|c: std::thread::ScopedJoinHandle<'_, bool>| {
                c.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            (held, signed)
        });
        let (held, kept) = answer?;
        self.kept = kept;
        Ok((held, signed))
    }

    fn ask_held(
        &self,
        paths: &[StorePath],
        keep: bool,
        started: Option<stream::Started>,
        probe: Option<stream::Probe<'_>>,
    ) -> Result<(BTreeMap<StorePath, HeldPath>, Option<stream::Kept>)> {
        let Dest::Store { uri, .. } = &self.dest else {
            unreachable!("only a store is asked what it holds");
        };
        if !self.dest.exists() {
            // A fresh store: nothing is valid (and nothing is made before the
            // bundle verified).
            return Ok((BTreeMap::new(), None));
        }
        let asked: Vec<&StorePath> = paths.iter().collect();
        let (held, kept) = stream::held(uri.as_deref(), &asked, keep, started, probe)
            .map_err(|e| self.unreached(e))
            .with_context(|| format!("asking {} which paths it has", self.describe()))?;
        Ok((
            held.into_iter().map(|h| (h.path.clone(), h)).collect(),
            kept,
        ))
    }

    /// `e`, from the first question a store is asked, as a [`NixStoreFailure`] with
    /// the next step when Nix says nothing answers at the store's socket (a daemon
    /// that is not running, a `unix://` path that is wrong): the store's own trouble
    /// to fix, as for containerd or a registry, not this machine's.
    fn unreached(&self, e: ProcessError) -> anyhow::Error {
        match &e {
            ProcessError::Failed { stderr, .. } if stderr.contains("cannot connect to socket at") => {
                NixStoreFailure(format!(
                    "{} cannot be reached: no Nix daemon answers at its socket. Is nix-daemon running (systemctl status nix-daemon), and is --nix-store right (`daemon` is /nix/var/nix/daemon-socket/socket, or unix:///PATH)? ({e})",
                    self.describe()
                ))
                .into()
            }
            _ => e.into(),
        }
    }

    /// The bundle's paths that are valid on the
    /// target but carry none of the signatures the bundle has for them: a path
    /// added by an older gapbundle (which registered signatures in a second step,
    /// and could be killed between the two) or by hand with `nix-store --import`.
    /// An import skips valid paths, so these would stay unsigned; `finish` copies
    /// their signatures.
    pub(super) fn unsigned(&self, held: &BTreeMap<StorePath, HeldPath>) -> Vec<StorePath> {
        if !self.writes_store_itself() {
            return Vec::new();
        }
        self.objects
            .iter()
            .filter(|o| !o.sigs.is_empty())
            .filter(|o| {
                held.get(&o.path)
                    .is_some_and(|h| !o.sigs.iter().any(|s| h.sigs.contains(s)))
            })
            .map(|o| o.path.clone())
            .collect()
    }

    /// The NAR hash of each of `paths` (all valid in the cache): its narinfo's,
    /// when the NAR file it names is there too. (A store's come with
    /// [`NixTarget::held`].)
    pub(super) fn cached_nar_hashes(&self, paths: &[StorePath]) -> BTreeMap<StorePath, NarHash> {
        let Dest::Cache(dir) = &self.dest else {
            return BTreeMap::new();
        };
        paths
            .iter()
            .filter_map(|p| {
                cached_nar_hash(dir, &dir.join(format!("{}.narinfo", p.hash_part())))
                    .filter(|(q, _)| q == p)
            })
            .collect()
    }

    /// Adds the new paths from the bundle file in place: through one `nix-store
    /// --serve --write` into a store this process writes itself ([`stream`]),
    /// otherwise with `nix copy` from the bundle served on a loopback port
    /// ([`NixTarget::copy_in_place`]).
    pub(super) fn serve_in_place(&mut self, head: &Head, progress: &Progress) -> Result<()> {
        if !self.writes_store_itself() {
            return self.copy_in_place(head, progress);
        }
        // This way makes no temporary folder, whose making would sweep what a
        // killed import left in $TMPDIR (a staged cache of a piped bundle): swept
        // here instead.
        crate::io::temp::sweep(&std::env::temp_dir());
        let src = self.bundle.clone().expect("in_place checked");
        let by_path: BTreeMap<&StorePath, &NixObject> =
            self.objects.iter().map(|o| (&o.path, o)).collect();
        let items: Vec<stream::Item<'_>> = self
            .new_paths
            .iter()
            .map(|p| {
                let object = by_path[p];
                let offset = head.blob_position(&object.entry).expect("checked in plan");
                stream::Item { object, offset }
            })
            .collect();
        let total: u64 = items.iter().map(|i| i.object.entry.size).sum();
        let bar = progress.bar(format!("Nix paths into {}", self.describe()), total);
        let uri = match &self.dest {
            Dest::Store { uri, .. } => uri.as_deref(),
            Dest::Cache(_) => None,
        };
        let kept = self.kept.take();
        let added =
            stream::import(uri, kept, &*src, &items, &|n| bar.inc(n)).map_err(|e| match e {
                stream::StreamError::Fault(d, f) => self.cut_short(head, &src.describe(), &d, &f),
                stream::StreamError::Nix(e) => anyhow::Error::new(e).context(format!(
                    "adding {} paths to {} (nix-store --serve --write)",
                    items.len(),
                    self.describe()
                )),
            });
        match &added {
            Ok(()) => {
                bar.set_position(total);
                bar.finish("added");
            }
            Err(_) => bar.clear(),
        }
        added
    }

    /// Serves the new paths' narinfos and the bundle file's NAR blobs on a loopback
    /// port ([`crate::io::serve`]) for one `nix copy`: the documents `gapbundle serve`
    /// serves for them too ([`super::cached_path`]). The server hashes each blob
    /// again as Nix reads it and holds back its last bytes if the file changed since
    /// it verified, so Nix never completes a NAR we did not check.
    fn copy_in_place(&mut self, head: &Head, progress: &Progress) -> Result<()> {
        let src = self.bundle.clone().expect("in_place checked");
        let source: Served = src.clone();
        let by_path: BTreeMap<&StorePath, &NixObject> =
            self.objects.iter().map(|o| (&o.path, o)).collect();
        let mut docs = BTreeMap::new();
        docs.insert(
            "nix-cache-info".to_string(),
            Document::Text(cache_info().into(), "text/x-nix-cache-info"),
        );
        for p in &self.new_paths {
            let c = cached_path(by_path[p])?;
            let offset = head.blob_position(&c.blob).expect("checked in plan");
            docs.insert(
                c.narinfo_name,
                Document::Text(c.narinfo.into(), "text/x-nix-narinfo"),
            );
            docs.insert(
                c.nar_name,
                Document::Blob(Blob {
                    source: source.clone(),
                    offset,
                    size: c.blob.size,
                    digest: c.blob.digest,
                    // Nix restores what it is sent before it checks the hash: the
                    // server checks the NAR first (a bomb, an invalid NAR).
                    nar: c.blob.content.clone(),
                }),
            );
        }
        let docs = Documents::new(docs)?;
        let prefix = docs.prefix().to_string();
        let server = Server::start(Config::loopback(), docs).with_context(|| {
            format!(
                "serving the bundle's NARs to Nix on a loopback port (127.0.0.1); without one, pipe the bundle in instead, `gapbundle import - … < {}`, and its NARs are staged in $TMPDIR",
                src.describe()
            )
        })?;
        // Nix keeps what an HTTP cache said in a disk cache of its own; that one
        // belongs to this server alone. And a proxy set for the machine (common in
        // the field) must not be asked for a loopback address.
        let cache_home = crate::io::temp::folder("nix-cache")?;
        let mut env = vec![("XDG_CACHE_HOME", cache_home.path().as_os_str().to_owned())];
        for var in ["no_proxy", "NO_PROXY"] {
            env.push((var, with_loopback(std::env::var_os(var)).into()));
        }
        // Nix names a path when it starts it, not its bytes: the bar follows the
        // bytes the server hands Nix instead, so a path of several gigabytes moves
        // it as it goes.
        let total: u64 = self
            .new_paths
            .iter()
            .map(|p| &by_path[p].entry)
            .map(|b| b.size)
            .sum();
        let bar = progress.bar(format!("Nix paths into {}", self.describe()), total);
        let from = format!("{}{prefix}", server.url());
        let done = std::sync::atomic::AtomicBool::new(false);
        let copied = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    bar.set_position(server.served().min(total));
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
            // Set on the way out, a panic's too: the scope waits for the thread.
            struct Done<'a>(&'a std::sync::atomic::AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let _done = Done(&done);
            self.copy_into_store(&self.new_paths, &from, &env, progress, Some(&bar))
        });
        match &copied {
            Ok(()) => {
                bar.set_position(total);
                bar.finish("added");
            }
            Err(_) => bar.clear(),
        }
        // Every NAR Nix asked for, checked to its end (see `Server::finish`).
        let failures = server.finish();
        if let Some(m) = failures.first() {
            return Err(self.cut_short(head, &src.describe(), &m.expected, &m.found));
        }
        copied
    }

    /// Removes what a failed `nix copy` restored into a local store without
    /// registering it (Nix writes a path's files before it checks its NAR hash,
    /// and a path cut short stays as it was): every new path that is still not
    /// valid but has something at its place in the store, with `nix-store
    /// --delete`, which removes invalid paths and nothing that is valid.
    /// Best effort, after the failure that matters was reported.
    pub(super) fn remove_unregistered(&self, progress: &Progress) {
        let Dest::Store { uri, root, .. } = &self.dest else {
            return;
        };
        let store_dir = match (uri.as_deref(), root) {
            (_, Some(r)) => r.join("nix/store"),
            (None | Some("auto" | "local"), None) => PathBuf::from("/nix/store"),
            // A daemon or a remote store: its own garbage collector's business.
            _ => return,
        };
        let Ok(valid) = self.valid(&self.new_paths) else {
            return;
        };
        let left: Vec<&StorePath> = self
            .new_paths
            .iter()
            .filter(|p| !valid.contains(*p))
            .filter(|p| fs_err::symlink_metadata(store_dir.join(p.base_name())).is_ok())
            .collect();
        if left.is_empty() {
            return;
        }
        let mut cmd = nix_cmd("nix-store");
        if let Some(u) = uri {
            cmd = cmd.args(["--store", u]);
        }
        if let Err(e) = cmd
            .arg("--delete")
            .args(left.iter().map(|p| p.as_str()))
            .output()
        {
            progress.warn(format!(
                "Nix left {} path(s) it did not register in {} and `nix-store --delete` could not remove them ({e:#}); `nix-store --gc` will",
                left.len(),
                store_dir.display()
            ));
        }
    }

    /// `nix copy --from FROM` into the store of all new paths, with `env` added to
    /// its environment. With `bar`, the caller shows the bytes; without (FROM is
    /// the staged `file://` cache), a bar in bytes of the NAR blobs follows what
    /// Nix has read, which is those files: Nix names each path as it starts it, but
    /// not its bytes, and in Nix 2.8 it names every path before it copies any.
    pub(super) fn copy_into_store(
        &self,
        paths: &[StorePath],
        from: &str,
        env: &[(&str, std::ffi::OsString)],
        progress: &Progress,
        bar: Option<&Bar>,
    ) -> Result<()> {
        let Dest::Store { uri, .. } = &self.dest else {
            return Ok(());
        };
        // `--no-recursive`: the new paths are the whole set, references first; the
        // others are valid on the target already and not served (a delta does not
        // even carry their NARs), and a recursive copy would ask the source for the
        // whole closure and fail on the first of them.
        let mut cmd = nix_cmd("nix").args([
            "copy",
            "--no-recursive",
            "--from",
            from,
            "--to",
            uri.as_deref().unwrap_or("auto"),
        ]);
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        if self.trusted.is_empty() {
            if !self.progress_warned.replace(true) {
                progress.warn("no trusted key signed this bundle (--allow-unsigned): Nix is told not to check path signatures (--no-check-sigs)");
            }
            cmd = cmd.arg("--no-check-sigs");
        } else {
            let keys: Vec<String> = self.trusted.iter().map(|k| k.to_string()).collect();
            cmd = cmd.args(["--option", "trusted-public-keys", &keys.join(" ")]);
        }
        // The bytes Nix has read (its NAR files, and a little more: nix.conf, its
        // database) drive the bar, so a long copy is not a silent minute, nor a bar
        // stuck at one path of gigabytes. Where Linux does not say, Nix's "copying
        // path '<path>' from '<cache>'..." moves it a path at a time.
        let sizes: BTreeMap<String, u64> = self
            .objects
            .iter()
            .map(|o| (o.path.to_string(), o.entry.size))
            .collect();
        let total: u64 = paths.iter().filter_map(|p| sizes.get(p.as_str())).sum();
        let own = bar.is_none();
        let bar = match bar {
            Some(b) => b.clone(),
            None => progress.bar(format!("Nix paths into {}", self.describe()), total),
        };
        let shown = bar.clone();
        let refused = std::sync::Arc::new(std::sync::Mutex::new(None::<Refusal>));
        let seen = refused.clone();
        let by_reads = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if own {
            let (read_bar, told) = (bar.clone(), by_reads.clone());
            cmd = cmd.on_bytes_read(move |n| {
                told.store(true, std::sync::atomic::Ordering::Relaxed);
                read_bar.set_position(n.min(total));
            });
        }
        let r = cmd
            .args(paths.iter().map(|p| p.as_str()))
            .on_stderr_line(move |line| {
                if let Some(n) = copying_path(line).and_then(|p| sizes.get(p)) {
                    if own && !by_reads.load(std::sync::atomic::Ordering::Relaxed) {
                        shown.inc(*n);
                    }
                }
                if let (Some(why), Ok(mut s)) = (refusal(line), seen.lock()) {
                    s.get_or_insert(why);
                }
            })
            .output();
        if own {
            match &r {
                Ok(_) => bar.finish("added"),
                Err(_) => bar.clear(),
            }
        }
        match (&r, refused.lock().ok().and_then(|s| s.clone())) {
            (Err(e), Some(Refusal::Mismatch(p))) => {
                // Only a signer can make this: the blob verified, but its NAR is not
                // the one the path is signed under. Nix refused that path, and with it
                // every path that references it.
                return Err(bad(format!(
                    "the NAR of {p} decompresses to other bytes than the NAR hash it is signed under, so Nix refused it: the bundle was made wrong. Neither {p} nor any path that references it was registered; rebuild the bundle. ({e})"
                )));
            }
            (Err(e), Some(Refusal::Untrusted(p))) => {
                let keys: Vec<String> = self.trusted.iter().map(|k| k.to_string()).collect();
                let trust = if keys.is_empty() {
                    "sign the bundle (create --key) and add that public key to trusted-public-keys in the daemon's nix.conf".to_string()
                } else {
                    format!(
                        "add `{}` to trusted-public-keys in the daemon's nix.conf (NixOS: nix.settings.trusted-public-keys) and restart nix-daemon",
                        keys.join(" ")
                    )
                };
                return Err(NixStoreFailure(format!(
                    "{} refused {p}: it does not trust the key that signed it. A Nix daemon checks signatures against its own trusted-public-keys unless the user is trusted: {trust}, or run the import as a trusted user (root, or one in trusted-users). ({e})",
                    self.describe()
                ))
                .into());
            }
            _ => {}
        }
        r.with_context(|| format!("adding {} paths to {}", paths.len(), self.describe()))?;
        Ok(())
    }

    /// Whether this process writes the store itself: see [`Dest::written_here`].
    fn writes_store_itself(&self) -> bool {
        self.dest.written_here()
    }

    /// `nix store copy-sigs` of `paths`: valid already, without the bundle's path
    /// signatures (see [`NixTarget::unsigned`]). They come from a private `file://`
    /// folder holding only the paths' narinfos (the ones the in-place server
    /// serves). Best effort: the paths are valid and whole already, and a rerun
    /// adds what is still missing.
    pub(super) fn copy_sigs(
        &self,
        paths: &[StorePath],
        env: &[(&str, std::ffi::OsString)],
        progress: &Progress,
    ) {
        let Dest::Store { uri, .. } = &self.dest else {
            return;
        };
        let by_path: BTreeMap<&StorePath, &NixObject> =
            self.objects.iter().map(|o| (&o.path, o)).collect();
        let copied = (|| -> Result<()> {
            let dir = crate::io::temp::folder("nix-sigs")?;
            fs::write(dir.path().join("nix-cache-info"), cache_info())?;
            for p in paths {
                let c = cached_path(by_path[p])?;
                fs::write(dir.path().join(&c.narinfo_name), c.narinfo)?;
            }
            let mut cmd = nix_cmd("nix").args(["store", "copy-sigs"]);
            if let Some(u) = uri {
                cmd = cmd.args(["--store", u]);
            }
            for (k, v) in env {
                cmd = cmd.env(k, v);
            }
            cmd.arg("--substituter")
                .arg(format!("file://{}", dir.path().display()))
                .args(paths.iter().map(|p| p.as_str()))
                .output()?;
            Ok(())
        })();
        if let Err(e) = copied {
            progress.warn(format!(
                "{} paths are in {} without the bundle's path signatures, which `nix store copy-sigs` could not copy ({e:#}); Nix does not need them for a local store, and a rerun of this import copies them",
                paths.len(),
                self.describe()
            ));
        }
    }

    /// The error for a NAR the server or the stream cut short.
    fn cut_short(
        &self,
        head: &Head,
        src: &str,
        digest: &crate::bundle::Digest,
        found: &Fault,
    ) -> anyhow::Error {
        let blob = head
            .manifest
            .blob(digest)
            .expect("served ranges are manifest blobs");
        let users: Vec<&str> = self
            .objects
            .iter()
            .filter(|o| o.entry.digest == blob.digest)
            .map(|o| o.path.as_str())
            .collect();
        let users = users.join(", ");
        match found {
            Fault::Content(why) => bad(format!(
                "the NAR of {users} (blob {}) is not the NAR it is signed as: {why}. Nix was not given all of it, and neither it nor any path that references it was registered; rebuild the bundle",
                blob.digest
            )),
            Fault::Changed(found) => anyhow::Error::new(damage(
                head,
                &Entry::Blob(blob),
                Some(*found),
                blob.size,
            ))
            .context(format!(
                "{src} changed after it verified: Nix was not given that NAR; check the disk, copy the bundle again and rerun"
            )),
            Fault::Unreadable(why) => anyhow::Error::new(damage(
                head,
                &Entry::Blob(blob),
                None,
                blob.size,
            ))
            .context(format!(
                "{src} could not be read again after it verified ({why}): Nix was not given that NAR; check the disk, copy the bundle again and rerun"
            )),
        }
    }

    /// Makes each path's GC roots (for a store with a GC roots folder).
    pub(super) fn make_gc_roots(&self) -> Result<Vec<String>> {
        let Dest::Store { gc_dir, .. } = &self.dest else {
            return Ok(Vec::new());
        };
        let mut made = Vec::new();
        let Some(dir) = gc_dir else {
            return Ok(made);
        };
        let mut swept = false;
        for o in &self.objects {
            for name in &o.gc_roots {
                fs::create_dir_all(dir)?;
                let link = dir.join(name);
                if fs::read_link(&link).ok().as_deref() == Some(Path::new(o.path.as_str())) {
                    made.push(link.display().to_string());
                    continue;
                }
                if !swept {
                    crate::io::temp::sweep(dir);
                    swept = true;
                }
                let tmp = dir.join(crate::io::temp::name("gcroot"));
                fs::os::unix::fs::symlink(o.path.as_str(), &tmp)
                    .with_context(|| format!("creating GC root {}", link.display()))?;
                fs::rename(&tmp, &link)?;
                made.push(link.display().to_string());
            }
        }
        Ok(made)
    }
}

/// The path and NAR hash a cache's narinfo `file` gives, when its NAR file is in
/// the cache `dir` too.
pub(super) fn cached_nar_hash(dir: &Path, file: &Path) -> Option<(StorePath, NarHash)> {
    let text = fs_err::read_to_string(file).ok()?;
    let id = NarInfoIdentity::parse(&text)?;
    dir.join(&id.url)
        .is_file()
        .then_some((id.store_path, id.nar_hash))
}

/// `nix path-info --json` over `paths` (`None`: `--all`) in the store `uri`, as
/// path -> NAR hash.
pub(super) fn store_nar_hashes(
    uri: Option<&str>,
    paths: Option<&[StorePath]>,
) -> Result<BTreeMap<StorePath, NarHash>> {
    let mut out = BTreeMap::new();
    let chunks: Vec<Vec<&str>> = match paths {
        Some(p) => p
            .chunks(ARGS_PER_CALL)
            .map(|c| c.iter().map(|p| p.as_str()).collect())
            .collect(),
        None => vec![vec!["--all"]],
    };
    for chunk in chunks {
        let mut cmd = nix_cmd("nix").args(["path-info", "--json"]);
        if let Some(u) = uri {
            cmd = cmd.args(["--store", u]);
        }
        let json = cmd.args(chunk).output()?;
        for info in parse_path_info(&json)? {
            out.insert(info.path, info.nar_hash);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_copy_progress_lines() {
        assert_eq!(
            copying_path("copying path '/nix/store/05mgdl19wlwc3dkxym9rciy2cj8m0lk2-bench-leaf-0279' from 'file:///tmp/gapbundle-nix-stage-x'..."),
            Some("/nix/store/05mgdl19wlwc3dkxym9rciy2cj8m0lk2-bench-leaf-0279")
        );
        assert_eq!(copying_path("copying 331 paths..."), None);
        assert_eq!(copying_path("warning: something"), None);
        assert_eq!(
            refusal("error: hash mismatch importing path '/nix/store/5d3l6hj3bzw8wh1fiqwv3mhxxnzyx7c1-gb-test-lib';"),
            Some(Refusal::Mismatch(
                "/nix/store/5d3l6hj3bzw8wh1fiqwv3mhxxnzyx7c1-gb-test-lib".into()
            ))
        );
        assert_eq!(
            refusal("error: cannot add path '/nix/store/47ya82lx8w7kvbrqn21j2pq58m4i4hg4-bench-leaf-0270' because it lacks a valid signature"),
            Some(Refusal::Untrusted(
                "/nix/store/47ya82lx8w7kvbrqn21j2pq58m4i4hg4-bench-leaf-0270".into()
            ))
        );
        assert_eq!(refusal("copying path '/nix/store/x' from 'y'..."), None);
        assert_eq!(with_loopback(None), "127.0.0.1");
        assert_eq!(with_loopback(Some("".into())), "127.0.0.1");
        assert_eq!(
            with_loopback(Some(".corp.example,10.0.0.0/8".into())),
            ".corp.example,10.0.0.0/8,127.0.0.1"
        );
    }
}
