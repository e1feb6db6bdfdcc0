//! `gapbundle serve`: bundles as a site's registry and binary cache, in place.
//!
//! The order is the trust order of every command that reads a bundle: each bundle's
//! head is read and its signature checked before a single blob of any of them is
//! hashed (an untrusted bundle is refused at once, never after a long read), then
//! every blob of every bundle is verified once, in parallel, and only then is the
//! address bound and anything served. A bundle that fails either check is not
//! served, and neither is any other: the server never starts on part of what it
//! was asked to serve.
//!
//! What it prints on stdout at start is what an operator copies to the nodes: the
//! URL, the `registries.yaml` mirror snippet for K3s (a mirror for every registry
//! host the images name, the endpoint this server) and the `nix.conf` lines
//! (`substituters`, `trusted-public-keys` with the keys that signed). With `--json`
//! the same on one line, which a script reads before it points clients at the
//! server. Then a log line per request goes to stderr (`--quiet`: none); a blob cut
//! short because its bytes changed on disk is reported there in any case.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use super::report::{print_json_line, ServeReport, ServedBundle};
use super::settings::ServeSettings;
use super::verify::check_trust;
use super::Failure;
use crate::bundle::reader::{read_head, verify_parallel};
use crate::cli::{OutputArgs, ServeArgs};
use crate::error::InputFailure;
use crate::import::push::{registries_yaml, NodeConfig};
use crate::io::serve::{tls_config, Config, Server, Sink};
use crate::io::source::BundleSource;
use crate::progress::{human_bytes, Progress};
use crate::serve::{Bundle, View};
use crate::text::escaped;

/// Runs serve.
pub fn run(a: ServeArgs, out: &OutputArgs) -> Result<(), Failure> {
    let a = ServeSettings::resolve(a);
    let progress = Progress::new(out.quiet || out.json);
    // Every head and signature first.
    let mut opened = Vec::new();
    for path in &a.bundles {
        let source = BundleSource::open(path)?;
        source.report_to(&progress);
        let Some(shared) = source.shared() else {
            return Err(InputFailure(format!(
                "{}: serve reads blobs at the offsets the manifest gives, so it needs the bundle file (or its first volume), not a pipe",
                source.describe()
            ))
            .into());
        };
        let head = read_head(&mut source.reader()?)
            .with_context(|| format!("reading the head of {}", path.display()))?;
        let trust = check_trust(&head, &a.trust, &progress).map_err(|f| Failure {
            code: f.code,
            error: f.error.context(format!("{} is not served", path.display())),
        })?;
        opened.push((path, source, shared, head, trust));
    }
    // Then every blob, once.
    let total: u64 = opened
        .iter()
        .map(|(_, _, _, h, _)| h.manifest.data_len())
        .sum();
    let bar = progress.bar("bundle data", total);
    let mut bundles = Vec::new();
    for (path, source, shared, head, trust) in opened {
        verify_parallel(&*shared, &head, a.threads, &|n| bar.inc(n))
            .map_err(|e| source.place_damage(e))
            .with_context(|| format!("{} is not served", path.display()))?;
        bundles.push(Bundle {
            label: path.display().to_string(),
            source: shared,
            signers: trust.signers().to_vec(),
            head,
        });
    }
    bar.clear();
    let view = View::build(&bundles)?;
    let mut config = Config::new(a.listen);
    config.max_connections = a.max_connections;
    if let Some((cert, key)) = &a.tls {
        config.tls = Some(tls_config(cert, key)?);
    }
    let log: Sink = Arc::new(|line: &str| eprintln!("{line}"));
    if !out.quiet {
        config.log = Some(log);
    }
    config.faults = Some(Arc::new(|line: &str| eprintln!("warning: {line}")));
    let tls = config.tls.is_some();
    let hosts = view.hosts().clone();
    let (repositories, tags, nix_paths) = view.counts();
    let server = Server::start(config, view)?;
    let url = match &a.url {
        Some(u) => u.clone(),
        None => advertised(server.addr(), tls, &a.host_name),
    };
    let mut keys: Vec<String> = bundles
        .iter()
        .flat_map(|b| b.signers.iter().map(|k| k.to_string()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut yaml = registries_yaml(&hosts, &url, &NodeConfig::default());
    let mut nix_conf = format!(
        "substituters = {url}\ntrusted-public-keys = {}\n",
        keys.join(" ")
    );
    if tls {
        yaml.push_str(&format!(
            "# With a private CA, also (ca_file: the CA certificate that signed the server's):\n# configs:\n#   \"{}\":\n#     tls:\n#       ca_file: \"/etc/rancher/k3s/gapbundle-ca.pem\"\n",
            url.trim_start_matches("https://")
        ));
        nix_conf.push_str("# With a private CA, also: ssl-cert-file = /path/to/ca-bundle.pem (it replaces the system's\n# CAs for Nix; Nix 2.8 has no such setting and reads NIX_SSL_CERT_FILE from the environment)\n");
    }
    let report = ServeReport {
        ok: true,
        url: url.clone(),
        listen: server.addr().to_string(),
        bundles: bundles
            .iter()
            .map(|b| ServedBundle {
                path: b.label.clone(),
                digest: b.head.digest.to_string(),
                name: b.head.manifest.name.clone(),
                version: b.head.manifest.version.clone(),
                signers: b.signers.iter().map(|k| k.name().to_string()).collect(),
            })
            .collect(),
        repositories,
        tags,
        nix_paths,
        mirrors: hosts
            .iter()
            .map(|h| (h.clone(), vec![url.clone()]))
            .collect(),
        registries_yaml: yaml,
        nix_conf,
    };
    if out.json {
        // One line: a script reads it, then points its clients at the server.
        print_json_line(&report);
    } else if !out.quiet {
        for b in &report.bundles {
            let who = match b.signers.as_slice() {
                [] => "signature NOT checked".to_string(),
                s => format!("signed by {}", escaped(&s.join(", "))),
            };
            say!(
                "{} {} ({}) from {}: {who}",
                escaped(&b.name),
                escaped(&b.version),
                b.digest,
                b.path
            );
        }
        let bytes: u64 = bundles.iter().map(|b| b.head.file_len()).sum();
        say!(
            "serving {} ({}) and {} from {} verified, read-only, on {}",
            count(repositories, "repository", "repositories"),
            count(tags, "tag", "tags"),
            count(nix_paths, "Nix path", "Nix paths"),
            human_bytes(bytes),
            report.listen
        );
        say!(
            "\nK3s nodes: /etc/rancher/k3s/registries.yaml\n{}",
            report.registries_yaml
        );
        say!(
            "Nix hosts: nix.conf (or --option NAME VALUE)\n{}",
            report.nix_conf
        );
    }
    server.run().context("serving the bundles")?;
    Ok(())
}

/// `1 tag`, `3 tags`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The URL clients are told to use when `--url` is not given: the address listened
/// on, or this host's name when that is every interface.
fn advertised(addr: SocketAddr, tls: bool, host_name: &str) -> String {
    let scheme = if tls { "https" } else { "http" };
    if addr.ip().is_unspecified() {
        format!("{scheme}://{host_name}:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    }
}
