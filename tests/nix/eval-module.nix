# Evaluates nix/module.nix with nixpkgs' lib.evalModules and the stubs beside this
# file, and returns what tests/it/flake.rs checks, as JSON-printable values:
#
#   nix-instantiate --eval --strict --json tests/nix/eval-module.nix \
#     --arg lib 'import /path/to/nixpkgs.lib/lib' \
#     --arg config '{ services.gapbundle.enable = true; ... }'
{
  lib,
  config ? { },
  pkgsHasGapbundle ? true,
  # The module under test: nix/module.nix, or the flake's nixosModules.default.
  module ? ../../nix/module.nix,
}:
let
  evaluated = lib.evalModules {
    modules = [
      (import ./stubs.nix { inherit pkgsHasGapbundle; })
      module
      { inherit config; }
    ];
  };
  c = evaluated.config;
  service = c.systemd.services.gapbundle-inbox or null;
in
{
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  serviceNames = builtins.attrNames c.systemd.services;
  pathNames = builtins.attrNames c.systemd.paths;
  tmpfiles = c.systemd.tmpfiles.rules;
  systemPackages = map (p: p.name) c.environment.systemPackages;
  pathUnit = c.systemd.paths.gapbundle-inbox or null;
  service =
    if service == null then
      null
    else
      {
        inherit (service)
          after
          wants
          serviceConfig
          description
          restartIfChanged
          ;
        path = map (p: p.name) service.path;
      };
  # The inbox script the service runs: its runtime inputs and its text.
  script =
    if service == null || !(c.services.gapbundle.enable) then
      null
    else
      let
        # Re-create what the module built, to read the stub's recorded arguments.
        s = import ../../nix/inbox.nix {
          inherit lib;
          inherit (evaluated._module.args.pkgs)
            writeShellApplication
            coreutils
            jq
            util-linux
            ;
          gapbundle = c.services.gapbundle.package;
        };
      in
      {
        inherit (s) text;
        runtimeInputs = map (p: if p == null then null else p.name) s.runtimeInputs;
      };
}
