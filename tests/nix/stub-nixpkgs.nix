# A stand-in for the nixpkgs flake's outputs, built on nixpkgs' real lib, so that
# tests/it/flake.rs can evaluate this repository's flake outputs offline:
#   lib                       the real lib (from a nixpkgs.lib checkout)
#   legacyPackages.<system>   fake packages; callPackage passes them to a file's
#                             function like nixpkgs does; builders return fake
#                             derivations that keep their arguments for inspection
#   lib.nixosSystem           not provided: the NixOS checks need real nixpkgs
{ lib }:
let
  fakeDrv =
    name: extra:
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
    }
    // extra;
  pkgsFor =
    system:
    let
      pkgs = {
        inherit lib;
        stdenv = {
          hostPlatform = {
            inherit system;
          };
          buildPlatform = {
            inherit system;
            canExecute = p: p.system == system;
          };
        };
        callPackage =
          fn: overrides:
          let
            f = if builtins.isFunction fn then fn else import fn;
          in
          f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // overrides);
        rustPlatform = {
          buildRustPackage =
            args:
            fakeDrv "${args.pname}-${args.version}" {
              inherit (args) cargoLock env doCheck nativeBuildInputs postInstall meta src;
              inherit (args) pname version;
            };
          rustLibSrc = fakeDrv "rust-lib-src" { };
        };
        writeShellApplication =
          args:
          fakeDrv args.name {
            inherit (args) text runtimeInputs;
          };
        writeShellScriptBin = name: text: fakeDrv name { inherit text; };
        writeText = name: text: builtins.toFile name text;
        mkShell = args: fakeDrv "nix-shell" args;
        runCommand = name: env: script: fakeDrv name { inherit env script; };
      }
      // lib.genAttrs [
        "protobuf"
        "installShellFiles"
        "coreutils"
        "jq"
        "util-linux"
        "cargo"
        "rustc"
        "clippy"
        "rustfmt"
        "rust-analyzer"
        "nix"
        "containerd"
        "skopeo"
        "umoci"
        "kubernetes-helm"
        "kustomize"
        "kubectl"
        "distribution"
        "zstd"
        "apacheHttpd"
        "shellcheck"
      ] (name: fakeDrv name { });
    in
    pkgs;
in
{
  inherit lib;
  legacyPackages = lib.genAttrs [
    "x86_64-linux"
    "aarch64-linux"
  ] pkgsFor;
}
